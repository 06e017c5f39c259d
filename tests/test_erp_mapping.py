"""ERP_FIELD_MAP's sources: the lead snapshot (exact prices), the values it gives the ERP
writer, and the extra amoCRM reads (contact, company, pipeline names) done only when asked."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import responses

from prometei.amocrm.enrich import PipelineNames, contact_details, enrich
from prometei.amocrm.models import (
    LEAD_SOURCES,
    LeadSnapshot,
    custom_field_kind,
    origins_needed,
    source_of,
)
from prometei.config import DEFAULT_FIELD_MAP, LEAD_ATTRIBUTES
from prometei.erp.mapping import lead_values
from prometei.erp.schema import ErpField, parse_choices
from prometei.erp.values import ValueProblem, choice_id, compatibility, text_of
from tests.conftest import AMO_BASE
from tests.fixtures.amocrm_api import pipelines_body


def lead(**fields: Any) -> LeadSnapshot:
    return LeadSnapshot(**{"id": 31234567, "name": "Заказ #1042", **fields})


def written(snapshot: LeadSnapshot, field_map: dict[str, str]) -> dict[str, str]:
    return {v.key: text_of(v.value) for v in lead_values(snapshot, field_map) if not v.is_empty()}


def test_default_map_gives_name_and_price_with_their_kinds() -> None:
    values = lead_values(lead(price=Decimal(150000)), DEFAULT_FIELD_MAP)
    assert [(v.key, v.kind, v.value) for v in values] == [
        ("field_1039", "text", "Заказ #1042"),
        ("field_1040", "number", Decimal(150000)),
    ]
    assert values[0].label == "ERP_FIELD_MAP field_1039 <- name"


@pytest.mark.parametrize("price", [None, Decimal(0), Decimal("0.00")], ids=["none", "0", "0.00"])
def test_price_left_out_when_empty_or_zero(price: Decimal | None) -> None:
    assert written(lead(price=price), DEFAULT_FIELD_MAP) == {"field_1039": "Заказ #1042"}


def test_custom_fields_and_ids() -> None:
    field_map = {"field_1050": "cf:66339", "field_1051": "cf:1", "field_1052": "status_id"}
    snapshot = lead(custom_fields={"66339": ["Москва", "Тверь"]}, status_id=142)
    # cf:1 is not on the lead: left out rather than written as "".
    assert written(snapshot, field_map) == {"field_1050": "Москва, Тверь", "field_1052": "142"}
    kinds = {v.key: v.kind for v in lead_values(snapshot, field_map)}
    assert kinds == {"field_1050": "any", "field_1051": "any", "field_1052": "id"}


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        (2**60 + 1, Decimal("1152921504606846977")),  # past 2**53: a float would lose it
        (1500.5, Decimal("1500.5")),
        (1e300, Decimal("1E+300")),
        ("15000", Decimal(15000)),
        (True, None),
        (None, None),
        ("abc", None),
    ],
)
def test_lead_price_is_an_exact_decimal(price: Any, expected: Decimal | None) -> None:
    snapshot = LeadSnapshot.from_api({"id": 1, "price": price})
    assert snapshot.price == expected
    # the step output (JSON) brings every digit back
    again = LeadSnapshot.model_validate(snapshot.model_dump(mode="json"))
    assert again.price == expected


def test_company_id_comes_from_the_embedded_companies() -> None:
    snapshot = LeadSnapshot.from_api(
        {"id": 1, "_embedded": {"companies": [{"id": 10971463}], "contacts": []}}
    )
    assert snapshot.company_id == 10971463


def test_every_source_config_accepts_is_in_the_catalogue() -> None:
    assert set(LEAD_ATTRIBUTES) == set(LEAD_SOURCES)


def test_origins_needed_follows_the_map() -> None:
    assert origins_needed(DEFAULT_FIELD_MAP) == set()
    assert origins_needed({"field_1": "contact_phone", "field_2": "cf:7"}) == {"contact"}
    assert origins_needed(
        {"field_1": "company_name", "field_2": "status_name", "field_3": "contact_name"}
    ) == {"company", "pipelines", "contact"}


@pytest.mark.parametrize(
    ("amo_type", "kind"),
    [
        ("numeric", "number"),
        ("price", "number"),
        ("date", "timestamp"),
        ("date_time", "timestamp"),
        ("birthday", "timestamp"),
        ("select", "text"),
        ("text", "text"),
        ("legal_entity", "any"),
    ],
)
def test_an_amocrm_custom_field_type_says_what_kind_of_value_it_gives(amo_type, kind) -> None:
    assert custom_field_kind(amo_type) == kind


DROPDOWN = ErpField(1042, "fieldtype_dropdown", "Статус")


@pytest.mark.parametrize("source", ["status_id", "pipeline_id", "responsible_user_id"])
def test_an_amocrm_id_cannot_fill_a_dropdown(source) -> None:
    found = source_of(source)
    assert found is not None
    problem = compatibility(DROPDOWN, found.kind)
    assert problem is not None and "amoCRM ids are not choice ids" in problem


def choice(cid: int, name: str, active: Any) -> dict[str, Any]:
    row = {"id": str(cid), "parent_id": "0", "fields_id": "1042", "name": name, "level": 0}
    return row if active is None else {**row, "is_active": active}


@pytest.mark.parametrize("inactive", ["0", 0, False])
def test_an_inactive_choice_is_refused_like_an_unknown_one(inactive) -> None:
    choices = parse_choices([choice(68, "Новая", inactive), choice(69, "В работе", "1")])  # noqa: RUF001
    assert [c.id for c in choices] == ["69"]
    for given in ("Новая", "68"):
        with pytest.raises(ValueProblem) as caught:
            choice_id(given, DROPDOWN, choices)
        assert f'{given!r} is not a choice; valid: 69 "В работе"' in str(caught.value)  # noqa: RUF001
    assert choice_id("в работе", DROPDOWN, choices) == "69"


def test_a_choice_without_is_active_counts_as_active() -> None:
    choices = parse_choices([choice(68, "Новая", None), choice(69, "В работе", True)])  # noqa: RUF001
    assert [c.id for c in choices] == ["68", "69"]


# ---- enrichment ---------------------------------------------------------------------------
CONTACT = {
    "id": 5551,
    "name": "Иван Петров",
    "custom_fields_values": [
        {
            "field_id": 1,
            "field_code": "PHONE",
            "values": [{"value": "+7 900 000-00-01", "enum_code": "WORK"}, {"value": "+7 2"}],
        },
        {"field_id": 2, "field_code": "EMAIL", "values": [{"value": "ivan@example.test"}]},
    ],
}
PIPELINES = pipelines_body((142, "Успешно реализовано"), (32392156, "Переговоры"))


def amo_client() -> Any:
    from prometei.amocrm.client import AmoCRMClient

    class Token:
        def access_token(self) -> str:
            return "t"

        def after_unauthorized(self, rejected: str) -> str | None:
            return None

        def account_host(self) -> str:
            return "example.amocrm.ru"

    return AmoCRMClient(Token(), expected_subdomain="example")


def test_contact_details_take_the_name_first_phone_and_email() -> None:
    assert contact_details(CONTACT) == {
        "contact_name": "Иван Петров",
        "contact_phone": "+7 900 000-00-01",
        "contact_email": "ivan@example.test",
    }
    assert contact_details({"first_name": "Анна", "last_name": "К"})["contact_name"] == "Анна К"  # noqa: RUF001


def test_enrich_reads_only_what_the_map_needs(mock: responses.RequestsMock) -> None:
    mock.get(f"{AMO_BASE}/api/v4/contacts/5551", json=CONTACT)
    mock.get(f"{AMO_BASE}/api/v4/companies/77", json={"id": 77, "name": "ООО Ромашка"})  # noqa: RUF001
    mock.get(f"{AMO_BASE}/api/v4/leads/pipelines", json=PIPELINES)
    client = amo_client()
    snapshot = lead(main_contact_id=5551, company_id=77, pipeline_id=7012345, status_id=142)

    only_contact = enrich(snapshot, {"contact"}, client, None)
    assert only_contact.contact_phone == "+7 900 000-00-01" and only_contact.company_name is None
    assert [c.request.url.split("?")[0] for c in mock.calls] == [f"{AMO_BASE}/api/v4/contacts/5551"]

    names = PipelineNames(client)
    full = enrich(snapshot, {"contact", "company", "pipelines"}, client, names)
    assert (full.company_name, full.pipeline_name, full.status_name) == (
        "ООО Ромашка",  # noqa: RUF001
        "Продажи",
        "Успешно реализовано",
    )
    enrich(snapshot, {"pipelines"}, client, names)  # names are cached: no new request
    paths = [c.request.url.split("?")[0].removeprefix(AMO_BASE) for c in mock.calls]
    assert paths.count("/api/v4/leads/pipelines") == 1
    assert len(paths) == 4


def test_pipeline_names_reload_after_their_ttl_or_for_a_new_stage(mock) -> None:
    mock.get(f"{AMO_BASE}/api/v4/leads/pipelines", json=PIPELINES)
    now = [0.0]
    names = PipelineNames(amo_client(), ttl_s=900, clock=lambda: now[0])
    assert names.names(7012345, 32392156) == ("Продажи", "Переговоры")
    now[0] = 100
    assert names.names(7012345, 555) == ("Продажи", None)  # unknown stage: one early re-read
    now[0] = 101
    assert names.names(7012345, 555) == ("Продажи", None)  # ...but not on every lead
    now[0] = 1001
    names.names(7012345, 142)
    assert len(mock.calls) == 3


def test_a_gone_contact_leaves_the_fields_empty(mock) -> None:
    mock.get(f"{AMO_BASE}/api/v4/contacts/5551", status=204)
    snapshot = enrich(lead(main_contact_id=5551), {"contact"}, amo_client(), None)
    assert snapshot.contact_name is None
    assert written(snapshot, {"field_1": "contact_name", "field_2": "name"}) == {
        "field_2": "Заказ #1042"
    }
