"""`amocrm-reconcile`: the cron that heals lost webhooks (default every 10 minutes).

Two steps, both on the `reconcile` lane of the amoCRM budget (AMOCRM_BUDGET_RECONCILE):
- `check-webhook`: is our subscription in amoCRM there and enabled? A warning in the log and
  the run output when not, and with AMOCRM_WEBHOOK_AUTOREPAIR=1 it subscribes again
  (`prometei.amocrm.subscriptions`). Skipped without a public URL or webhook secret.
- `sync-changed-leads`: `prometei.sync.reconcile` (leads updated since the stored cursor, in
  trigger stages, sent as `amocrm/lead.sync`).

AMOCRM_RECONCILE_CRON sets the schedule (`off`: the function is not served at all). Runs never
overlap (concurrency 1), so the lane's in-process limiter is its whole share.
"""

from __future__ import annotations

import logging
from typing import Any

import inngest

from prometei.config import Settings
from prometei.functions.boundary import run_step
from prometei.functions.client import definitions
from prometei.logs import log_context
from prometei.services import get_services

FN_ID = "amocrm-reconcile"
log = logging.getLogger(__name__)


def check_webhook() -> dict[str, Any]:
    """Step body: our subscription's health, repaired when AMOCRM_WEBHOOK_AUTOREPAIR is on."""
    from prometei.amocrm import subscriptions

    services = get_services()
    settings = services.settings
    api = subscriptions.WebhooksAPI(services.amocrm_housekeeping)
    health = subscriptions.check(settings, api)
    if health.delivers or health.state == "not_configured":
        # `temporary` (a switch-over in progress) is the operator's to finish, not ours.
        return health.as_output()
    log.warning("amoCRM webhook: %s; fix: %s", health.detail, health.fix)
    if settings.amocrm_webhook_autorepair and health.state != "unknown":
        repaired = subscriptions.repair(settings, api)
        level = logging.INFO if repaired.ok else logging.WARNING
        log.log(level, "amoCRM webhook after repair: %s", repaired.detail)
        return {**repaired.as_output(), "before": health.state}
    return health.as_output()


def sync_changed_leads() -> dict[str, Any]:
    """Step body: one reconcile pass (see `prometei.sync.reconcile`)."""
    from prometei.sync.reconcile import reconcile_leads

    services = get_services()
    return reconcile_leads(
        services.amocrm_housekeeping,
        services.state,
        services.events.send,
        services.settings.amocrm_trigger_statuses,
    )


def amocrm_reconcile(ctx: inngest.ContextSync) -> dict[str, Any]:
    with log_context(run_id=ctx.run_id, fn_id=FN_ID):
        webhook = run_step(ctx, "check-webhook", check_webhook)
        synced = run_step(ctx, "sync-changed-leads", sync_changed_leads)
        ctx.logger.info(
            "amoCRM reconcile: %s lead(s) listed, %s sent, %s filtered; webhook %s",
            synced.get("listed"),
            synced.get("sent"),
            synced.get("filtered"),
            webhook.get("state"),
        )
        return {"status": "done", "webhook": webhook, **synced}


def build(settings: Settings) -> inngest.Function[Any] | None:
    """The function on AMOCRM_RECONCILE_CRON's schedule, or None when it is `off`."""
    schedule = settings.reconcile_schedule
    if schedule is None:
        return None
    return definitions.create_function(
        fn_id=FN_ID,
        name="amoCRM reconcile (lost webhooks)",
        trigger=inngest.TriggerCron(cron=schedule),
        # One at a time: the cursor has one writer, and the lane's limiter one process.
        concurrency=[inngest.Concurrency(limit=1)],
        retries=3,
    )(amocrm_reconcile)
