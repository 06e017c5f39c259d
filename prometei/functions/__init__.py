"""Inngest functions (one module each) and the list every serve endpoint registers.

Function modules whose options depend on configuration (e.g. the ERP write concurrency) expose
a `build(settings)` factory; `all_functions(settings)` assembles the list at serve time.
"""

from __future__ import annotations

from typing import Any

import inngest

from prometei.config import Settings


def all_functions(settings: Settings) -> list[inngest.Function[Any]]:
    from prometei.functions import batch_deals, create_deal, lead_sync, reconcile
    from prometei.functions.keepalive import amocrm_token_keepalive
    from prometei.functions.legacy_webhook import amocrm_legacy_webhook

    functions = [
        lead_sync.build(settings),
        amocrm_token_keepalive,
        create_deal.build(settings),
        batch_deals.build(settings),
        amocrm_legacy_webhook,
    ]
    reconciler = reconcile.build(settings)  # None when AMOCRM_RECONCILE_CRON=off
    if reconciler is not None:
        functions.append(reconciler)
    return functions
