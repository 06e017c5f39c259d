"""Operator health checks: is every part of the pipeline configured and reachable?

Each check is a plain function returning `Check(name, ok, detail, fix)` (or a list of them),
so the CLI (`python -m prometei doctor`) and tests can run them one by one. One module per
system, in the order `run_checks()` (`runner`) emits their rows:

    environment   every variable well-formed; the required ones present; a WARN row each for
                  a plain http:// CRM_API_URL (`erp`), AMOCRM_WEBHOOK_ALLOW_LEGACY_URL on
                  (`webhook`) and AMOCRM_API_BASE_URL set (`amocrm`)
    kv            Vercel KV answers PING and accepts a write with the configured token
    amocrm        the access token is accepted by the configured account (GET /api/v4/account)
    amocrm write-back, amocrm erp id field
                  with write-back on: the token's user may edit leads, AMOCRM_ERP_ID_FIELD is a
                  lead field that holds the id (`amocrm_writeback`)
    webhook subscription
                  amoCRM's webhooks API lists ours (PUBLIC_URL + /api/webhook?token=), enabled
                  and subscribed to lead status changes (`amocrm`)
    erp           Rukovoditel accepts the API key, username and password (`login` action)
    erp entity, erp field map, erp one record
                  the entity exists; ERP_FIELD_MAP's fields exist, are writable and fit their
                  sources (amoCRM's custom field types and stage names included: missing
                  dropdown choices fail), required fields are filled; ERP_LEAD_ID_FIELD is a
                  text field, or where lead -> record ids are remembered (`erp_schema`,
                  `erp_field_map`, `erp_sources`)
    inngest dev server
                  dev mode only: the dev server answers where INNGEST_DEV points (`inngest`)
    inngest       event and signing keys present (cloud mode) and of the right form, and the
                  serve origin syncs register (INNGEST_SERVE_ORIGIN, else Vercel's URL)
    webhook secret
                  AMOCRM_WEBHOOK_SECRET is set (and usable in a URL) (`webhook`)

No check ever puts a secret into `detail` or `fix`: secrets are described by presence and
length only. The modules here import from `prometei.amocrm`, `prometei.erp` and the rest;
nothing outside the CLI imports this package.
"""

from prometei.doctor.amocrm import check_amocrm, check_webhook_subscription
from prometei.doctor.amocrm_writeback import check_amocrm_writeback
from prometei.doctor.check import Check
from prometei.doctor.environment import check_environment
from prometei.doctor.erp import check_erp
from prometei.doctor.erp_schema import check_erp_schema
from prometei.doctor.inngest import check_dev_server, check_inngest
from prometei.doctor.kv import check_kv
from prometei.doctor.runner import run_checks
from prometei.doctor.webhook import check_webhook_secret

__all__ = [
    "Check",
    "check_amocrm",
    "check_amocrm_writeback",
    "check_dev_server",
    "check_environment",
    "check_erp",
    "check_erp_schema",
    "check_inngest",
    "check_kv",
    "check_webhook_secret",
    "check_webhook_subscription",
    "run_checks",
]
