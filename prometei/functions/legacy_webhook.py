"""The TypeScript version's `amocrm/webhook` events: new ones, and its runs still in flight.

`amocrm-legacy-webhook` (triggered by `amocrm/webhook`, which the old intake, its test scripts
and an Inngest-hosted webhook send) turns the event into the `amocrm/lead.<action>` events the
intake would have sent for the same webhook, with the same deterministic ids, and sends them in
one step (`send-lead-events`). A lead arriving by an old and a new path at once therefore starts
one `amocrm-webhook-handler` run: Inngest drops the repeated id. Translating instead of letting
the handler take `amocrm/webhook` itself keeps one event shape, one place for the trigger
filter and account check, and that dedupe across paths. An unreadable event fails at once
(non-retriable) with a message naming what is missing; nothing is dropped silently.

`finish_old_layout_run(ctx)`: Inngest resumes runs the old `amocrm-webhook-handler` started
(steps parse-webhook, authenticate-amocrm / get-amocrm-token, fetch-lead-data, create-erp-task)
against this code, and both SDKs name a step by the sha1 of its id, so the old memos arrive
under our step names (`prometei.functions.previous_runs` reads them). The run never reads the
old outputs beyond telling whether the old write happened (the token step's output holds a token
in clear: it is never touched), then ends as:

- the old create-erp-task finished with a Rukovoditel success: `done_by_previous_version`, the
  record id, nothing written again;
- the old layout never reached its write (or the ERP refused it): the webhook is dispatched as
  lead events, exactly as `amocrm-legacy-webhook` does, and the new handler writes the record;
- the old write may have created a record that cannot be recognised (it failed after starting,
  or answered something unknown): a non-retriable failure naming the lead to check and replay.
  Old inserts carry no lead id, so an update-or-insert could not find them: a second attempt
  would risk a second record.
"""

from __future__ import annotations

from typing import Any

import inngest

from prometei.amocrm.legacy import LEGACY_EVENT, parse_legacy_event
from prometei.amocrm.webhook import account_problem
from prometei.errors import InputError, PrometeiError
from prometei.events import Event, LeadEventBatch, build_lead_events
from prometei.functions.boundary import run_step, skipped
from prometei.functions.client import definitions
from prometei.functions.previous_runs import claim, is_claim, previous_write
from prometei.logs import log_context
from prometei.services import get_services

FN_ID = "amocrm-legacy-webhook"
SEND_STEP = "send-lead-events"
# The old layout's step ids, reused on purpose: asking for them is how the old memos are read.
OLD_FETCH_STEP = "fetch-lead-data"
OLD_WRITE_STEP = "create-erp-task"


# ---- new events -----------------------------------------------------------------------------


def lead_events_of(event: inngest.Event) -> LeadEventBatch:
    """The lead events an `amocrm/webhook` event stands for, built as the intake builds them.

    Raises NonRetriableError when the event is unreadable or from another account.
    """
    settings = get_services().settings
    try:
        webhook = parse_legacy_event(event.data)
        problem = account_problem(
            webhook.payload.account,
            subdomain=settings.require_subdomain(),
            account_id=settings.amocrm_account_id,
        )
        if problem is not None:
            raise InputError(problem)
    except PrometeiError as exc:
        raise inngest.NonRetriableError(
            f"{LEGACY_EVENT} event {event.id or '(no id)'}: {exc.message}"
        ) from None
    return build_lead_events(webhook.payload, trigger_statuses=settings.amocrm_trigger_statuses)


def send_lead_events(events: list[Event]) -> dict[str, Any]:
    """Step body: hand the lead events to Inngest. A retry sends the same ids; Inngest drops
    the ones it has already seen."""
    get_services().events.send(events)
    return {"sent": len(events), "event_ids": [event["id"] for event in events]}


def dispatch(ctx: inngest.ContextSync, batch: LeadEventBatch) -> dict[str, Any]:
    """Send the batch in one step; the output names the events to look the runs up by."""
    if not batch.events:
        return skipped(
            "no lead item to sync: every item is outside AMOCRM_TRIGGER_STATUSES or not a lead",
            ignored=batch.ignored,
        )
    run_step(ctx, SEND_STEP, send_lead_events, batch.events)
    return {
        "status": "dispatched",
        "event_ids": [event["id"] for event in batch.events],
        "lead_ids": [event["data"]["lead_id"] for event in batch.events],
        "ignored": batch.ignored,
    }


@definitions.create_function(
    fn_id=FN_ID,
    name="Old amocrm/webhook event -> lead events",
    trigger=inngest.TriggerEvent(event=LEGACY_EVENT),
    retries=5,
)
def amocrm_legacy_webhook(ctx: inngest.ContextSync) -> dict[str, Any]:
    with log_context(event_id=ctx.event.id, run_id=ctx.run_id, fn_id=FN_ID):
        return dispatch(ctx, lead_events_of(ctx.event))


# ---- runs of the old layout, resumed by this code -------------------------------------------


def finish_old_layout_run(ctx: inngest.ContextSync) -> dict[str, Any]:
    """End a run the TypeScript version started: see the module docstring for the outcomes."""
    with log_context(event_id=ctx.event.id, run_id=ctx.run_id, fn_id="amocrm-webhook-handler"):
        # Read first, so a call the executor targets at either old step finds it.
        try:
            old_fetch_done = not is_claim(claim(ctx, OLD_FETCH_STEP))
        except inngest.StepError:
            old_fetch_done = False  # the old fetch failed for good: its write never started
        record_id = previous_write(
            ctx, OLD_WRITE_STEP, may_have_started=old_fetch_done, check=_check(ctx.event)
        )
        if record_id is not None:
            return {
                "status": "done_by_previous_version",
                "reason": "the previous version had already written the ERP record",
                "record_id": record_id,
                "lead_ids": _lead_ids(ctx.event),
            }
        ctx.logger.info("resuming a run of the previous version: dispatching its lead events")
        return {**dispatch(ctx, lead_events_of(ctx.event)), "previous_version_run": True}


def _lead_ids(event: inngest.Event) -> list[int]:
    try:
        return [item.id for item in parse_legacy_event(event.data).payload.leads]
    except InputError:
        return []


def _check(event: inngest.Event) -> str:
    leads = ", ".join(str(lead_id) for lead_id in _lead_ids(event)) or "<lead id>"
    return (
        f"check the ERP for lead {leads}; if it has no record, run "
        f"python -m prometei replay {leads.replace(', ', ' ')}"
    )
