"""`create-erp-task`: one deal event -> one Rukovoditel record.

Triggered by `crm/create-deal` and `erp/task.create` (same data, see `prometei.deals`), sent by
other internal systems, by `python -m prometei deals send`, and by `batch-create-crm-deals`
(one event per deal of a batch). Invalid data fails the run at once (NonRetriableError naming
every problem); valid data is written by one step, `write-erp-record`. Runs the TypeScript
version started under this id (old steps `validate-input`, `create-erp-task`) are recognised
and finished by `prometei.functions.legacy_deal`: an `erp/task.create` event in the old shape
(only dealName, entityId, amount) costs one step more, for that check.

No duplicates: a repeated event id is dropped by Inngest (24 h), and the deal's `externalId`
(the sender's, else one derived from the event id) identifies its record: with
ERP_LEAD_ID_FIELD the step looks the record up first (even a retry after a lost insert answer
updates); without it the state store remembers the sender's externalId -> record id, so a
resend updates (derived ids are guarded by their event id only).

`entityId` other than ERP_ENTITY_ID: the name goes to that entity's heading field, `fields`
must be fields of that entity, an amount must be given in `fields` (ERP_FIELD_MAP's fields
belong to ERP_ENTITY_ID), and ERP_LEAD_ID_FIELD does not apply (the record memory does).

Throughput: at most ERP_CONCURRENCY (default 4) runs write at once, function-wide, so a
1000-deal batch queues in Inngest instead of flooding Rukovoditel. Rukovoditel is one PHP/MySQL
server and every insert also runs its side effects (e-mail rules, processes, notifications);
four parallel writes keep it responsive for its own users.
"""

from __future__ import annotations

from typing import Any

import inngest

from prometei.config import Settings
from prometei.deals.events import CREATE_DEAL_EVENT, TASK_CREATE_EVENT, derived_external_id
from prometei.deals.payload import DealPayload, DealValidationError
from prometei.deals.record import deal_values, entity_of, erp_fields
from prometei.deals.validation import parse_deal
from prometei.errors import InputError
from prometei.functions.boundary import run_step
from prometei.functions.client import definitions
from prometei.functions.legacy_deal import (
    may_be_previous_version_run,
    previous_version_output,
    started_by_previous_version,
)
from prometei.logs import log_context
from prometei.services import get_services

FN_ID = "create-erp-task"
STEP_ID = "write-erp-record"
# Copied from the event into the run's output: where the deal came from.
ORIGIN_KEYS = ("externalId", "batchId", "batchIndex")


def write_deal(deal_data: dict[str, Any], remember: bool = True) -> dict[str, Any]:
    """Step body: one record per externalId (lookup field, or the record memory when
    `remember`: the sender gave the externalId), else insert."""
    from prometei.erp.records import RecordIdentity

    services = get_services()
    settings = services.settings
    deal = DealPayload.model_validate(deal_data)
    entity_id = entity_of(deal, settings)
    if entity_id == settings.erp_entity_id:
        name_field, price_field = erp_fields(settings)
        lookup = settings.erp_lead_id_field
    else:
        # ERP_FIELD_MAP and ERP_LEAD_ID_FIELD are ids of ERP_ENTITY_ID's fields; field ids
        # mean nothing in another entity (rukovoditel-live.md T12).
        name_field, price_field, lookup = heading_of(entity_id), None, None
    try:
        values = deal_values(
            deal, name_field=name_field, price_field=price_field, entity_id=entity_id
        )
    except DealValidationError as exc:
        raise InputError(exc.message) from None
    identity = (
        RecordIdentity("deal", deal.external_id, lookup)
        if deal.external_id and (lookup is not None or remember)
        else None
    )
    result = services.erp_records.write(
        entity_id, values, identity, what=f"deal {deal.deal_name!r}"
    )
    return result.as_output()


def heading_of(entity_id: int) -> str:
    """The write key of an entity's heading field (where a deal's name goes)."""
    schema = get_services().erp_schemas.get(entity_id)
    heading = schema.heading() if schema is not None else None
    if heading is None:
        fix = (
            "the ERP cannot describe its entities (Rukovoditel Extension before 3.4); send "
            "the deal without entityId (it then goes to ERP_ENTITY_ID)"
            if schema is None
            else "the entity has no heading field; mark one in Rukovoditel's field settings"
        )
        raise InputError(f"entityId {entity_id}: cannot tell which field takes dealName: {fix}")
    return heading.key


def create_erp_task(ctx: inngest.ContextSync) -> dict[str, Any]:
    """The handler (module-level so tests can drive it with `inngest.experimental.mocked`)."""
    settings = get_services().settings
    # A run the TypeScript version started under this id, resumed by this code (legacy_deal).
    previous_run = may_be_previous_version_run(ctx.event) and started_by_previous_version(ctx)
    if previous_run and (done := previous_version_output(ctx)) is not None:
        return done
    try:
        deal = parse_deal(ctx.event.data, settings=settings)
    except DealValidationError as exc:
        raise inngest.NonRetriableError(exc.message) from None

    data = deal.to_data()
    own_id = deal.external_id is not None and not _derived(deal)
    if "externalId" not in data and ctx.event.id:
        # No externalId from the sender: derive one from the event id, so that with
        # ERP_LEAD_ID_FIELD a retry after a lost insert answer updates instead of inserting.
        data["externalId"] = derived_external_id(ctx.event.id, 0)
    with log_context(event_id=ctx.event.id, run_id=ctx.run_id, fn_id=FN_ID):
        # A derived id is not remembered in the state store: its event id already guards it,
        # and a key per deal of every batch would only fill the store.
        written = run_step(ctx, STEP_ID, write_deal, data, own_id)
        ctx.logger.info(
            "deal %r %s as ERP record %s",
            deal.deal_name,
            written.get("action"),
            written.get("record_id"),
        )
    origin: dict[str, Any] = {k: data[k] for k in ORIGIN_KEYS if k in data}
    if previous_run:
        origin["previous_version_run"] = True
    return {"status": "done", "dealName": deal.deal_name, **written, **origin}


def _derived(deal: DealPayload) -> bool:
    """True for the externalId batch-create-crm-deals gives a deal that had none."""
    if deal.batch_id is None or deal.batch_index is None:
        return False
    return deal.external_id == derived_external_id(deal.batch_id, deal.batch_index)


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
