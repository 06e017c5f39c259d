"""Deal payloads sent by other systems: validation, ERP items, event builders, a send helper.

Use this module when something outside amoCRM wants an ERP record:

- `parse_deal(data)` / `parse_batch(data)` validate the event data of `crm/create-deal`,
  `erp/task.create` and `crm/batch-create-deals` and report *every* problem in readable form
  (`dealName: must be 1-255 characters after trimming`);
- `deal_values(deal, ...)` turns a valid deal into the values of its ERP record (checked
  against the entity's fields and converted by `prometei.erp.records.RecordWriter`);
- `deal_event`, `batch_event`, `fanout_events` build the events (with deterministic ids, so a
  repeated send is dropped by Inngest's 24 h event-id dedupe);
- `send_deals(deals, batch=..., dry_run=...)` is the helper internal systems and the CLI call.

Payload of one deal (JSON keys):

    {"dealName": "Order #1042",       # required, 1-255 characters after trimming
     "amount": 15000.5,               # optional, number or numeric string, >= 0
     "entityId": 70,                  # optional, positive int, default ERP_ENTITY_ID
     "fields": {"field_1041": "x"},   # optional extra ERP fields (of that entity)
     "externalId": "shop-1042"}       # optional; a resend with it updates the record
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prometei.config import ERP_FIELD_RE
from prometei.erp.values import SourceValue
from prometei.errors import ConfigError, InputError, PrometeiError

if TYPE_CHECKING:
    from prometei.config import Settings

CREATE_DEAL_EVENT = "crm/create-deal"
TASK_CREATE_EVENT = "erp/task.create"
BATCH_EVENT = "crm/batch-create-deals"

DEFAULT_NAME_FIELD = "field_1039"
DEFAULT_PRICE_FIELD = "field_1040"
MAX_NAME = 255
MAX_BATCH = 1000
MAX_EXTRA_FIELDS = 30
MAX_FIELD_VALUE = 4000
MAX_AMOUNT_DIGITS = 15
# Fan-out chunks: events per event-API request, and a byte ceiling well under Inngest's
# smallest per-request limit (256 KiB on the free plan).
SEND_CHUNK = 100
SEND_CHUNK_BYTES = 200_000
MAX_EVENT_BYTES = 256 * 1024
# Rukovoditel does not escape values of unique fields (rukovoditel-live.md U3): a quote in
# an external id could break the ERP's SQL, so ids are restricted to a safe alphabet.
_EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/#-]{0,254}$")
_AMOUNT_RE = re.compile(r"^\d+(?:[.,]\d+)?$")
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")

_NAME_RULE = f"must be 1\u2013{MAX_NAME} characters after trimming"
_EXTERNAL_ID_RULE = (
    "must be 1\u2013255 characters: letters, digits and . _ : @ / # - (no spaces or quotes), "
    "starting with a letter or digit"
)
_AMOUNT_RULE = 'must be a non-negative number or numeric string like 15000 or "15000.50"'


class DealValidationError(InputError):
    """The payload is invalid; `problems` lists every one as `<key>: <what is wrong>`."""

    def __init__(self, problems: list[str], *, what: str = "deal") -> None:
        self.problems = problems
        super().__init__(f"invalid {what}: " + "; ".join(problems))


# ---- models --------------------------------------------------------------------------------
def _decimal_from_text(value: str) -> Decimal | None:
    text = "".join(value.split())  # "15 000" and thin spaces
    if not text:
        return None
    if text.startswith("-") and _AMOUNT_RE.match(text[1:]):
        raise ValueError(f"must not be negative (got {value!r})")
    if not _AMOUNT_RE.match(text):
        raise ValueError(f"{_AMOUNT_RULE} (got {value!r})")
    return Decimal(text.replace(",", "."))


def _amount_text(value: Any) -> str | None:
    """A normalised decimal string ("15000", "15000.5"); None for absent/empty."""
    if value is None:
        return None
    if isinstance(value, str):
        number = _decimal_from_text(value)
        if number is None:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{_AMOUNT_RULE} (got {value!r})")
        number = Decimal(str(value))
    else:
        raise ValueError(f"{_AMOUNT_RULE} (got {value!r})")
    if number < 0:
        raise ValueError(f"must not be negative (got {value!r})")
    if number >= Decimal(10) ** MAX_AMOUNT_DIGITS:
        raise ValueError(f"is too large (at most {MAX_AMOUNT_DIGITS} digits before the point)")
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def _field_value(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"fields.{key}: value must be a string or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"fields.{key}: value must be a finite number")
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_FIELD_VALUE:
        raise ValueError(f"fields.{key}: value must be at most {MAX_FIELD_VALUE} characters")
    return text


class DealPayload(BaseModel):
    """One validated deal. Build it with `parse_deal`; `to_data()` gives the event data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deal_name: str = Field(alias="dealName")
    amount: str | None = None
    entity_id: int | None = Field(None, alias="entityId")
    fields: dict[str, str] = Field(default_factory=dict)
    external_id: str | None = Field(None, alias="externalId")
    # Set by batch-create-crm-deals on the events it fans out (where a deal came from).
    batch_id: str | None = Field(None, alias="batchId")
    batch_index: int | None = Field(None, alias="batchIndex")

    @field_validator("deal_name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string ({_NAME_RULE})")
        name = value.strip()
        if not 1 <= len(name) <= MAX_NAME:
            raise ValueError(_NAME_RULE)
        return name

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> str | None:
        return _amount_text(value)

    @field_validator("entity_id", mode="before")
    @classmethod
    def _entity(cls, value: Any) -> int | None:
        if value is None:
            return None
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().isdigit():
            number = int(value.strip())
        if number is None or number <= 0:
            raise ValueError(f"must be a positive integer (got {value!r})")
        return number

    @field_validator("fields", mode="before")
    @classmethod
    def _fields(cls, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError('must be an object like {"field_1041": "value"}')
        if len(value) > MAX_EXTRA_FIELDS:
            raise ValueError(f"at most {MAX_EXTRA_FIELDS} extra fields")
        problems, out = [], {}
        for key, item in value.items():
            if not isinstance(key, str) or not ERP_FIELD_RE.match(key):
                problems.append(f"fields.{key}: key must look like field_1041")
                continue
            try:
                out[key] = _field_value(key, item)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            # One ValueError for the key; `_problems` splits it back into lines.
            raise ValueError("\n".join(problems))
        return out

    @field_validator("external_id", mode="before")
    @classmethod
    def _external(cls, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _EXTERNAL_ID_RE.match(value.strip()):
            raise ValueError(_EXTERNAL_ID_RULE)
        return value.strip()

    @field_validator("batch_id", mode="before")
    @classmethod
    def _batch_id(cls, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value or len(value) > 255:
            raise ValueError("must be the batch event id (a string)")
        return value

    @field_validator("batch_index", mode="before")
    @classmethod
    def _batch_index(cls, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("must be a non-negative integer")
        return value

    def to_data(self) -> dict[str, Any]:
        """The event data for this deal (JSON keys, nothing empty)."""
        data = self.model_dump(by_alias=True, exclude_none=True)
        if not data.get("fields"):
            data.pop("fields", None)
        return data


_ALLOWED_KEYS = "dealName, amount, entityId, fields, externalId"


class BatchPayload(BaseModel):
    """The data of `crm/batch-create-deals`: `{"deals": [...]}`, 1-1000 items.

    Items stay raw here: each one is checked on its own by `parse_batch`, so one bad deal
    does not stop the others."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deals: list[Any]

    @field_validator("deals", mode="before")
    @classmethod
    def _deals(cls, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError(f"must be a list of 1\u2013{MAX_BATCH} deal objects")
        if not value:
            raise ValueError("must hold at least one deal")
        if len(value) > MAX_BATCH:
            raise ValueError(
                f"must hold at most {MAX_BATCH} deals (got {len(value)}); split larger batches"
            )
        return value


def _problems(exc: ValidationError, prefix: str, allowed: str) -> list[str]:
    """Pydantic errors as `<prefix><key>: <message>` lines, in the order of the keys."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error.get("loc") or ()) or "data"
        kind = error.get("type")
        if kind == "missing" and loc == "dealName":
            message = f"is required (the deal's name, {_NAME_RULE.removeprefix('must be ')})"
        elif kind == "missing":
            message = "is required"
        elif kind == "extra_forbidden":
            message = f"unknown key (allowed: {allowed})"
        else:
            message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        for part in message.split("\n"):
            # `fields` problems already name their key (fields.field_1041: ...).
            if loc == "fields" and part.startswith("fields."):
                lines.append(f"{prefix}{part}")
            else:
                lines.append(f"{prefix}{loc}: {part}")
    return lines


def _public(data: Mapping[str, Any]) -> dict[str, Any]:
    # Keys starting with "_" are Inngest's (e.g. `_inngest` on invoked events), not ours.
    return {key: value for key, value in data.items() if not str(key).startswith("_")}


def conflicts(deal: DealPayload, settings: Settings, prefix: str = "") -> list[str]:
    """Problems that depend on the configuration: extra fields that would overwrite the
    name, the amount or the external-id lookup field of ERP_ENTITY_ID. (Deals for another
    entity are checked against that entity's fields when they are written.)"""
    if entity_of(deal, settings) != settings.erp_entity_id:
        return []
    name_field, price_field = erp_fields(settings)
    reserved = {name_field: "dealName", price_field: "amount"}
    if settings.erp_lead_id_field:
        reserved[f"field_{settings.erp_lead_id_field}"] = "externalId (ERP_LEAD_ID_FIELD)"
    return [
        f"{prefix}fields.{key}: is set from {reserved[key]}; remove it from fields"
        for key in deal.fields
        if key in reserved
    ]


def parse_deal(data: Any, *, settings: Settings | None = None, prefix: str = "") -> DealPayload:
    """Validate one deal's data; raise `DealValidationError` listing every problem."""
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "data"
        raise DealValidationError(
            [f'{where}: must be a JSON object like {{"dealName": "Order #1042"}}']
        )
    try:
        deal = DealPayload.model_validate(_public(data))
    except ValidationError as exc:
        raise DealValidationError(_problems(exc, prefix, _ALLOWED_KEYS)) from None
    problems = conflicts(deal, settings, prefix) if settings is not None else []
    if problems:
        raise DealValidationError(problems)
    return deal


@dataclass(frozen=True)
class BatchCheck:
    """`parse_batch`'s answer: the valid deals by index, and the problems of the rest."""

    total: int
    valid: list[tuple[int, DealPayload]]
    invalid: list[tuple[int, list[str]]]

    @property
    def problems(self) -> list[str]:
        return [line for _, lines in self.invalid for line in lines]


def parse_batch(data: Any, *, settings: Settings | None = None) -> BatchCheck:
    """Validate `{"deals": [...]}`. A bad container raises `DealValidationError`; bad items
    are reported in `BatchCheck.invalid` and the valid ones kept."""
    if not isinstance(data, Mapping):
        raise DealValidationError(
            ['data: must be a JSON object like {"deals": [{"dealName": "..."}]}'], what="batch"
        )
    try:
        batch = BatchPayload.model_validate(_public(data))
    except ValidationError as exc:
        raise DealValidationError(_problems(exc, "", "deals"), what="batch") from None
    valid: list[tuple[int, DealPayload]] = []
    invalid: list[tuple[int, list[str]]] = []
    # Two deals with one externalId would race for one record (both runs may miss the
    # lookup and insert): the later one is reported instead.
    first_use: dict[str, int] = {}
    for index, item in enumerate(batch.deals):
        try:
            deal = parse_deal(item, settings=settings, prefix=f"deals[{index}].")
        except DealValidationError as exc:
            invalid.append((index, exc.problems))
            continue
        if deal.external_id is not None and deal.external_id in first_use:
            earlier = first_use[deal.external_id]
            invalid.append(
                (
                    index,
                    [
                        f"deals[{index}].externalId: {deal.external_id!r} is already used by "
                        f"deals[{earlier}] in this batch"
                    ],
                )
            )
            continue
        if deal.external_id is not None:
            first_use[deal.external_id] = index
        valid.append((index, deal))
    return BatchCheck(total=len(batch.deals), valid=valid, invalid=invalid)


# ---- ERP items -----------------------------------------------------------------------------
def erp_fields(settings: Settings) -> tuple[str, str]:
    """The ERP fields for the deal name and amount: ERP_FIELD_MAP's keys for `name` and
    `price` when the map has them, else field_1039 / field_1040."""
    by_attribute = {attribute: key for key, attribute in settings.erp_field_map.items()}
    return (
        by_attribute.get("name", DEFAULT_NAME_FIELD),
        by_attribute.get("price", DEFAULT_PRICE_FIELD),
    )


def deal_values(
    deal: DealPayload, *, name_field: str, price_field: str | None, entity_id: int
) -> list[SourceValue]:
    """The values of a deal's record: the name, the amount (left out when empty or 0, as the
    seeds did), then the extra fields. `price_field` None means the entity has no configured
    amount field (an `entityId` other than ERP_ENTITY_ID): an amount is then refused rather
    than dropped. The external-id field is added by `RecordWriter`."""
    values = [
        SourceValue(name_field, f"dealName -> {name_field}", "text", deal.deal_name),
    ]
    amount = Decimal(deal.amount) if deal.amount is not None else None
    if amount is not None and amount != 0:
        if price_field is None:
            raise DealValidationError(
                [
                    f"amount: entity {entity_id} is not ERP_ENTITY_ID, so it has no amount "
                    "field; give the amount in fields as field_<id> of that entity "
                    f"(`python -m prometei erp fields --entity {entity_id}` lists them)"
                ]
            )
        values.append(SourceValue(price_field, f"amount -> {price_field}", "number", amount))
    taken = {value.key for value in values}
    for key, value in deal.fields.items():
        if key in taken:
            raise DealValidationError([f"fields.{key}: is set from dealName; remove it"])
        values.append(SourceValue(key, f"fields.{key}", "any", value, origin="input"))
    return values


def entity_of(deal: DealPayload, settings: Settings) -> int:
    return deal.entity_id or settings.erp_entity_id


# ---- events --------------------------------------------------------------------------------
def _digest(value: Any, size: int = 24) -> str:
    raw = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:size]


def fanout_event_id(batch_id: str, index: int) -> str:
    """The id of the `crm/create-deal` event for deal `index` of batch event `batch_id`."""
    return f"{batch_id}-{index}"


def derived_external_id(batch_id: str, index: int) -> str:
    """The externalId a batch gives a deal that has none: stable for the batch and index,
    so with ERP_LEAD_ID_FIELD even a retry after a lost insert answer updates."""
    candidate = f"{batch_id}-{index}"
    if _EXTERNAL_ID_RE.match(candidate):
        return candidate
    return f"b{_digest(batch_id, 24)}-{index}"


def deal_event(
    deal: DealPayload, *, event_id: str | None = None, name: str = CREATE_DEAL_EVENT
) -> dict[str, Any]:
    """One `crm/create-deal` (or `erp/task.create`) event in the event API's JSON shape."""
    event: dict[str, Any] = {"name": name, "data": deal.to_data()}
    if event_id:
        event["id"] = event_id
    return event


def batch_event(deals: Sequence[DealPayload], *, event_id: str | None = None) -> dict[str, Any]:
    """One `crm/batch-create-deals` event holding `deals`."""
    event: dict[str, Any] = {"name": BATCH_EVENT, "data": {"deals": [d.to_data() for d in deals]}}
    if event_id:
        event["id"] = event_id
    return event


def fanout_events(batch_id: str, deals: Sequence[tuple[int, DealPayload]]) -> list[dict[str, Any]]:
    """The per-deal events of a batch: id `<batch id>-<index>`, an externalId (the deal's own
    or a derived one) and the batch id/index, so every deal is its own durable run."""
    events = []
    for index, deal in deals:
        data = deal.to_data()
        data.setdefault("externalId", derived_external_id(batch_id, index))
        data["batchId"] = batch_id
        data["batchIndex"] = index
        events.append(
            {"name": CREATE_DEAL_EVENT, "data": data, "id": fanout_event_id(batch_id, index)}
        )
    return events


def event_size(event: Mapping[str, Any]) -> int:
    return len(json.dumps(event, ensure_ascii=False).encode("utf-8"))


def chunk_events(
    events: Sequence[dict[str, Any]],
    *,
    max_count: int = SEND_CHUNK,
    max_bytes: int = SEND_CHUNK_BYTES,
) -> list[list[dict[str, Any]]]:
    """Split events into event-API requests of at most `max_count` events and about
    `max_bytes` bytes. Deterministic: the same events always give the same chunks."""
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for event in events:
        grow = event_size(event) + 1
        if current and (len(current) >= max_count or size + grow > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(event)
        size += grow
    if current:
        chunks.append(current)
    return chunks


# ---- the send helper -----------------------------------------------------------------------
class EventSink(Protocol):
    """Anything that posts events to Inngest and returns their ids (`prometei.events`)."""

    def send(self, events: list[dict[str, Any]]) -> list[str]: ...


@dataclass
class SendReport:
    """What `send_deals` did. `status`: "validated" (dry run), "sent", "invalid" (nothing
    was sent) or "failed" (the event API refused or was unreachable; `event_ids` holds what
    got through before that; sending again is safe, the ids are deterministic)."""

    mode: Literal["single", "batch"]
    dry_run: bool
    total: int
    problems: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None

    @property
    def status(self) -> Literal["validated", "sent", "invalid", "failed"]:
        if self.problems:
            return "invalid"
        if self.error is not None:
            return "failed"
        return "validated" if self.dry_run else "sent"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "deals": self.total,
            "events": len(self.events),
            "event_ids": list(self.event_ids),
            "planned_event_ids": [e.get("id") for e in self.events],
            "problems": list(self.problems),
            "error": self.error,
        }


def _coerce(deal: DealPayload | Mapping[str, Any]) -> Any:
    return deal.to_data() if isinstance(deal, DealPayload) else deal


def _check_for_send(
    raw: list[Any], *, batch: bool, settings: Settings
) -> tuple[list[DealPayload], list[str]]:
    """The valid deals and every problem; the helper sends nothing unless problems is empty."""
    if batch:
        try:
            check = parse_batch({"deals": raw}, settings=settings)
        except DealValidationError as exc:
            return [], exc.problems
        return [deal for _, deal in check.valid], check.problems
    if not raw:
        return [], ["deals: nothing to send (give at least one deal)"]
    valid: list[DealPayload] = []
    problems: list[str] = []
    for index, item in enumerate(raw):
        prefix = f"deals[{index}]." if len(raw) > 1 else ""
        try:
            valid.append(parse_deal(item, settings=settings, prefix=prefix))
        except DealValidationError as exc:
            problems.extend(exc.problems)
    return valid, problems


def _plan_events(
    valid: list[DealPayload], *, batch: bool, seed: str, event_name: str
) -> tuple[list[dict[str, Any]], list[str]]:
    if not batch:
        events = [
            deal_event(deal, event_id=f"prometei-deal-{seed}-{i}", name=event_name)
            for i, deal in enumerate(valid)
        ]
        return events, []
    event = batch_event(valid, event_id=f"prometei-batch-{seed}")
    size = event_size(event)
    if size > MAX_EVENT_BYTES:
        return [], [
            f"deals: the batch event is {size // 1024} KiB; Inngest accepts "
            f"{MAX_EVENT_BYTES // 1024} KiB per event on the free plan: split the batch"
        ]
    return [event], []


def send_deals(
    deals: Sequence[DealPayload | Mapping[str, Any]],
    *,
    batch: bool,
    dry_run: bool,
    sender: EventSink | None = None,
    key: str | None = None,
    event_name: str = CREATE_DEAL_EVENT,
    settings: Settings | None = None,
) -> SendReport:
    """Validate deals and send them to Inngest; the entry point for other internal systems.

    `batch=False` sends one `crm/create-deal` (or `event_name`) event per deal; `batch=True`
    sends one `crm/batch-create-deals` event (at most 1000 deals). Nothing is sent when any
    deal is invalid, or with `dry_run=True`. Event ids are derived from `key`, or from the
    content when no key is given: sending the same thing again within 24 h is dropped by
    Inngest, so a retry after a network error never doubles a deal. Pass a new `key` to send
    the same content again on purpose. `sender` defaults to `get_services().events`.
    A send failure is reported (`status == "failed"`); a `ConfigError` (no event key) raises.
    """
    if event_name not in (CREATE_DEAL_EVENT, TASK_CREATE_EVENT):
        raise ValueError(f"event_name must be {CREATE_DEAL_EVENT} or {TASK_CREATE_EVENT}")
    report = SendReport(mode="batch" if batch else "single", dry_run=dry_run, total=len(deals))
    if key is not None and not _KEY_RE.match(key):
        report.problems.append(
            "key: must be 1\u2013100 characters: letters, digits and . _ : - (no spaces)"
        )
        return report
    if settings is None:
        from prometei.services import get_services

        settings = get_services().settings
    valid, problems = _check_for_send([_coerce(d) for d in deals], batch=batch, settings=settings)
    if not problems:
        seed = key or _digest([report.mode, event_name, [d.to_data() for d in valid]])
        report.events, problems = _plan_events(valid, batch=batch, seed=seed, event_name=event_name)
    report.problems.extend(problems)
    if report.problems or dry_run:
        return report

    if sender is None:
        from prometei.services import get_services

        sender = get_services().events
    for chunk in chunk_events(report.events):
        try:
            report.event_ids.extend(sender.send(chunk))
        except ConfigError:
            raise  # e.g. no INNGEST_EVENT_KEY: the caller's setup, not a send failure
        except PrometeiError as exc:
            report.error = exc.message
            break
    return report
