"""What amoCRM says about the sources of ERP_FIELD_MAP, for the `erp field map` row of doctor.

Two facts decide whether a lead's value fits its ERP field, and only amoCRM knows them:

- the names `status_name` / `pipeline_name` can take: the stages that start a sync
  (AMOCRM_TRIGGER_STATUSES, or every stage when it is unset) and their pipelines, from the
  cached pipelines list (one request);
- a custom field's type (`cf:<id>`: numeric, date, select...) and, for a list, its values:
  `GET /api/v4/leads/custom_fields/{id}`, one request per custom field that fills a typed
  ERP field (numeric, date, dropdown); a text field takes anything and costs none.

Only doctor asks: runs never pay for these reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometei.amocrm.models import SourceKind, custom_field_kind
from prometei.services import Services

# amoCRM list types whose value is one of the field's `enums` (a multiselect gives several,
# joined, which no single choice carries: not checked against the choices).
SINGLE_CHOICE_TYPES = ("select", "radiobutton")


@dataclass(frozen=True)
class CustomField:
    """An amoCRM lead custom field as doctor needs it."""

    id: int
    name: str
    type: str
    enums: tuple[str, ...] = ()

    @property
    def kind(self) -> SourceKind:
        return custom_field_kind(self.type)

    def describe(self) -> str:
        """`cf:66339 "Источник" (select)`, for messages."""
        return f'cf:{self.id} "{self.name}" ({self.type})'


@dataclass
class AmoSources:
    """Reads amoCRM lazily, each custom field at most once per doctor run; reads raise
    `PrometeiError` (the row turns it into a warning)."""

    services: Services
    _fields: dict[int, CustomField | None] = field(default_factory=dict)

    def expected_labels(self, source_name: str) -> dict[str, str]:
        """The names `status_name` / `pipeline_name` take when a sync runs: name -> where
        amoCRM uses it ("pipeline:status" pairs, or the pipeline id), for messages."""
        pipelines, statuses = self.services.pipelines.listing()
        wanted = set(self.services.settings.amocrm_trigger_statuses)
        pairs = [pair for pair in statuses if not wanted or pair in wanted]
        found: dict[str, list[str]] = {}
        if source_name == "pipeline_name":
            ids = sorted({p for p, _ in pairs}) if wanted else sorted(pipelines)
            for pid in ids:
                if pid in pipelines:
                    found.setdefault(pipelines[pid], []).append(str(pid))
        else:
            for pid, sid in pairs:
                found.setdefault(statuses[(pid, sid)], []).append(f"{pid}:{sid}")
        return {name: ", ".join(where) for name, where in found.items()}

    def custom_field(self, field_id: int) -> CustomField | None:
        """The lead custom field, or None when the account has no such field."""
        if field_id not in self._fields:
            client = self.services.amocrm_housekeeping
            self._fields[field_id] = _custom_field(field_id, client.lead_custom_field(field_id))
        return self._fields[field_id]


def _custom_field(field_id: int, raw: dict[str, Any] | None) -> CustomField | None:
    if not isinstance(raw, dict):
        return None
    enums = raw.get("enums")
    if not isinstance(enums, list):
        enums = []  # amoCRM gives null for fields without a list
    return CustomField(
        id=field_id,
        name=str(raw.get("name") or ""),
        type=str(raw.get("type") or ""),
        enums=tuple(
            str(item["value"]) for item in enums if isinstance(item, dict) and item.get("value")
        ),
    )
