"""lead_to_items: ERP_FIELD_MAP applied to a lead snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from prometei.amocrm.models import LeadSnapshot
from prometei.config import DEFAULT_FIELD_MAP
from prometei.erp.mapping import INPUT_MAX_LENGTH, lead_to_items


def lead(**fields: Any) -> LeadSnapshot:
    return LeadSnapshot(**{"id": 31234567, "name": "Заказ #1042", **fields})


def test_default_map_gives_strings() -> None:
    items = lead_to_items(lead(price=150000.0), DEFAULT_FIELD_MAP)
    assert items == {"field_1039": "Заказ #1042", "field_1040": "150000"}


@pytest.mark.parametrize("price", [None, 0.0], ids=["empty", "zero"])
def test_price_left_out_when_empty_or_zero(price: float | None) -> None:
    assert lead_to_items(lead(price=price), DEFAULT_FIELD_MAP) == {"field_1039": "Заказ #1042"}


def test_fractional_price_kept() -> None:
    assert lead_to_items(lead(price=1500.5), DEFAULT_FIELD_MAP)["field_1040"] == "1500.5"


def test_custom_fields_and_numbers() -> None:
    field_map = {"field_1050": "cf:66339", "field_1051": "cf:1", "field_1052": "status_id"}
    snapshot = lead(custom_fields={"66339": ["Москва", "Тверь"]}, status_id=142)
    # cf:1 is not on the lead: left out rather than written as "".
    assert lead_to_items(snapshot, field_map) == {
        "field_1050": "Москва, Тверь",
        "field_1052": "142",
    }


def test_long_text_is_cut_to_the_input_field_length() -> None:
    name = "Ж" * 300
    value = lead_to_items(lead(name=name), {"field_1039": "name"})["field_1039"]
    assert INPUT_MAX_LENGTH == 255
    assert value == "Ж" * 255
