"""amoCRM lead -> Rukovoditel `items` (ERP_FIELD_MAP: ERP field -> lead attribute).

Rules, kept from the TypeScript project where it had one:
- every value is a string (Rukovoditel compares and stores text; ids come back as strings too);
- an attribute the lead does not have (None) is left out, so an update never blanks a field;
- `price` is left out when it is empty or 0 (the seeds did the same: a lead without a budget
  must not overwrite an amount someone typed in the ERP);
- values are cut to 255 characters: input fields are VARCHAR(255), and a longer value is
  either cut by MySQL anyway or, in strict SQL mode, rejects the whole write.
"""

from __future__ import annotations

from prometei.amocrm.models import LeadSnapshot

INPUT_MAX_LENGTH = 255


def lead_to_items(lead: LeadSnapshot, field_map: dict[str, str]) -> dict[str, str]:
    items: dict[str, str] = {}
    for erp_field, attribute in field_map.items():
        value = lead.attribute(attribute)
        if value is None or (attribute == "price" and _is_zero_or_empty(value)):
            continue
        items[erp_field] = value[:INPUT_MAX_LENGTH]
    return items


def _is_zero_or_empty(value: str) -> bool:
    try:
        return float(value.strip() or 0) == 0
    except ValueError:
        return False
