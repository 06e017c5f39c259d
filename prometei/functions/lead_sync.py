"""`amocrm-webhook-handler`: one amoCRM lead -> exactly one Rukovoditel record.

Triggered by `amocrm/lead.status` (the intake, one event per lead item) and `amocrm/lead.sync`
(replays and backfills). Two steps, each memoised by Inngest so a retry resumes where it failed:
`fetch-lead-data` reads the lead fresh from amoCRM (the webhook is only a notification), and
`create-erp-task` writes the ERP record. Duplicates are kept out by the event id (intake),
concurrency 1 per lead, and either the ERP lookup by lead id (ERP_LEAD_ID_FIELD) or the
lead -> record id memory in the state store (`prometei.erp.records`).
Runs the TypeScript version started under this id (event `amocrm/webhook`) are finished by
`prometei.functions.legacy_webhook.finish_old_layout_run`.

Write-back (AMOCRM_SYNC_NOTE, AMOCRM_ERP_ID_FIELD; `prometei.functions.lead_writeback`) adds
the steps `write-erp-id` and `add-sync-note` when they are due; AMOCRM_FAILURE_NOTE is the
`on_failure` handler `prometei.functions.lead_failure` (`amocrm-webhook-handler-failure`).

`fetch-lead-data` reads only what ERP_FIELD_MAP needs: the lead, plus the main contact and the
company when the map names `contact_*` / `company_name` (one request each), and stage names
from a cached copy of the pipelines.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import inngest

from prometei.amocrm.legacy import LEGACY_EVENT
from prometei.amocrm.models import LeadSnapshot, origins_needed
from prometei.amocrm.writeback import writeback_requests_per_run
from prometei.config import Settings
from prometei.errors import InputError
from prometei.events import SYNC_EVENT
from prometei.functions.boundary import run_step, skipped
from prometei.functions.client import definitions
from prometei.functions.lead_failure import lead_sync_failed
from prometei.functions.lead_writeback import run_writebacks, write_remembered
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
    from prometei.amocrm.enrich import enrich

    services = get_services()
    lead = services.amocrm.get_lead(lead_id)
    if lead is None:
        return None
    needs = origins_needed(services.settings.erp_field_map)
    if needs and not lead.is_deleted:
        names = services.pipelines if "pipelines" in needs else None
        lead = enrich(lead, needs, services.amocrm, names)
    return lead.model_dump(mode="json")


def write_erp_record(lead_data: dict[str, Any]) -> dict[str, Any]:
    from prometei.erp.mapping import lead_values
    from prometei.erp.records import RecordIdentity

    services = get_services()
    settings = services.settings
    lead = LeadSnapshot.model_validate(lead_data)
    result = services.erp_records.write(
        settings.erp_entity_id,
        lead_values(lead, settings.erp_field_map),
        RecordIdentity("lead", str(lead.id), settings.erp_lead_id_field),
        what=f"lead {lead.id}",
    )
    return result.as_output()


def runs_per_second(settings: Settings) -> int:
    """amoCRM allows 7 requests/s per integration across all our instances (more gets 429s,
    then a 403 block of the account); the handler's runs get AMOCRM_BUDGET_RUNS of them
    (`prometei.amocrm.budget`). A run makes one request for the lead, plus one for the
    main contact and one for the company when ERP_FIELD_MAP asks for them (pipeline names
    come from a cache), plus one per write-back that is on (a note, the record id field; due
    on a created or changed record): a run of two requests counts as two."""
    from prometei.amocrm.budget import runs_per_second as budgeted

    needs = origins_needed(settings.erp_field_map)
    requests_per_run = 1 + len(needs & {"contact", "company"})
    requests_per_run += writeback_requests_per_run(settings)
    return budgeted(settings, requests_per_run)


def amocrm_webhook_handler(ctx: inngest.ContextSync) -> dict[str, Any]:
    """The handler (module-level so tests can drive it; `build` declares the function)."""
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
        settings = get_services().settings
        if event.name == STATUS_EVENT and not lead.matches(settings.amocrm_trigger_statuses):
            # The webhook said "moved to a trigger stage", but by now the lead is elsewhere.
            return skipped(
                "lead is no longer in a trigger stage",
                lead_id=lead_id,
                pipeline_id=lead.pipeline_id,
                status_id=lead.status_id,
            )

        if settings.writes_back:
            # `force` (replay): write the ERP even when the mapped values did not change.
            force = event.name == SYNC_EVENT and event.data.get("force") is True
            written = run_step(ctx, "create-erp-task", write_remembered, lead_data, force)
        else:
            written = run_step(ctx, "create-erp-task", write_erp_record, lead_data)
        ctx.logger.info("lead %s synced to ERP record %s", lead_id, written.get("record_id"))
        return run_writebacks(ctx, {"status": "synced", "lead_id": lead_id, **written})


def build(settings: Settings) -> inngest.Function[Any]:
    """The function with its configurable options (the throttle follows ERP_FIELD_MAP)."""
    return definitions.create_function(
        fn_id=FN_ID,
        name="amoCRM lead -> ERP record",
        trigger=[
            inngest.TriggerEvent(event=STATUS_EVENT),
            inngest.TriggerEvent(event=SYNC_EVENT),
        ],
        # One step per lead at a time (runs of a lead may interleave between steps): the ERP
        # lookup-then-write inside `create-erp-task` is not transactional.
        concurrency=[inngest.Concurrency(limit=1, key="event.data.lead_id")],
        # Starts at most the budget's runs per second, across every instance (burst 1: no
        # extra runs at once); each instance's limiter keeps the requests themselves exact.
        throttle=inngest.Throttle(
            limit=runs_per_second(settings), period=timedelta(seconds=1), burst=1
        ),
        retries=5,
        # Registered only when on: otherwise every failed run would cost one more invocation.
        on_failure=lead_sync_failed if settings.amocrm_failure_note else None,
    )(amocrm_webhook_handler)
