"""`create-erp-task`: one deal event -> one Rukovoditel record.

Triggered by `crm/create-deal` and `erp/task.create` (same data, see `prometei.deals`), sent by
other internal systems, by `python -m prometei deals send`, and by `batch-create-crm-deals`
(one event per deal of a batch). Invalid data fails the run at once (NonRetriableError naming
every problem); valid data is written by one step, `write-erp-record`.

No duplicates: a repeated event id is dropped by Inngest (24 h); a retried step after an
insert whose answer was lost would insert again, unless the deal has an `externalId` and
ERP_LEAD_ID_FIELD is set: then the step looks the record up first and updates it.

Throughput: at most ERP_CONCURRENCY (default 4) runs write at once, function-wide, so a
1000-deal batch queues in Inngest instead of flooding Rukovoditel. Rukovoditel is one PHP/MySQL
server and every insert also runs its side effects (e-mail rules, processes, notifications);
four parallel writes keep it responsive for its own users.
"""

from __future__ import annotations

from typing import Any

import inngest

from prometei.config import Settings
from prometei.deals import (
    CREATE_DEAL_EVENT,
    TASK_CREATE_EVENT,
    DealPayload,
    DealValidationError,
    deal_items,
    derived_external_id,
    entity_of,
    parse_deal,
)
from prometei.functions.boundary import run_step
from prometei.functions.client import definitions
from prometei.logs import log_context
from prometei.services import get_services

FN_ID = "create-erp-task"
STEP_ID = "write-erp-record"
# Copied from the event into the run's output: where the deal came from.
ORIGIN_KEYS = ("externalId", "batchId", "batchIndex")


def write_deal(deal_data: dict[str, Any]) -> dict[str, Any]:
    """Step body: upsert by externalId when ERP_LEAD_ID_FIELD is set, else insert."""
    services = get_services()
    settings = services.settings
    deal = DealPayload.model_validate(deal_data)
    lookup = settings.erp_lead_id_field if deal.external_id else None
    result = services.erp.upsert(
        entity_id=entity_of(deal, settings),
        items=deal_items(deal, settings),
        lookup_field_id=lookup,
        lookup_value=deal.external_id if lookup else None,
    )
    return result.as_output()


def create_erp_task(ctx: inngest.ContextSync) -> dict[str, Any]:
    """The handler (module-level so tests can drive it with `inngest.experimental.mocked`)."""
    settings = get_services().settings
    try:
        deal = parse_deal(ctx.event.data, settings=settings)
    except DealValidationError as exc:
        raise inngest.NonRetriableError(exc.message) from None

    data = deal.to_data()
    if "externalId" not in data and ctx.event.id:
        # No externalId from the sender: derive one from the event id, so that with
        # ERP_LEAD_ID_FIELD a retry after a lost insert answer updates instead of inserting.
        data["externalId"] = derived_external_id(ctx.event.id, 0)
    with log_context(event_id=ctx.event.id, run_id=ctx.run_id, fn_id=FN_ID):
        written = run_step(ctx, STEP_ID, write_deal, data)
        ctx.logger.info(
            "deal %r %s as ERP record %s",
            deal.deal_name,
            written.get("action"),
            written.get("record_id"),
        )
    origin: dict[str, Any] = {k: data[k] for k in ORIGIN_KEYS if k in data}
    return {"status": "done", "dealName": deal.deal_name, **written, **origin}


def build(settings: Settings) -> inngest.Function[Any]:
    """The function with its configurable options (ERP_CONCURRENCY)."""
    return definitions.create_function(
        fn_id=FN_ID,
        name="Deal event -> ERP record",
        trigger=[
            inngest.TriggerEvent(event=CREATE_DEAL_EVENT),
            inngest.TriggerEvent(event=TASK_CREATE_EVENT),
        ],
        # Function-wide: at most this many ERP writes from deal events at any moment.
        concurrency=[inngest.Concurrency(limit=settings.erp_concurrency)],
        retries=5,
    )(create_erp_task)
