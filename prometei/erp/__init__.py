"""Rukovoditel ERP, one module per job:

    client    the REST API: one POST per action (`ERPClient`)
    answers   reading its answers: the envelope and every error shape, retryable or not
    schema    an entity's fields and dropdown choices, cached per warm instance
    values    one value converted the way its field type stores it
    plan      the values of one write, checked against the entity before any insert/update
    records   one record per lead or deal externalId (`RecordWriter`): lookup field or memory
    mapping   amoCRM lead -> values (ERP_FIELD_MAP)

Nothing is imported here on purpose: `mapping`, `values` and `plan` stay importable without
pulling in `requests` and the client, so entrypoints pay only for what they use.
"""
