"""One ERP record per lead (or per deal externalId): checked, typed, and never duplicated.

`RecordWriter.write(entity_id, values, identity, what=...)` is the only way prometei writes a
record. It reads the entity's schema (cached), checks and converts every value
(`prometei.erp.plan`), then finds out whether the record already exists, in one of two ways:

- **lookup field** (`identity.lookup_field_id`, i.e. ERP_LEAD_ID_FIELD): select by the id
  stored in that text field, then update the record found or insert one carrying the id.
  Survives everything, including an insert whose answer was lost (the retry finds it) and a
  lost store. 2 ERP requests per lead. Only when the select finds nothing (an insert is due)
  is the store read: a record remembered for the lead (written in memory mode, before the
  field was set) is updated instead, which writes the id into it; a record inserted here is
  remembered, so switching either way between the modes keeps one record.
- **record memory** (no lookup field): the state store (KV, or state.json locally) remembers
  lead -> ERP record id; it is read before the write and written right after the insert, so
  resyncs, replays and backfills update. An insert whose answer is lost (the ERP wrote it,
  the reply timed out) is not remembered, so its retry inserts a second record: only the
  lookup field closes that gap. 1 ERP request + 1 store read per lead.

Without either (on Vercel with no KV store) a lead cannot be written: `ConfigError` names both
fixes. A deal without a lookup field and without a store is a plain insert, guarded by its
event id only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Literal

from prometei.erp.client import ERPClient, InsertResult
from prometei.erp.plan import WritePlan, check_required, plan_items
from prometei.erp.schema import (
    REFRESH_AFTER_SECONDS,
    Choice,
    EntitySchema,
    ErpField,
    SchemaCache,
)
from prometei.erp.values import SourceValue
from prometei.errors import ConfigError, InputError, PrometeiError, UpstreamError, UpstreamRejected
from prometei.store.base import STATE_KEY_RE, StateStore

log = logging.getLogger(__name__)

SERVICE = "erp"
LOOKUP_FIELD_TYPE = "fieldtype_input"
MEMORY_PREFIX = "erp:record"


@dataclass(frozen=True)
class WriteResult:
    """What a write did; `as_output()` is the plain-JSON step output. `warnings` says what
    was changed on the way (a text cut to fit its field, a record id that could not be kept)."""

    action: Literal["inserted", "updated"]
    record_id: str
    entity_id: int
    duplicates: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_output(self) -> dict[str, Any]:
        output: dict[str, Any] = {
            "action": self.action,
            "record_id": self.record_id,
            "entity_id": self.entity_id,
            "duplicates": list(self.duplicates),
        }
        if self.warnings:
            output["warnings"] = list(self.warnings)
        return output


@dataclass(frozen=True)
class RecordIdentity:
    """What makes two writes "the same record": a lead id, or a deal's externalId.

    `lookup_field_id` is the ERP text field that stores `value` (ERP_LEAD_ID_FIELD, for the
    entity it belongs to); None means "remember the record id in the state store"."""

    kind: Literal["lead", "deal"]
    value: str
    lookup_field_id: int | None = None

    def memory_key(self, entity_id: int) -> str:
        key = f"{MEMORY_PREFIX}:{entity_id}:{self.kind}:{self.value}"
        if STATE_KEY_RE.match(key):
            return key
        digest = hashlib.sha256(self.value.encode("utf-8")).hexdigest()[:32]
        return f"{MEMORY_PREFIX}:{entity_id}:{self.kind}:h{digest}"


@dataclass(frozen=True)
class _Job:
    """One write in progress: what was checked, ready to send."""

    entity_id: int
    schema: EntitySchema | None
    plan: WritePlan
    values: list[SourceValue]
    what: str

    def result(self, action: Literal["inserted", "updated"], record_id: str) -> WriteResult:
        return WriteResult(action, record_id, self.entity_id, warnings=list(self.plan.notes))


class RecordWriter:
    """Schema-checked writes of one record per identity; see the module docstring."""

    def __init__(
        self,
        client: ERPClient,
        schemas: SchemaCache,
        *,
        memory: Callable[[], StateStore],
        tz: tzinfo,
    ) -> None:
        self.client = client
        self.schemas = schemas
        self._memory = memory
        self._tz = tz

    def write(
        self,
        entity_id: int,
        values: Sequence[SourceValue],
        identity: RecordIdentity | None,
        *,
        what: str,
    ) -> WriteResult:
        values = list(values)
        if identity is not None and identity.lookup_field_id is not None:
            values.append(
                SourceValue(
                    key=f"field_{identity.lookup_field_id}",
                    label=f"ERP_LEAD_ID_FIELD={identity.lookup_field_id}",
                    kind="text",
                    value=identity.value,
                )
            )
        schema, plan = self._plan(entity_id, values, identity, what)
        job = _Job(entity_id, schema, plan, values, what)
        if identity is None:
            result = self._insert_new(job)
        elif identity.lookup_field_id is not None:
            result = self._by_lookup(job, identity, identity.lookup_field_id)
        else:
            store = self._store_for(identity, entity_id)
            result = (
                self._insert_new(job) if store is None else self._by_memory(job, identity, store)
            )
        for warning in result.warnings:
            log.warning("ERP write of %s: %s", what, warning)
        return result

    # ---- checking -----------------------------------------------------------------------
    def _plan(
        self,
        entity_id: int,
        values: list[SourceValue],
        identity: RecordIdentity | None,
        what: str,
    ) -> tuple[EntitySchema | None, WritePlan]:
        schema = self.schemas.get(entity_id)
        try:
            return schema, self._checked(schema, entity_id, values, identity, what)
        except (ConfigError, InputError):
            if schema is None:
                raise
            # The cached schema may predate a field added in Rukovoditel: look once more.
            fresh = self.schemas.get(entity_id, refresh_if_older_than=REFRESH_AFTER_SECONDS)
            if fresh is schema:
                raise
            return fresh, self._checked(fresh, entity_id, values, identity, what)

    def _checked(
        self,
        schema: EntitySchema | None,
        entity_id: int,
        values: list[SourceValue],
        identity: RecordIdentity | None,
        what: str,
    ) -> WritePlan:
        if schema is not None and identity is not None and identity.lookup_field_id is not None:
            check_lookup_field(schema, identity.lookup_field_id)
        return plan_items(
            schema,
            values,
            lambda target: self._choices(schema, target),
            self._tz,
            what=what,
            entity_id=entity_id,
        )

    def _choices(self, schema: EntitySchema | None, target: ErpField) -> tuple[Choice, ...] | None:
        return None if schema is None else self.schemas.choices(schema, target.id)

    # ---- the two ways to find the record ------------------------------------------------
    def _by_lookup(self, job: _Job, identity: RecordIdentity, field_id: int) -> WriteResult:
        value = identity.value
        found = self._lookup(job.entity_id, field_id, value)
        if found:
            return self._update_found(job, found, field_id)
        # No record carries the id yet. One remembered for this lead (written before
        # ERP_LEAD_ID_FIELD was set) is its record: updating it writes the id, so switching
        # modes never makes a second record. The store is read only here, before an insert.
        store = self._optional_store()
        key = identity.memory_key(job.entity_id)
        record_id = _recall(store, key) if store is not None else None
        if record_id is not None:
            updated = self._update_remembered(job, identity, record_id)
            if updated is not None:
                return updated
        result = self._insert_new(
            job, if_skipped=lambda inserted: self._find_after_skip(job, inserted, field_id, value)
        )
        if store is not None:
            # Remembered too, so a later switch back to memory mode finds the record.
            _remember(store, key, result.record_id)
        return result

    def _find_after_skip(
        self, job: _Job, inserted: InsertResult, field_id: int, value: str
    ) -> WriteResult:
        """The insert was skipped as a duplicate: the lookup field is unique and someone
        wrote the record since our lookup, so look again and update it."""
        found = self._lookup(job.entity_id, field_id, value)
        if not found:
            raise UpstreamRejected(
                SERVICE,
                f"the insert into entity {job.entity_id} was skipped as a duplicate on unique "
                f"field(s) {inserted.warning_fields()}, and no record has field "
                f"{field_id} = {value!r}: another unique field clashes",
            )
        return self._update_found(job, found, field_id)

    def _by_memory(self, job: _Job, identity: RecordIdentity, store: StateStore) -> WriteResult:
        key = identity.memory_key(job.entity_id)
        record_id = _remembered(store.get(key))
        if record_id is not None:
            updated = self._update_remembered(job, identity, record_id)
            if updated is not None:
                return updated
        result = self._insert_new(job)
        problem = _remember(store, key, result.record_id)
        if problem is None:
            return result
        return WriteResult(
            result.action,
            result.record_id,
            job.entity_id,
            warnings=[
                *result.warnings,
                f"record {result.record_id} could not be remembered for {identity.kind} "
                f"{identity.value} ({problem}); its next sync will insert another record",
            ],
        )

    def _update_remembered(
        self, job: _Job, identity: RecordIdentity, record_id: str
    ) -> WriteResult | None:
        """Update the record remembered for `identity`; None when it is gone from the ERP."""
        if not job.plan.items:
            return job.result("updated", record_id)
        by: dict[str, str | int] = {"id": int(record_id)}
        if record_id in self.client.update(job.entity_id, by=by, data=job.plan.items):
            return job.result("updated", record_id)
        log.warning(
            "ERP record %s of entity %s (remembered for %s %s) is gone; inserting a new one",
            record_id,
            job.entity_id,
            identity.kind,
            identity.value,
        )
        return None

    def _optional_store(self) -> StateStore | None:
        """The state store when there is one (the lookup field does not need it)."""
        try:
            return self._memory()
        except ConfigError:
            return None

    def _store_for(self, identity: RecordIdentity, entity_id: int) -> StateStore | None:
        try:
            return self._memory()
        except ConfigError as exc:
            if identity.kind == "deal":
                return None  # a plain insert, guarded by the event id (docs/deals.md)
            raise ConfigError(
                f"cannot keep one ERP record per lead in entity {entity_id}: "
                f"ERP_LEAD_ID_FIELD is not set, and {exc.message}. Set ERP_LEAD_ID_FIELD to "
                "the id of a text field that holds the amoCRM lead id (recommended), or "
                "connect a KV store so prometei can remember each lead's record"
            ) from None

    # ---- single steps ---------------------------------------------------------------------
    def _insert_new(
        self, job: _Job, *, if_skipped: Callable[[InsertResult], WriteResult] | None = None
    ) -> WriteResult:
        """Insert the record; an insert skipped on a unique field goes to `if_skipped`
        (without one, it is an error naming the clash)."""
        check_required(job.schema, job.plan, job.values, what=job.what)
        inserted = self.client.insert(job.entity_id, job.plan.items)
        if inserted.ids:
            return job.result("inserted", inserted.ids[0])
        if not inserted.skipped_as_duplicate:
            raise self.client.answers.protocol("insert", "the answer has no record id")
        if if_skipped is None:
            raise _unique_clash(job.entity_id, inserted)
        return if_skipped(inserted)

    def _lookup(self, entity_id: int, field_id: int, value: str) -> list[str]:
        """Ids (ascending) of the records whose field `field_id` equals `value`."""
        rows = self.client.select(
            entity_id, filters={str(field_id): value}, select_fields=[field_id], limit=2
        )
        # Never trust the filter: Rukovoditel drops a filter it cannot apply and returns
        # arbitrary rows. A row with another value means the lookup did not happen at all.
        if any(row.get(str(field_id)) != value for row in rows):
            raise UpstreamRejected(
                SERVICE,
                f"the lookup by field {field_id} in entity {entity_id} returned records with "
                "other values: Rukovoditel ignored the filter. ERP_LEAD_ID_FIELD must be the "
                "numeric id of a text (input) field of that entity",
            )
        ids = [row.get("id", "") for row in rows]
        if not all(i.isdigit() for i in ids):
            raise self.client.answers.protocol("select", "a record has no numeric id")
        return sorted(ids, key=int)

    def _update_found(self, job: _Job, found: list[str], field_id: int) -> WriteResult:
        target, duplicates = found[0], found[1:]
        if duplicates:
            log.warning(
                "ERP entity %s has %d records with field %s = %s; updating %s, "
                "duplicates left as they are: %s",
                job.entity_id,
                len(found),
                field_id,
                job.plan.items.get(f"field_{field_id}"),
                target,
                ", ".join(duplicates),
            )
        updated = self.client.update(job.entity_id, by={"id": int(target)}, data=job.plan.items)
        if target not in updated:
            # Deleted between our lookup and the update: the retry's lookup will insert it.
            raise UpstreamError(
                SERVICE,
                f"record {target} of entity {job.entity_id} vanished before the update; the next "
                "attempt looks the record up again",
                retryable=True,
            )
        return WriteResult("updated", target, job.entity_id, duplicates, list(job.plan.notes))


def check_lookup_field(schema: EntitySchema, field_id: int) -> ErpField:
    """ERP_LEAD_ID_FIELD must be a plain text input of the entity: Rukovoditel compares a
    text filter exactly, while a numeric field reads back as "30000009.00" (never equal)."""
    found = schema.fields.get(field_id)
    if found is None:
        raise ConfigError(
            f"ERP_LEAD_ID_FIELD={field_id} is not a field of ERP entity {schema.entity_id}; "
            "set it to the id of a text (input) field of that entity "
            f"(`python -m prometei erp fields --entity {schema.entity_id}` lists them)"
        )
    if found.type != LOOKUP_FIELD_TYPE:
        raise ConfigError(
            f"ERP_LEAD_ID_FIELD={field_id} is {found.describe()} in ERP entity "
            f"{schema.entity_id}; the lead-id lookup needs a plain text (input) field: "
            'Rukovoditel reformats other types (a numeric one reads back as "30000009.00"), '
            "so the lookup would never find the record. Create a text field for the lead id"
        )
    return found


def _remembered(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    record_id = str(value.get("id", "")) if isinstance(value, dict) else ""
    return record_id if record_id.isdigit() else None


def _recall(store: StateStore, key: str) -> str | None:
    """The remembered record id, or None, also when the store cannot be read: with a lookup
    field the memory only bridges a switch of modes, so it must not stop a write."""
    try:
        return _remembered(store.get(key))
    except PrometeiError as exc:
        log.warning("could not read the ERP record remembered under %s: %s", key, exc.message)
        return None


def _remember(store: StateStore, key: str, record_id: str) -> str | None:
    """Store lead -> record id; None when done, else why not (tried twice: a lost memory
    means the next sync inserts a second record, so it is worth one more attempt)."""
    problem = "unknown error"
    for _ in range(2):
        try:
            store.put(key, json.dumps({"id": record_id}))
            return None
        except PrometeiError as exc:
            problem = exc.message
    log.error("could not remember ERP record %s under %s: %s", record_id, key, problem)
    return problem


def _unique_clash(entity_id: int, inserted: InsertResult) -> UpstreamRejected:
    return UpstreamRejected(
        SERVICE,
        f"the insert into entity {entity_id} was skipped: unique field(s) "
        f"{inserted.warning_fields()} already hold these values; set ERP_LEAD_ID_FIELD so "
        "existing records are updated instead",
    )
