"""`amocrm-webhook-handler`: one amoCRM lead -> exactly one Rukovoditel record.

Triggered by `amocrm/lead.status` (the intake, one event per lead item) and `amocrm/lead.sync`
(replays and backfills). Two steps, each memoised by Inngest so a retry resumes where it failed:
`fetch-lead-data` reads the lead fresh from amoCRM (the webhook is only a notification), and
`create-erp-task` upserts the ERP record. Duplicates are kept out by the event id (intake),
concurrency 1 per lead, and the ERP lookup by lead id when ERP_LEAD_ID_FIELD is set.
Runs the TypeScript version started under this id (event `amocrm/webhook`) are finished by
`prometei.functions.legacy_webhook.finish_old_layout_run`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import inngest

from prometei.amocrm.legacy import LEGACY_EVENT
from prometei.amocrm.models import LeadSnapshot
from prometei.erp.mapping import lead_to_items
from prometei.errors import InputError
from prometei.events import SYNC_EVENT
from prometei.functions.boundary import run_step, skipped
from prometei.functions.client import definitions
from prometei.functions.legacy_webhook import finish_old_layout_run
from prometei.logs import log_context
from prometei.services import get_services

FN_ID = "amocrm-webhook-handler"
STATUS_EVENT = "amocrm/lead.status"


def _lead_id(data: Mapping[str, Any]) -> int:
    raw = data.get("lead_id")
    if isinstance(raw, bool) or raw is None:
        raise InputError('event data has no lead_id; send {"lead_id": <amoCRM lead id>}')
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InputError(f"lead_id {raw!r} is not a number") from None
    if value <= 0:
        raise InputError(f"lead_id {value} must be positive")
    return value


def fetch_lead(lead_id: int) -> dict[str, Any] | None:
    lead = get_services().amocrm.get_lead(lead_id)
    return lead.model_dump(mode="json") if lead is not None else None


def write_erp_record(lead_data: dict[str, Any]) -> dict[str, Any]:
    services = get_services()
    settings = services.settings
    lead = LeadSnapshot.model_validate(lead_data)
    items = lead_to_items(lead, settings.erp_field_map)
    result = services.erp.upsert(
        entity_id=settings.erp_entity_id,
        items=items,
        lookup_field_id=settings.erp_lead_id_field,
        lookup_value=str(lead.id),
    )
    return result.as_output()


@definitions.create_function(
    fn_id=FN_ID,
    name="amoCRM lead -> ERP record",
    trigger=[
        inngest.TriggerEvent(event=STATUS_EVENT),
        inngest.TriggerEvent(event=SYNC_EVENT),
    ],
    # One run per lead at a time: the ERP lookup-then-write is not transactional.
    concurrency=[inngest.Concurrency(limit=1, key="event.data.lead_id")],
    # Each run makes one amoCRM request; amoCRM allows 7/s per integration across all our
    # instances (more gets 429s, then a 403 block of the account), so start at most 5 runs/s.
    throttle=inngest.Throttle(limit=5, period=timedelta(seconds=1), burst=2),
    retries=5,
)
def amocrm_webhook_handler(ctx: inngest.ContextSync) -> dict[str, Any]:
    event = ctx.event
    if event.name == LEGACY_EVENT:
        # A run the TypeScript version started under this function id, resumed by this code.
        return finish_old_layout_run(ctx)
    try:
        lead_id = _lead_id(event.data)
    except InputError as exc:
        raise inngest.NonRetriableError(exc.message) from None

    with log_context(lead_id=lead_id, event_id=event.id, run_id=ctx.run_id, fn_id=FN_ID):
        lead_data = run_step(ctx, "fetch-lead-data", fetch_lead, lead_id)
        if lead_data is None:
            return skipped("lead not found in amoCRM (deleted or no access)", lead_id=lead_id)
        if lead_data.get("is_deleted"):
            return skipped("lead is deleted in amoCRM", lead_id=lead_id)

        lead = LeadSnapshot.model_validate(lead_data)
        if event.name == STATUS_EVENT and not lead.matches(
            get_services().settings.amocrm_trigger_statuses
        ):
            # The webhook said "moved to a trigger stage", but by now the lead is elsewhere.
            return skipped(
                "lead is no longer in a trigger stage",
                lead_id=lead_id,
                pipeline_id=lead.pipeline_id,
                status_id=lead.status_id,
            )

        written = run_step(ctx, "create-erp-task", write_erp_record, lead_data)
        ctx.logger.info("lead %s synced to ERP record %s", lead_id, written.get("record_id"))
        return {"status": "synced", "lead_id": lead_id, **written}
