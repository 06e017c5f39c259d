"""The lead as the rest of the pipeline sees it: a small, JSON-safe snapshot of API v4 data.

`fetch-lead-data` returns `LeadSnapshot.model_dump(mode="json")` as its step output (Inngest
stores it), so it holds business data only: never a token, never a credential.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, Field

# What kind of value a source gives, so the ERP side can check it against a field's type.
SourceKind = Literal["text", "number", "id", "timestamp", "any"]
# Where a source's value comes from: the lead itself, or one extra read per lead.
SourceOrigin = Literal["lead", "contact", "company", "pipelines"]


@dataclass(frozen=True)
class LeadSource:
    kind: SourceKind
    origin: SourceOrigin = "lead"


# Every name ERP_FIELD_MAP may use on its right-hand side (custom fields are `cf:<id>`, kind
# "any"). `contact_*` read the lead's main contact (one extra amoCRM request per lead),
# `company_name` its company (one more), `pipeline_name`/`status_name` the account's pipelines
# (cached; no request in the steady state).
LEAD_SOURCES: dict[str, LeadSource] = {
    "id": LeadSource("id"),
    "name": LeadSource("text"),
    "price": LeadSource("number"),
    "status_id": LeadSource("id"),
    "pipeline_id": LeadSource("id"),
    "responsible_user_id": LeadSource("id"),
    "created_by": LeadSource("id"),
    "updated_by": LeadSource("id"),
    "created_at": LeadSource("timestamp"),
    "updated_at": LeadSource("timestamp"),
    "closed_at": LeadSource("timestamp"),
    "account_id": LeadSource("id"),
    "main_contact_id": LeadSource("id"),
    "company_id": LeadSource("id"),
    "contact_name": LeadSource("text", "contact"),
    "contact_phone": LeadSource("text", "contact"),
    "contact_email": LeadSource("text", "contact"),
    "company_name": LeadSource("text", "company"),
    "pipeline_name": LeadSource("text", "pipelines"),
    "status_name": LeadSource("text", "pipelines"),
}
CUSTOM_SOURCE = LeadSource("any")


# amoCRM custom field types (`type` of GET /api/v4/leads/custom_fields/{id}, reference
# amocrm.md 3.3) -> the kind of value a lead gives for them. Other types (address, legal
# entity, items, files...) give "any": nothing is known about their text.
CUSTOM_FIELD_KINDS: dict[str, SourceKind] = {
    **dict.fromkeys(
        ("text", "textarea", "url", "select", "radiobutton", "multiselect", "checkbox"), "text"
    ),
    **dict.fromkeys(("numeric", "price", "monetary"), "number"),
    **dict.fromkeys(("date", "date_time", "birthday"), "timestamp"),
}


def custom_field_kind(field_type: str) -> SourceKind:
    """The kind of value an amoCRM custom field of `field_type` gives ("any" when unknown)."""
    return CUSTOM_FIELD_KINDS.get(field_type, "any")


def source_of(name: str) -> LeadSource | None:
    """The catalogue entry for an ERP_FIELD_MAP value (`name`, `cf:66339`...), or None."""
    if name.startswith("cf:") and name[3:].isdigit():
        return CUSTOM_SOURCE
    return LEAD_SOURCES.get(name)


def origins_needed(field_map: dict[str, str]) -> set[SourceOrigin]:
    """The extra reads a field map asks for (`contact`, `company`, `pipelines`)."""
    return {s.origin for s in map(source_of, field_map.values()) if s and s.origin != "lead"}


def _decimal_or_none(value: Any) -> Decimal | None:
    """amoCRM's price as an exact decimal. JSON integers arrive as Python ints (exact at any
    size); a float is taken by its shortest repr, never through binary arithmetic."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


class LeadSnapshot(BaseModel):
    id: int
    name: str = ""
    # Decimal, never float: a float loses digits past 2**53 and prints 1e300 as 301 digits.
    price: Decimal | None = None
    status_id: int | None = None
    pipeline_id: int | None = None
    responsible_user_id: int | None = None
    created_by: int | None = None
    updated_by: int | None = None
    created_at: int | None = None
    updated_at: int | None = None
    closed_at: int | None = None
    account_id: int | None = None
    is_deleted: bool = False
    main_contact_id: int | None = None
    contact_ids: list[int] = Field(default_factory=list)
    company_id: int | None = None
    # Filled by `prometei.amocrm.enrich` only when ERP_FIELD_MAP asks for them.
    contact_name: str | None = None
    contact_phone: str | None = None
    contact_email: str | None = None
    company_name: str | None = None
    pipeline_name: str | None = None
    status_name: str | None = None
    # custom field id (as a string: JSON object keys are strings) -> its values as text
    custom_fields: dict[str, list[str]] = Field(default_factory=dict)

    @classmethod
    def from_api(cls, payload: dict[str, Any]) -> LeadSnapshot:
        """Build from a `GET /api/v4/leads/{id}?with=contacts` body."""
        custom: dict[str, list[str]] = {}
        for field in payload.get("custom_fields_values") or []:
            if not isinstance(field, dict) or _int_or_none(field.get("field_id")) is None:
                continue
            values = []
            for item in field.get("values") or []:
                value = item.get("value") if isinstance(item, dict) else item
                if value is not None:
                    values.append(str(value))
            custom[str(field["field_id"])] = values
        contacts = ((payload.get("_embedded") or {}).get("contacts")) or []
        contact_ids = [
            c["id"] for c in contacts if isinstance(c, dict) and _int_or_none(c.get("id"))
        ]
        main = next(
            (c["id"] for c in contacts if isinstance(c, dict) and c.get("is_main")),
            contact_ids[0] if contact_ids else None,
        )
        companies = ((payload.get("_embedded") or {}).get("companies")) or []
        company_id = next(
            (_int_or_none(c.get("id")) for c in companies if isinstance(c, dict)), None
        )
        return cls(
            id=int(payload["id"]),
            name=str(payload.get("name") or ""),
            price=_decimal_or_none(payload.get("price")),
            status_id=_int_or_none(payload.get("status_id")),
            pipeline_id=_int_or_none(payload.get("pipeline_id")),
            responsible_user_id=_int_or_none(payload.get("responsible_user_id")),
            created_by=_int_or_none(payload.get("created_by")),
            updated_by=_int_or_none(payload.get("updated_by")),
            created_at=_int_or_none(payload.get("created_at")),
            updated_at=_int_or_none(payload.get("updated_at")),
            closed_at=_int_or_none(payload.get("closed_at")),
            account_id=_int_or_none(payload.get("account_id")),
            is_deleted=bool(payload.get("is_deleted", False)),
            main_contact_id=main,
            contact_ids=contact_ids,
            company_id=company_id,
            custom_fields=custom,
        )

    def value(self, name: str) -> str | Decimal | int | None:
        """The value ERP_FIELD_MAP asks for (`name`, `price`, `cf:123`...), typed, or None.
        A custom field with several values gives them joined by ", "."""
        if name.startswith("cf:"):
            values = self.custom_fields.get(name[3:])
            return ", ".join(values) if values else None
        if name not in LEAD_SOURCES:
            return None
        value = getattr(self, name, None)
        return value if isinstance(value, str | Decimal | int) else None

    def matches(self, trigger_statuses: tuple[tuple[int, int], ...]) -> bool:
        """True when the lead sits in one of the configured stages (empty list = any stage)."""
        if not trigger_statuses:
            return True
        return (self.pipeline_id, self.status_id) in {(p, s) for p, s in trigger_statuses}
