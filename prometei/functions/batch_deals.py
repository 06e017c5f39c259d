"""`batch-create-crm-deals`: `{deals: [...]}` -> one `crm/create-deal` event per deal.

The old batch wrote every deal inside one step, so one failing deal retried the whole batch
and duplicated the deals that had already been written. Here the batch only *dispatches*:

1. validate the list (1-1000 items). A bad container fails the run at once; bad items are
   reported in the output and the valid ones still go ahead (all invalid: the run fails);
2. send one `crm/create-deal` event per valid deal, in steps of at most 100 events
   (`send-deals-1`, `send-deals-2`, ...), each event with the id `<batch event id>-<index>`
   and an `externalId` (the deal's own, else the same `<batch event id>-<index>`).

Every deal is then its own `create-erp-task` run with its own retries: a deal that fails is
retried alone. Duplicates are kept out three ways: a retried send step re-sends the same ids
and Inngest drops them (24 h event-id dedupe); a second delivery of the same batch event (same
id) is dropped by Inngest before it starts a run, and a re-run of it (dashboard "rerun",
replay) sends the same ids again, which are dropped; and with ERP_LEAD_ID_FIELD set, the
externalId makes a deal's write an update if its record already exists, even after 24 h.

No `idempotency=` option: Inngest already ignores a repeated event id for 24 h, so
`idempotency="event.id"` would add nothing, and the fan-out ids above make a repeated run
harmless anyway; keying on the content instead would wrongly swallow a deliberate second
batch with the same deals.

The output lists, per deal, `queued` with the event id to look its run up by in the Inngest
dashboard, or `invalid` with the problems, plus totals.
"""

from __future__ import annotations

from typing import Any

import inngest

from prometei.config import Settings
from prometei.deals.events import BATCH_EVENT, chunk_events, fanout_events
from prometei.deals.payload import DealValidationError
from prometei.deals.validation import parse_batch
from prometei.functions.boundary import run_step
from prometei.functions.client import definitions
from prometei.logs import log_context
from prometei.services import get_services

FN_ID = "batch-create-crm-deals"
MAX_PROBLEMS_IN_ERROR = 20


def send_chunk(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Step body: post one chunk of fan-out events (the same ids on every retry)."""
    ids = get_services().events.send(events)
    indices = [event["data"]["batchIndex"] for event in events]
    return {"sent": len(ids), "first_index": indices[0], "last_index": indices[-1]}


def _all_invalid(problems: list[str]) -> inngest.NonRetriableError:
    shown = problems[:MAX_PROBLEMS_IN_ERROR]
    more = len(problems) - len(shown)
    tail = f"; and {more} more" if more > 0 else ""
    return inngest.NonRetriableError("no valid deal in the batch: " + "; ".join(shown) + tail)


def batch_create_crm_deals(ctx: inngest.ContextSync) -> dict[str, Any]:
    """The handler (module-level so tests can drive it with `inngest.experimental.mocked`)."""
    settings = get_services().settings
    batch_id = ctx.event.id or ctx.run_id
    try:
        check = parse_batch(ctx.event.data, settings=settings)
    except DealValidationError as exc:
        raise inngest.NonRetriableError(exc.message) from None
    if not check.valid:
        raise _all_invalid(check.problems)

    events = fanout_events(batch_id, check.valid)
    sent = 0
    with log_context(event_id=ctx.event.id, run_id=ctx.run_id, fn_id=FN_ID):
        for number, chunk in enumerate(chunk_events(events), start=1):
            result = run_step(ctx, f"send-deals-{number}", send_chunk, chunk)
            sent += int(result["sent"])
        ctx.logger.info(
            "batch %s: %d deals queued, %d invalid", batch_id, len(events), len(check.invalid)
        )

    report: list[dict[str, Any]] = [
        {
            "index": event["data"]["batchIndex"],
            "status": "queued",
            "eventId": event["id"],
            "externalId": event["data"]["externalId"],
            "dealName": event["data"]["dealName"],
        }
        for event in events
    ]
    report += [
        {"index": index, "status": "invalid", "problems": problems}
        for index, problems in check.invalid
    ]
    report.sort(key=lambda row: int(row["index"]))
    return {
        "status": "dispatched" if not check.invalid else "dispatched_with_invalid",
        "batchId": batch_id,
        "totals": {
            "deals": check.total,
            "queued": len(events),
            "invalid": len(check.invalid),
            "events_sent": sent,
        },
        "deals": report,
        "results": (
            "each queued deal is written by its own create-erp-task run; find it in the "
            "Inngest dashboard by its eventId (<batchId>-<index>)"
        ),
    }


def build(settings: Settings) -> inngest.Function[Any]:
    """The function; nothing in it depends on settings today, the factory keeps the pattern."""
    del settings
    return definitions.create_function(
        fn_id=FN_ID,
        name="Batch of deals -> one create-deal event each",
        trigger=inngest.TriggerEvent(event=BATCH_EVENT),
        retries=5,
    )(batch_create_crm_deals)
