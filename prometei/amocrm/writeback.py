"""Write-back: what the amoCRM lead is told after an ERP write, and what prometei remembers so
it tells it once.

Settings (all off by default): AMOCRM_SYNC_NOTE adds a note "Запись ERP №N создана/обновлена"
with a link to the record; AMOCRM_ERP_ID_FIELD puts the record id into a lead custom field.
Both count against amoCRM's 7 requests/s and go through the client's one limiter.

**The "changed" rule.** `LastWrites` keeps, per lead and ERP entity, the record id and a digest
of the mapped values last written (`values_digest`), in the state store (KV, or state.json).
A sync is *changed* when the record was inserted, when the digest differs (a mapped value or
ERP_FIELD_MAP changed), or when nothing is remembered yet (the first sync after write-back was
switched on). A sync whose digest equals the remembered one writes nothing to the ERP and adds
no note: that is what our own lead update turns into when amoCRM (or the reconcile cron) hands
the lead back to us. No ERP read-back is needed to tell the difference.

A note is owed once per change (`noted`), so a run that wrote the ERP but lost its note step is
caught up by the next sync. The id field is written only when the lead holds another value,
and at most `FIELD_WRITE_LIMIT` times for one record id: a value amoCRM accepts but does not
keep (a field of the wrong type) cannot start a write loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Literal

from prometei.amocrm.models import LeadSnapshot

if TYPE_CHECKING:
    from prometei.config import Settings
    from prometei.store.base import StateStore

log = logging.getLogger(__name__)

MEMORY_PREFIX = "amocrm:writeback"
# How often one record id is put into AMOCRM_ERP_ID_FIELD of one lead before prometei stops
# and warns: the first write, and one more after someone cleared or changed the value.
FIELD_WRITE_LIMIT = 2
# Rukovoditel's page of one record (index.php?module=items/info&path=<entity>-<record>), as
# public Rukovoditel code and tests link it; a record of a sub-entity may need its parent's
# path in front (not verified against a live server).
RECORD_PAGE = "{base}/index.php?module=items/info&path={entity}-{record}"

Action = Literal["inserted", "updated"]


@dataclass(frozen=True)
class LastWrite:
    """What prometei last wrote for one lead into one ERP entity."""

    record_id: str
    digest: str  # `values_digest` of the values of that write
    action: Action  # what the write that produced `digest` did
    noted: bool = False  # its sync note is on the lead
    field_value: str | None = None  # the record id last put into AMOCRM_ERP_ID_FIELD
    field_writes: int = 0  # how often `field_value` was written

    def note_kind(self) -> Action | None:
        """The note this write still owes ("inserted" / "updated"), or None."""
        return None if self.noted else self.action

    def field_exhausted(self, record_id: str) -> bool:
        return self.field_value == record_id and self.field_writes >= FIELD_WRITE_LIMIT

    def after_field_write(self, record_id: str) -> LastWrite:
        writes = self.field_writes + 1 if self.field_value == record_id else 1
        return replace(self, field_value=record_id, field_writes=writes)

    def as_data(self) -> dict[str, object]:
        """Plain JSON (a step output carries it from one write-back step to the next)."""
        return asdict(self)

    @classmethod
    def from_data(cls, data: object) -> LastWrite | None:
        """Back from `as_data()` (or what a store held); None for anything else."""
        if not isinstance(data, dict):
            return None
        try:
            last = cls(**data)
        except TypeError:
            return None
        valid = isinstance(last.record_id, str) and last.record_id.isdigit()
        return last if valid and last.action in ("inserted", "updated") else None


class LastWrites:
    """`LastWrite` per (entity, lead) in a state store. An unreadable entry counts as none."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    @staticmethod
    def key(entity_id: int, lead_id: int) -> str:
        return f"{MEMORY_PREFIX}:{int(entity_id)}:{int(lead_id)}"

    def get(self, entity_id: int, lead_id: int) -> LastWrite | None:
        raw = self.store.get(self.key(entity_id, lead_id))
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        last = LastWrite.from_data(data)
        if last is None:
            log.warning("unreadable write-back memory for lead %s; starting afresh", lead_id)
        return last

    def put(self, entity_id: int, lead_id: int, last: LastWrite) -> None:
        """Overwrite (one store write, no read). Steps of one lead never overlap (the
        function's concurrency key), but its runs can interleave between steps: the note step
        reads the memory again before it adds a note (`lead_writeback._noted_meanwhile`)."""
        self.store.put(self.key(entity_id, lead_id), json.dumps(last.as_data(), sort_keys=True))


def values_digest(entity_id: int, values: Mapping[str, str | None]) -> str:
    """A short digest of what a write puts into the ERP: the entity, every mapped ERP field and
    its source value as text (None and "" alike). ERP_FIELD_MAP changes change it too."""
    canonical = json.dumps(
        [int(entity_id), sorted((key, value or "") for key, value in values.items())],
        ensure_ascii=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:32]


def record_link(settings: Settings, entity_id: int, record_id: str) -> str | None:
    """The record's page in Rukovoditel (CRM_PUBLIC_URL, else CRM_API_URL's base), or None."""
    base = settings.erp_web_base
    if base is None:
        return None
    return RECORD_PAGE.format(base=base, entity=int(entity_id), record=record_id)


def sync_note_text(kind: Action, record_id: str, link: str | None) -> str:
    """The note a manager reads on the lead (Russian: the company's language)."""
    verb = "создана" if kind == "inserted" else "обновлена"
    text = f"Запись ERP №{record_id} {verb}"
    return f"{text}: {link}" if link else f"{text}."


def field_holds(lead: LeadSnapshot, field_id: int, value: str) -> bool:
    """True when the lead's custom field `field_id` already holds exactly `value` (a numeric
    field may read back as 812 or "812.0")."""
    held = lead.custom_fields.get(str(field_id)) or []
    if len(held) != 1:
        return False
    if held[0].strip() == value:
        return True
    try:
        return Decimal(held[0].strip()) == Decimal(value)
    except InvalidOperation:
        return False


def writeback_requests_per_run(settings: Settings) -> int:
    """amoCRM writes one lead run can add: the note (on a created or changed record) and the
    id field (when the lead does not hold the id yet, i.e. mostly on creation). The failure
    note belongs to the failure handler's run, not to this budget."""
    return int(settings.amocrm_sync_note) + int(settings.amocrm_erp_id_field is not None)
