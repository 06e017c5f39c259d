"""What an ERP entity looks like: its fields, their types and dropdown choices, cached.

Rukovoditel 3.4+ describes itself: `get_entity_fields` gives every field of an entity (system
fields included) and `get_field_choices` the choices of a dropdown or radio field
(reference: rukovoditel-live.md T1-T6). Field ids belong to one entity (T12), so a schema is
always per entity.

`SchemaCache` keeps one schema per entity for ERP_SCHEMA_TTL seconds (default 600) on a warm
instance, so a lead costs no extra ERP request in the steady state. Choices are fetched only
for the dropdown/radio fields a write targets, and cached with their schema. Servers whose
Extension has no `get_entity_fields` (before 3.4) get `None`: writes then go unchecked, as
they did before, and `doctor` warns.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from prometei.errors import UpstreamAuthError, UpstreamError, UpstreamRejected

if TYPE_CHECKING:
    from prometei.erp.client import ERPClient

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 600
# A write that finds a problem with a cached schema fetches it again once, unless the copy is
# younger than this: a field added in Rukovoditel a minute ago must not fail a lead, but a
# wrong map must not turn every lead into an extra request either.
REFRESH_AFTER_SECONDS = 5.0


class FieldKind(Enum):
    """How prometei writes a field type. Only these are written; the rest are refused."""

    TEXT = "text"  # VARCHAR(255)
    TEXTAREA = "textarea"  # TEXT
    NUMERIC = "numeric"  # VARCHAR(64), a plain decimal
    DATE = "date"  # YYYY-MM-DD, read in the server's time zone
    DATETIME = "datetime"  # YYYY-MM-DD HH:MM
    CHOICE = "choice"  # one choice id
    SYSTEM = "system"  # filled by Rukovoditel itself (id, dates, author, formulas...)
    OTHER = "other"  # writable in Rukovoditel, but not by prometei (users, files, links...)


_KINDS: dict[str, FieldKind] = {
    **dict.fromkeys(
        (
            "input",
            "input_masked",
            "input_url",
            "input_email",
            "input_dynamic_mask",
            "input_ip",
            "phone",
        ),
        FieldKind.TEXT,
    ),
    **dict.fromkeys(("textarea", "textarea_wysiwyg"), FieldKind.TEXTAREA),
    **dict.fromkeys(("input_numeric", "input_numeric_comments"), FieldKind.NUMERIC),
    **dict.fromkeys(("input_date", "input_date_extra"), FieldKind.DATE),
    "input_datetime": FieldKind.DATETIME,
    **dict.fromkeys(("dropdown", "radioboxes"), FieldKind.CHOICE),
    # Filled or computed by Rukovoditel: a value sent for them is ignored or does harm.
    **dict.fromkeys(
        (
            "id",
            "date_added",
            "date_updated",
            "created_by",
            "parent_item_id",
            "action",
            "formula",
            "js_formula",
            "mysql_query",
            "auto_increment",
            "autostatus",
            "related_records",
            "items_by_query",
            "section",
            "days_difference",
            "hours_difference",
            "months_difference",
            "text_pattern",
            "text_pattern_static",
            "parent_value",
            "nested_calculations",
            "php_code",
            "ajax_request",
            "process_button",
            "subentity_form",
            "qrcode",
            "barcode",
            "random_value",
        ),
        FieldKind.SYSTEM,
    ),
}


def is_unknown_action(exc: UpstreamError, action: str) -> bool:
    """True when the server said it has no such action (Extension older than 3.4)."""
    return isinstance(exc, UpstreamRejected) and f'"{action}" not exist' in exc.message


def kind_of(field_type: str) -> FieldKind:
    return _KINDS.get(field_type.removeprefix("fieldtype_"), FieldKind.OTHER)


@dataclass(frozen=True)
class Choice:
    id: str
    name: str
    level: int = 0


@dataclass(frozen=True)
class ErpField:
    id: int
    type: str
    name: str
    required: bool = False
    heading: bool = False
    configuration: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The write key Rukovoditel uses in `items` / `data`."""
        return f"field_{self.id}"

    @property
    def kind(self) -> FieldKind:
        return kind_of(self.type)

    @property
    def writable(self) -> bool:
        return self.kind not in (FieldKind.SYSTEM, FieldKind.OTHER)

    @property
    def short_type(self) -> str:
        return self.type.removeprefix("fieldtype_")

    def describe(self) -> str:
        """`field_1040 "Сумма" (input_numeric)`, for messages."""
        return f'{self.key} "{self.name}" ({self.short_type})'


@dataclass
class EntitySchema:
    """The fields of one entity and the choices fetched so far (field id -> choices, or None
    when the API user may not read them)."""

    entity_id: int
    fields: dict[int, ErpField]
    choices: dict[int, tuple[Choice, ...] | None] = field(default_factory=dict)
    fetched_at: float = 0.0

    def field_for(self, key: str) -> ErpField | None:
        """The field behind a write key (`field_1039`), or None when the entity has none."""
        if not key.startswith("field_") or not key[6:].isdigit():
            return None
        return self.fields.get(int(key[6:]))

    def heading(self) -> ErpField | None:
        return next((f for f in self.fields.values() if f.heading and f.writable), None)

    def required(self) -> list[ErpField]:
        """Fields a new record must have a value for (the form's "required" flag)."""
        return [f for f in self.fields.values() if f.required and f.writable]


def parse_entity_fields(entity_id: int, data: Mapping[str, Any]) -> EntitySchema:
    """`get_entity_fields` data -> EntitySchema. Rows without a numeric id are skipped."""
    fields: dict[int, ErpField] = {}
    for raw in data.values():
        if not isinstance(raw, Mapping) or not str(raw.get("id", "")).isdigit():
            continue
        fields[int(raw["id"])] = ErpField(
            id=int(raw["id"]),
            type=str(raw.get("type") or ""),
            name=str(raw.get("name") or ""),
            required=str(raw.get("is_required") or "0") == "1",
            heading=str(raw.get("is_heading") or "0") == "1",
            configuration=_configuration(raw.get("configuration")),
        )
    return EntitySchema(entity_id, fields)


def parse_choices(data: Iterable[Mapping[str, Any]]) -> tuple[Choice, ...]:
    """`get_field_choices` data -> the *active* choices. Rukovoditel lists inactive ones too
    (`is_active` "0": hidden from its forms), so a value naming one is refused like an
    unknown choice. A row without `is_active` counts as active."""
    return tuple(
        Choice(id=str(item["id"]), name=str(item.get("name") or ""), level=_int(item.get("level")))
        for item in data
        if str(item.get("id", "")).isdigit() and _active(item.get("is_active"))
    )


def _active(flag: Any) -> bool:
    return str(flag).strip().lower() not in ("0", "false")


def _configuration(raw: Any) -> dict[str, Any]:
    # Rukovoditel stores the field settings as a JSON string inside the JSON answer.
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass
class _Entry:
    schema: EntitySchema | None  # None: the server cannot describe itself (before 3.4)
    expires_at: float


class SchemaCache:
    """Entity schemas for one process (a warm instance), each kept `ttl_s` seconds.

    Thread-safe: requests on a warm Vercel instance run on several threads, and two of them
    asking for one cold entity should cost one `get_entity_fields`, not two."""

    def __init__(
        self,
        client: ERPClient,
        ttl_s: float = DEFAULT_TTL_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl_s
        self._clock = clock
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()

    def get(
        self, entity_id: int, *, refresh_if_older_than: float | None = None
    ) -> EntitySchema | None:
        """The entity's schema (cached), or None when the server has no `get_entity_fields`.

        An unknown entity raises the ERP's own error (`Entity #N does not exist`, permanent,
        naming ERP_ENTITY_ID)."""
        with self._lock:
            now = self._clock()
            entry = self._entries.get(entity_id)
            stale = entry is None or entry.expires_at <= now
            schema = entry.schema if entry is not None else None
            if schema is not None and refresh_if_older_than is not None:
                stale = stale or now - schema.fetched_at >= refresh_if_older_than
            if not stale:
                assert entry is not None
                return entry.schema
            schema = self._fetch(entity_id, now)
            if self._ttl > 0:
                self._entries[entity_id] = _Entry(schema, now + self._ttl)
            return schema

    def choices(self, schema: EntitySchema, field_id: int) -> tuple[Choice, ...] | None:
        """The choices of one dropdown/radio field of `schema` (fetched once per schema), or
        None when this API user may not read them (`get_field_choices` is admin-only)."""
        with self._lock:
            if field_id not in schema.choices:
                schema.choices[field_id] = self._fetch_choices(schema.entity_id, field_id)
            return schema.choices[field_id]

    def forget(self, entity_id: int | None = None) -> None:
        with self._lock:
            if entity_id is None:
                self._entries.clear()
            else:
                self._entries.pop(entity_id, None)

    def _fetch(self, entity_id: int, now: float) -> EntitySchema | None:
        try:
            data = self._client.entity_fields(entity_id)
        except UpstreamError as exc:
            if is_unknown_action(exc, "get_entity_fields"):
                log.warning(
                    "Rukovoditel has no get_entity_fields (Extension before 3.4): ERP writes "
                    "are not checked against entity %s's fields",
                    entity_id,
                )
                return None
            raise
        schema = parse_entity_fields(entity_id, data)
        if not schema.fields:
            # Every real entity has its system fields: an empty list is not an answer we know.
            raise self._client.answers.protocol(
                "get_entity_fields", f"no fields for entity {entity_id}"
            )
        schema.fetched_at = now
        return schema

    def _fetch_choices(self, entity_id: int, field_id: int) -> tuple[Choice, ...] | None:
        try:
            return parse_choices(self._client.field_choices(entity_id, field_id))
        except UpstreamError as exc:
            if isinstance(exc, UpstreamAuthError) or is_unknown_action(exc, "get_field_choices"):
                log.warning(
                    "cannot read the choices of field %s in entity %s (%s): choice ids are "
                    "written unchecked and labels cannot be translated",
                    field_id,
                    entity_id,
                    "get_field_choices is for administrators only"
                    if isinstance(exc, UpstreamAuthError)
                    else "the server has no get_field_choices",
                )
                return None
            raise
