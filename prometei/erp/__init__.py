"""Rukovoditel ERP: the REST client (`prometei.erp.client`) and the lead mapping
(`prometei.erp.mapping`).

Nothing is imported here on purpose: `mapping` must stay importable without pulling in
`requests` and the client, so entrypoints pay only for what they use.
"""
