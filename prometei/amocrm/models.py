"""The lead as the rest of the pipeline sees it: a small, JSON-safe snapshot of API v4 data.

`fetch-lead-data` returns `LeadSnapshot.model_dump(mode="json")` as its step output (Inngest
stores it), so it holds business data only: never a token, never a credential.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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
    price: float | None = None
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
        price = payload.get("price")
        return cls(
            id=int(payload["id"]),
            name=str(payload.get("name") or ""),
            price=float(price)
            if isinstance(price, int | float) and not isinstance(price, bool)
            else None,
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
            custom_fields=custom,
        )

    def attribute(self, name: str) -> str | None:
        """The text value ERP_FIELD_MAP asks for (`name`, `price`, `cf:123`...), or None."""
        if name.startswith("cf:"):
            values = self.custom_fields.get(name[3:])
            return ", ".join(values) if values else None
        value = getattr(self, name, None)
        if value is None:
            return None
        if isinstance(value, float):
            return str(int(value)) if value.is_integer() else repr(value)
        return str(value)

    def matches(self, trigger_statuses: tuple[tuple[int, int], ...]) -> bool:
        """True when the lead sits in one of the configured stages (empty list = any stage)."""
        if not trigger_statuses:
            return True
        return (self.pipeline_id, self.status_id) in {(p, s) for p, s in trigger_statuses}
