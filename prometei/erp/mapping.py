"""amoCRM lead -> the values ERP_FIELD_MAP asks for (ERP field -> lead source).

Each map entry becomes a `SourceValue`: the ERP key, the lead's value with its kind (text,
number, id, timestamp; `cf:<id>` custom fields are "any"), and a label for messages.
`prometei.erp.records.RecordWriter` checks them against the entity and converts them.

Rules kept from the TypeScript project where it had one:
- an attribute the lead does not have (None, "") is left out, so an update never blanks a field;
- `price` is left out when it is empty or 0 (the seeds did the same: a lead without a budget
  must not overwrite an amount someone typed in the ERP).
"""

from __future__ import annotations

from prometei.amocrm.models import LeadSnapshot, source_of
from prometei.erp.values import SourceValue


def lead_values(lead: LeadSnapshot, field_map: dict[str, str]) -> list[SourceValue]:
    values = []
    for erp_field, attribute in field_map.items():
        source = source_of(attribute)
        if source is None:  # config.py refuses unknown names; keep the type checker honest
            continue
        values.append(
            SourceValue(
                key=erp_field,
                label=f"ERP_FIELD_MAP {erp_field} <- {attribute}",
                kind=source.kind,
                value=lead.value(attribute),
                skip_zero=attribute == "price",
            )
        )
    return values
