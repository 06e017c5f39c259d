"""The fake Rukovoditel answers like the live 3.6.2 server (reference/rukovoditel-live.md).

Each test sends the request a row of the reference sent, through `handle_body` (what the e2e
tier serves over HTTP), and checks the answer the reference recorded. If the fake drifted from
the reference, the writer's own tests could pass against a server that does not exist.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.fakes.rukovoditel import FakeRukovoditel

CREDENTIALS = {"key": "k", "username": "u", "password": "p"}


def call(fake: FakeRukovoditel, **params: Any) -> tuple[int, Any]:
    status, headers, body = fake.handle_body(
        json.dumps({**CREDENTIALS, **params}).encode(), "application/json"
    )
    assert headers["Content-Type"].startswith("text/html")  # never application/json
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


@pytest.fixture
def fake() -> FakeRukovoditel:
    return FakeRukovoditel("https://erp.example.test/api/rest.php")


def insert(fake: FakeRukovoditel, entity: int = 25, **items: str) -> str:
    status, answer = call(fake, action="insert", entity_id=entity, items=items)
    assert status == 200, answer
    return str(answer["data"]["id"])


def test_t1_entity_fields_describe_every_field_as_strings(fake) -> None:
    status, answer = call(fake, action="get_entity_fields", entity_id=25)
    assert status == 200 and answer["status"] == "success"
    fields = answer["data"]
    assert fields["213"]["type"] == "fieldtype_input" and fields["213"]["is_heading"] == "1"
    assert json.loads(fields["214"]["configuration"]) == {"number_format": "2/./*"}
    types = {f["type"] for f in fields.values()}
    assert {"fieldtype_id", "fieldtype_date_added", "fieldtype_created_by"} <= types
    assert all(isinstance(v, str) for f in fields.values() for v in f.values())


def test_t2_t6_errors_of_the_schema_actions(fake) -> None:
    assert call(fake, action="get_entity_fields", entity_id=9999) == (
        500,
        {"status": "error", "error_code": 500, "error_message": "Entity #9999 does not exist"},
    )
    status, answer = call(fake, action="get_field_choices", field_id=216)
    assert (status, answer["error_message"]) == (500, "entity_id is required")
    status, answer = call(fake, action="get_field_choices", entity_id=25, field_id=9999)
    assert answer["error_message"] == "Field #9999 does not exist in Entity #25"


def test_t3_t5_choices_are_a_flat_list_and_empty_for_text(fake) -> None:
    _, answer = call(fake, action="get_field_choices", entity_id=25, field_id=216)
    assert [(c["id"], c["name"], c["level"]) for c in answer["data"]] == [
        ("68", "Новая", 0),
        ("69", "В работе", 0),  # noqa: RUF001
    ]
    assert call(fake, action="get_field_choices", entity_id=25, field_id=213)[1]["data"] == []


def test_choices_are_for_administrators_only(fake) -> None:
    fake.admin = False
    assert call(fake, action="get_field_choices", entity_id=25, field_id=216) == (500, "")


def test_an_extension_before_3_4_has_no_schema_actions(fake) -> None:
    fake.legacy = True
    status, answer = call(fake, action="get_entity_fields", entity_id=25)
    assert (status, answer["error_message"]) == (500, 'action "get_entity_fields" not exist')


def test_t8_34_update_drops_unknown_data_keys_and_answers_success(fake) -> None:
    record = insert(fake, field_213="x")
    status, answer = call(
        fake,
        action="update",
        entity_id=25,
        update_by_field={"id": record},
        data={"field_9999": "lost", "field_213": "y"},
    )
    assert (status, answer["data"]["id"]) == (200, record)
    assert "field_9999" not in fake.rows[25][0] and fake.rows[25][0]["field_213"] == "y"


def test_32_33_update_by_field_wants_field_n(fake) -> None:
    insert(fake, field_215="45721053")
    status, answer = call(
        fake, action="update", entity_id=25, update_by_field={"215": "45721053"}, data={}
    )
    assert (status, answer["error_message"]) == (500, "215 not exist in entity 25")
    _, answer = call(
        fake, action="update", entity_id=25, update_by_field={"field_9999": "x"}, data={}
    )
    assert answer["error_message"] == "field_9999 not exist in entity 25"


def test_46_47_insert_refuses_unknown_entities_and_fields(fake) -> None:
    status, answer = call(fake, action="insert", entity_id=9999, items={"field_213": "x"})
    assert (status, answer["error_message"]) == (500, "entity 9999 not found")
    _, answer = call(fake, action="insert", entity_id=25, items={"field_213": "x", "field_9999": 1})
    assert answer["error_message"] == "field_9999 not exist in entity 25"
    assert fake.rows.get(25, []) == []


def test_21_22_numbers_come_back_formatted_and_dropdowns_with_db_value(fake) -> None:
    record = insert(fake, field_213="x", field_214="15000", field_216="69")
    _, answer = call(
        fake, action="select", entity_id=25, filters={"id": record}, select_fields="214,216"
    )
    (row,) = answer["data"]
    assert (row["214"], row["216"], row["216_db_value"]) == ("15000.00", "В работе", "69")  # noqa: RUF001


def test_t9_48_a_label_in_a_dropdown_is_stored_as_0(fake) -> None:
    record = insert(fake, field_213="x", field_216="В работе")  # noqa: RUF001
    _, answer = call(
        fake, action="select", entity_id=25, filters={"id": record}, select_fields="216"
    )
    (row,) = answer["data"]
    assert (row["216"], row["216_db_value"]) == ("", "0")


def test_t10_t11_dates_are_read_in_the_server_zone_and_timestamps_misread(fake) -> None:
    from tests.fakes.rukovoditel import FakeField

    fake.add_field(25, FakeField(217, "input_date", "Дата"))
    good = insert(fake, field_217="2026-11-30")
    bad = insert(fake, field_217="1764500000")
    assert fake.rows[25][0]["field_217"] == "1795986000"  # midnight, +03:00
    _, answer = call(fake, action="select", entity_id=25, filters={"id": f"{good},{bad}"})
    assert [row["217"] for row in answer["data"]] == ["11/30/2026", "12/31/4999"]


def test_9_14_select_drops_filters_it_cannot_apply(fake) -> None:
    insert(fake, field_215="45721053")
    insert(fake, field_215="99990001")
    for filters in ({"field_215": "99990001"}, {"215": 99990001}, {"9999": "99990001"}):
        _, answer = call(fake, action="select", entity_id=25, filters=filters, limit=2)
        assert len(answer["data"]) == 2  # wrong rows, status success
    _, answer = call(fake, action="select", entity_id=25, filters={"215": "99990001"})
    assert [row["215"] for row in answer["data"]] == ["99990001"]


def test_26_select_on_an_unknown_entity_is_a_db_error(fake) -> None:
    status, body = call(fake, action="select", entity_id=9999)
    assert status == 200 and "<app_db_error>" in body and "1146" in body


def test_u1_u5_unique_fields_skip_inserts_but_not_updates(fake) -> None:
    fake.entities[25].fields[215].unique = True
    first = insert(fake, field_215="99990001")
    _, answer = call(fake, action="insert", entity_id=25, items={"field_215": "99990001"})
    assert answer["data"] == {
        "id": "",
        "unique_fields_warning": [{"id": "215", "value": "99990001"}],
    }
    other = insert(fake, field_215="66660002")
    call(
        fake,
        action="update",
        entity_id=25,
        update_by_field={"id": other},
        data={"field_215": "99990001"},
    )
    assert [r["field_215"] for r in fake.rows[25]] == ["99990001", "99990001"]
    assert first != other


def test_form_bodies_work_and_json_sent_as_a_form_does_not(fake) -> None:
    form = urlencode(
        {**CREDENTIALS, "action": "insert", "entity_id": "25", "items[field_213]": "x"}
    )
    status, _, _ = fake.handle_body(form.encode(), "application/x-www-form-urlencoded")
    assert status == 200 and fake.rows[25][0]["field_213"] == "x"
    raw = json.dumps({**CREDENTIALS, "action": "login"}).encode()
    status, _, body = fake.handle_body(raw, "application/x-www-form-urlencoded")
    assert (status, json.loads(body)["error_message"]) == (500, "key is required")  # row 55
