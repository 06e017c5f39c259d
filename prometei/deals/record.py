"""A deal's ERP record: which entity and fields it goes to, and the values written there.

`deal_values` gives the values of a valid deal (checked against the entity's fields and
converted by `prometei.erp.records.RecordWriter`); `conflicts` is the part of validation that
depends on this layout (extra fields that would overwrite the name, amount or lookup field).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from prometei.deals.payload import DealPayload, DealValidationError
from prometei.erp.values import SourceValue

if TYPE_CHECKING:
    from prometei.config import Settings

DEFAULT_NAME_FIELD = "field_1039"
DEFAULT_PRICE_FIELD = "field_1040"


def entity_of(deal: DealPayload, settings: Settings) -> int:
    return deal.entity_id or settings.erp_entity_id


def erp_fields(settings: Settings) -> tuple[str, str]:
    """The ERP fields for the deal name and amount: ERP_FIELD_MAP's keys for `name` and
    `price` when the map has them, else field_1039 / field_1040."""
    by_attribute = {attribute: key for key, attribute in settings.erp_field_map.items()}
    return (
        by_attribute.get("name", DEFAULT_NAME_FIELD),
        by_attribute.get("price", DEFAULT_PRICE_FIELD),
    )


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
