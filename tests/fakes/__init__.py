"""Fakes of the outside systems, shared by every test tier.

Each fake keeps its state and its rules in one transport-free model, so the unit tier can plug it
into `responses` and the integration/e2e tiers can serve the same model over real HTTP on
loopback. They follow `reference/` (amocrm.md, rukovoditel-live.md): where a fake and the
reference disagree, the reference wins.
"""
