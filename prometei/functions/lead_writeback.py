"""The write-back part of `amocrm-webhook-handler` (README "What managers see in amoCRM").

With AMOCRM_SYNC_NOTE or AMOCRM_ERP_ID_FIELD on, the `create-erp-task` step runs
`write_remembered`: it compares the mapped values with what was last written for the lead
(`prometei.amocrm.writeback`, the "changed" rule), skips the ERP write when they are the same
(unless the event asks for `force`, as `replay` does), remembers the write, and plans what the
lead is owed. The handler then runs each due write-back as its own step:

    write-erp-id    the record id into AMOCRM_ERP_ID_FIELD (PATCH; only when the lead holds
                    another value)
    add-sync-note   "Запись ERP №N создана/обновлена: <link>" (only for a created or changed
                    record, once)

Separate steps keep a failing write-back from repeating the ERP write, and a retried field
write from repeating a note. A write-back amoCRM refuses for good (rights, a wrong field id),
or one still failing when Inngest's retries are spent, does not fail the run: the ERP record
exists, so the run ends "synced" with the problem in `warnings` (doctor names the fix).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import inngest

from prometei.amocrm.models import LeadSnapshot
from prometei.amocrm.writeback import (
    LastWrite,
    LastWrites,
    field_holds,
    record_link,
    sync_note_text,
    values_digest,
)
from prometei.config import Settings
from prometei.errors import ConfigError, PrometeiError
from prometei.services import Services, get_services

if TYPE_CHECKING:
    from prometei.erp.records import WriteResult

log = logging.getLogger(__name__)

NO_STORE_FOR_NOTES = (
    "AMOCRM_SYNC_NOTE needs a state store to tell a changed record from a repeat: connect KV "
    "(KV_REST_API_URL and KV_REST_API_TOKEN); no note was added"
)


class WritebackRetry(Exception):
    """A transient write-back failure. A plain exception, not Inngest's RetryAfterError, so
    that it stays a step error: retried by Inngest, and caught by the run once spent."""


# ---- create-erp-task, remembered ------------------------------------------------------------
def write_remembered(lead_data: dict[str, Any], force: bool = False) -> dict[str, Any]:
    """The ERP write with write-back on: skipped when the mapped values equal the last written
    ones (and not `force`), remembered, and planned (`"writeback": {"note", "field"}`)."""
    from prometei.erp.mapping import lead_values
    from prometei.erp.records import RecordIdentity

    services = get_services()
    settings = services.settings
    entity_id = settings.erp_entity_id
    lead = LeadSnapshot.model_validate(lead_data)
    values = lead_values(lead, settings.erp_field_map)
    written = {value.key: _text(value.value) for value in values}
    # The lookup field is written too: switching ERP_LEAD_ID_FIELD on is a change.
    written["ERP_LEAD_ID_FIELD"] = _text(settings.erp_lead_id_field)
    digest = values_digest(entity_id, written)
    memory = _memory(services)
    warnings: list[str] = []
    last = memory.get(entity_id, lead.id) if memory else None
    output: dict[str, Any]
    if last is not None and last.digest == digest and not force:
        output = {
            "action": "unchanged",
            "record_id": last.record_id,
            "entity_id": entity_id,
            "duplicates": [],
        }
    else:
        result = services.erp_records.write(
            entity_id,
            values,
            RecordIdentity("lead", str(lead.id), settings.erp_lead_id_field),
            what=f"lead {lead.id}",
        )
        output = result.as_output()
        remembered, last = last, _after_write(last, result, digest)
        if memory is not None and last != remembered:
            try:
                memory.put(entity_id, lead.id, last)
            except PrometeiError as exc:
                warnings.append(
                    f"write-back memory not saved ({exc.message}); the next sync counts as a change"
                )
    output["writeback"] = {
        **_plan(settings, lead, last, memory is not None, warnings),
        # What the later steps update (no store read needed): None without a store.
        "memory": last.as_data() if memory is not None else None,
    }
    if warnings:
        output["warnings"] = [*output.get("warnings", []), *warnings]
    return output


def _after_write(last: LastWrite | None, result: WriteResult, digest: str) -> LastWrite:
    """The memory after a write: a change (insert, other values, another record, or nothing
    remembered yet) owes a note; the same values written again (force) keep the old state."""
    if (
        last is not None
        and result.action == "updated"
        and last.digest == digest
        and last.record_id == result.record_id
    ):
        return last
    return LastWrite(
        record_id=result.record_id,
        digest=digest,
        action=result.action,
        field_value=last.field_value if last else None,
        field_writes=last.field_writes if last else 0,
    )


def _plan(
    settings: Settings, lead: LeadSnapshot, last: LastWrite, remembered: bool, warnings: list[str]
) -> dict[str, Any]:
    note = None
    if settings.amocrm_sync_note:
        if remembered:
            note = last.note_kind()
        else:
            warnings.append(NO_STORE_FOR_NOTES)
    field = False
    field_id = settings.amocrm_erp_id_field
    if field_id is not None and not field_holds(lead, field_id, last.record_id):
        if last.field_exhausted(last.record_id):
            warnings.append(
                f"AMOCRM_ERP_ID_FIELD={field_id}: amoCRM accepted record id {last.record_id} "
                f"{last.field_writes} times but the lead does not keep it; not writing it again. "
                "Check that the field is a text or number field of leads (doctor checks it)"
            )
        else:
            field = True
    return {"note": note, "field": field}


# ---- the write-back steps ---------------------------------------------------------------------
def run_writebacks(ctx: inngest.ContextSync, output: dict[str, Any]) -> dict[str, Any]:
    """Run the write-backs `create-erp-task` planned (each its own step); `output` without the
    plan, plus what happened (`erp_id_field`, `sync_note`) and any problem in `warnings`."""
    plan = output.pop("writeback", None)
    if not isinstance(plan, dict):
        return output
    lead_id, entity_id, record_id = output["lead_id"], output["entity_id"], output["record_id"]
    memory = plan.get("memory")
    problems: list[str] = []
    if plan.get("field"):
        done = _soft_step(ctx, "write-erp-id", set_erp_id, lead_id, entity_id, record_id, memory)
        output["erp_id_field"] = "written" if done.get("ok") else "failed"
        if done.get("ok"):
            memory = done.get("memory")
        else:
            problems.append(f"the record id was not written to the lead: {done.get('error')}")
    if plan.get("note"):
        done = _soft_step(
            ctx, "add-sync-note", add_sync_note, lead_id, entity_id, plan["note"], memory
        )
        output["sync_note"] = (
            ("already added" if done.get("already") else "added") if done.get("ok") else "failed"
        )
        if not done.get("ok"):
            problems.append(f"the note was not added to the lead: {done.get('error')}")
    if problems:
        output["warnings"] = [*output.get("warnings", []), *problems]
    return output


def set_erp_id(
    lead_id: int, entity_id: int, record_id: str, memory: dict[str, Any] | None
) -> dict[str, Any]:
    """Step `write-erp-id`: PATCH the record id into AMOCRM_ERP_ID_FIELD (idempotent), then
    count the write in the memory; the updated memory is the step's output."""
    services = get_services()
    field_id = services.settings.amocrm_erp_id_field
    if field_id is None:
        return {"ok": False, "error": "AMOCRM_ERP_ID_FIELD is no longer set"}
    updated_at = services.amocrm.set_lead_field(lead_id, field_id, record_id)
    last = LastWrite.from_data(memory)
    if last is not None:
        last = last.after_field_write(record_id)
        _remember(services, entity_id, lead_id, last)
    return {
        "ok": True,
        "lead_updated_at": updated_at,
        "memory": last.as_data() if last else None,
    }


def add_sync_note(
    lead_id: int, entity_id: int, kind: str, memory: dict[str, Any] | None
) -> dict[str, Any]:
    """Step `add-sync-note`: the note, then "noted" in the memory. Not idempotent on amoCRM's
    side, so nothing after the note may fail the step (a retry would add a second note)."""
    services = get_services()
    last = LastWrite.from_data(memory)
    if last is None:
        return {"ok": False, "error": "nothing remembered to note (no state store)"}
    if _noted_meanwhile(services, entity_id, lead_id, last):
        return {"ok": True, "already": True}
    link = record_link(services.settings, entity_id, last.record_id)
    text = sync_note_text("inserted" if kind == "inserted" else "updated", last.record_id, link)
    note_id = services.amocrm.add_lead_note(lead_id, text)
    _remember(services, entity_id, lead_id, replace(last, noted=True))
    return {"ok": True, "note_id": note_id, "text": text}


def _noted_meanwhile(services: Services, entity_id: int, lead_id: int, last: LastWrite) -> bool:
    """Whether another run of this lead has added this write's note since our ERP step.

    Inngest's concurrency key holds one *step* of a lead at a time, not one run: two runs of a
    lead (a webhook and a backfill) interleave between steps, and both can plan the same note.
    Steps of a lead never overlap, so reading the memory here, inside the step, is race-free.
    """
    memory = _memory(services)
    try:
        current = memory.get(entity_id, lead_id) if memory is not None else None
    except PrometeiError as exc:
        log.warning("write-back memory of lead %s not read: %s", lead_id, exc.message)
        return False
    return (
        current is not None
        and current.noted
        and (current.record_id, current.digest) == (last.record_id, last.digest)
    )


def _soft_step(
    ctx: inngest.ContextSync, step_id: str, fn: Callable[..., dict[str, Any]], *args: Any
) -> dict[str, Any]:
    """`ctx.step.run` for a write-back: a permanent error becomes `{"ok": False, "error"}`, a
    transient one is retried by Inngest and, once retries are spent, becomes the same."""

    def body() -> dict[str, Any]:
        try:
            return fn(*args)
        except PrometeiError as exc:
            if exc.retryable:
                raise WritebackRetry(exc.message) from None
            return {"ok": False, "error": exc.message}

    try:
        return ctx.step.run(step_id, body)
    except inngest.StepError as exc:
        return {"ok": False, "error": exc.message or exc.name}


# ---- helpers --------------------------------------------------------------------------------
def _memory(services: Services) -> LastWrites | None:
    """The write-back memory, or None when there is no state store (Vercel without KV)."""
    try:
        return LastWrites(services.state)
    except ConfigError:
        return None


def _remember(services: Services, entity_id: int, lead_id: int, last: LastWrite) -> None:
    """Best effort: a lost update costs at most one repeated write-back later, while raising
    here would repeat the amoCRM write that already happened."""
    memory = _memory(services)
    if memory is None:
        return
    try:
        memory.put(entity_id, lead_id, last)
    except PrometeiError as exc:
        log.warning("write-back memory of lead %s not updated: %s", lead_id, exc.message)


def _text(value: str | Decimal | int | None) -> str | None:
    return None if value is None else str(value)
