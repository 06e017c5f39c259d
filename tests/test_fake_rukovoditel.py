"""The fake Rukovoditel answers like the live 3.6.2 server (reference/rukovoditel-live.md).

Each test sends the request a row of the reference sent, through `handle_body` (what the e2e
tier serves over HTTP), and checks the answer the reference recorded. If the fake drifted from
the reference, the writer's own tests could pass against a server that does not exist.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.conftest import BASE_ENV
from tests.fakes.rukovoditel import API_KEY, API_PASSWORD, API_USERNAME, FakeRukovoditel

CREDENTIALS = {"key": API_KEY, "username": API_USERNAME, "password": API_PASSWORD}


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
    # UNVERIFIED live: rukovoditel.md (check_admin_access in the 3.6.2 source) says so; the
    # live capture never called get_field_choices as a non-administrator.
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


# ---- the reviewer's differences, each pinned to the reference row it comes from ----------
SEPT_1_2026 = 1788210000.0  # 09/01/2026 00:00 +03:00
MOSCOW = {"at": SEPT_1_2026}


@pytest.fixture
def clocked() -> FakeRukovoditel:
    """A fake whose clock the test moves (`MOSCOW["at"]`)."""
    MOSCOW["at"] = SEPT_1_2026
    return FakeRukovoditel("https://erp.example.test/api/rest.php", clock=lambda: MOSCOW["at"])


def test_the_default_credentials_are_the_unit_tiers() -> None:
    assert (
        BASE_ENV["CRM_API_KEY"],
        BASE_ENV["CRM_API_USERNAME"],
        BASE_ENV["CRM_API_PASSWORD"],
    ) == (API_KEY, API_USERNAME, API_PASSWORD)


@pytest.mark.parametrize(
    "body",
    [
        b"\xef\xbb\xbf" + json.dumps({**CREDENTIALS, "action": "login"}).encode(),  # a BOM
        json.dumps({**CREDENTIALS, "action": "login"}).encode()[:-1],  # invalid JSON
        b"",
        json.dumps([CREDENTIALS]).encode(),  # not an object
    ],
    ids=["bom", "invalid", "empty", "array"],
)
def test_56_json_the_server_cannot_decode_is_key_is_required(fake, body) -> None:
    status, _, text = fake.handle_body(body, "application/json")
    assert (status, json.loads(text)["error_message"]) == (500, "key is required")


def test_24_select_fields_as_an_array_is_an_empty_500(fake) -> None:
    insert(fake, field_215="45721053")
    assert call(fake, action="select", entity_id=25, select_fields=["215"]) == (500, "")


def test_17_a_search_condition_matches_a_substring(fake) -> None:
    insert(fake, field_215="45721053")
    insert(fake, field_215="45721053")
    insert(fake, field_215="99990001")
    search = {"215": {"value": "4572105", "condition": "search"}}
    _, answer = call(fake, action="select", entity_id=25, filters=search, select_fields="215")
    assert [row["215"] for row in answer["data"]] == ["45721053", "45721053"]
    _, answer = call(fake, action="select", entity_id=25, filters={"215": "4572105"})
    assert answer["data"] == []  # a plain text value stays an exact match (#16)


def test_21_a_numeric_field_compares(fake) -> None:
    for amount in ("15000", "15000.75", "777.50", "abc"):
        insert(fake, field_213=amount, field_214=amount)
    found = {}
    for condition in (">1000", "15000", "<1000", ">=777.5&<15000.5", "<1|>15000.5"):
        _, answer = call(fake, action="select", entity_id=25, filters={"214": condition})
        found[condition] = [row["214"] for row in answer["data"]]
    assert found == {
        ">1000": ["15000.00", "15000.75"],
        "15000": ["15000.00"],
        "<1000": ["777.50", "abc"],  # MySQL reads "abc" as 0
        ">=777.5&<15000.5": ["15000.00", "777.50"],
        "<1|>15000.5": ["15000.75", "abc"],
    }


def test_20_t1_select_without_select_fields_shows_the_system_fields(clocked) -> None:
    record = insert(clocked, field_213="Заказ #2000", field_214="777.50", field_215="99990001")
    _, answer = call(clocked, action="select", entity_id=25, filters={"id": record})
    (row,) = answer["data"]
    system = {k: row[k] for k in ("208", "209", "210", "211", "212")}
    assert system == {
        "208": record,
        "209": "09/01/2026 00:00",
        "210": "",  # never updated
        "211": clocked.full_name,
        "212": "",  # top level
    }
    assert "207" not in row  # the action field is never listed
    assert (row["213"], row["214"], row["216"], row["216_db_value"]) == (
        "Заказ #2000",
        "777.50",
        "",
        "0",
    )
    _, fields = call(clocked, action="get_entity_fields", entity_id=25)
    assert fields["data"]["207"]["type"] == "fieldtype_action"  # T1


def test_date_updated_is_stamped_by_update(clocked) -> None:
    record = insert(clocked, field_215="1")
    MOSCOW["at"] += 3600 + 60
    call(clocked, action="update", entity_id=25, update_by_field={"id": record}, data={})
    _, answer = call(clocked, action="select", entity_id=25, select_fields="210")
    (row,) = answer["data"]
    assert (row["date_added"], row["date_updated"], row["210"]) == (
        "09/01/2026 00:00",
        "09/01/2026 01:01",
        "09/01/2026 01:01",
    )


def test_a_never_updated_record_shows_epoch_0_in_moscow(fake) -> None:
    insert(fake, field_215="1")
    _, answer = call(fake, action="select", entity_id=25, select_fields="215")
    assert answer["data"][0]["date_updated"] == "01/01/1970 03:00"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"key": "wrong"},
            (500, {"status": "error", "error_code": 500, "error_message": "API Key mismatch"}),
        ),  # 37
        (
            {"key": None},
            (500, {"status": "error", "error_code": 500, "error_message": "key is required"}),
        ),  # 38
        ({"password": "wrong"}, (500, "")),  # 39
        ({"username": "nobody"}, (500, "")),  # 40
        (
            {"username": None},
            (500, {"status": "error", "error_code": 500, "error_message": "username is required"}),
        ),  # source
    ],
    ids=["37-wrong-key", "38-no-key", "39-wrong-password", "40-unknown-user", "no-username"],
)
def test_37_40_credentials_are_checked(fake, change, expected) -> None:
    params = {**CREDENTIALS, **change, "action": "select", "entity_id": 25}
    body = json.dumps({k: v for k, v in params.items() if v is not None}).encode()
    status, _, text = fake.handle_body(body, "application/json")
    assert (status, json.loads(text) if text else text) == expected
    assert fake.rows.get(25, []) == []


def test_41_an_inactive_user_gets_an_empty_500_even_with_the_right_password(fake) -> None:
    fake.active = False
    assert call(fake, action="insert", entity_id=25, items={"field_213": "x"}) == (500, "")
    assert fake.rows.get(25, []) == []


def test_5_login_answers_the_user_object(fake) -> None:
    status, answer = call(fake, action="login")
    assert status == 200 and answer["data"]["group_id"] == 0
    assert set(answer["data"]) == {
        "id", "group_id", "multiple_access_groups", "language", "name", "email", "username",
        "is_email_verified", "photo",
    }  # fmt: skip


def test_update_by_field_empty_or_with_several_keys_answers_like_the_source(fake) -> None:
    # The reference never sent these; api.php reads key()/current() of the map, so an empty map
    # names the null key and several keys use the first one.
    first = insert(fake, field_215="a")
    insert(fake, field_215="b")
    status, answer = call(fake, action="update", entity_id=25, update_by_field={}, data={})
    assert (status, answer["error_message"]) == (500, " not exist in entity 25")
    _, answer = call(
        fake,
        action="update",
        entity_id=25,
        update_by_field={"field_215": "a", "id": "999"},
        data={"field_213": "x"},
    )
    assert answer["data"]["id"] == first
    assert call(fake, action="update", entity_id=25, update_by_field="x", data={}) == (500, "")


def test_u3_u4_a_quote_in_a_unique_field_breaks_the_query_after_earlier_items(fake) -> None:
    fake.entities[25].fields[215].unique = True
    status, body = call(
        fake,
        action="insert",
        entity_id=25,
        items=[{"field_215": "77770001"}, {"field_215": "O'Neil"}],
    )
    assert status == 200 and "<app_db_error>" in body and "1064 - " in body
    assert [r["field_215"] for r in fake.rows[25]] == ["77770001"]  # committed, not reported


# ---- opt-in server set-ups --------------------------------------------------------------
def test_s1_strict_sql_refuses_an_insert_that_omits_a_field(fake) -> None:
    fake.strict_sql = True
    status, body = call(fake, action="insert", entity_id=25, items={"field_213": "x"})
    assert status == 200 and "<app_db_error>" in body
    assert "1364 - Field 'field_214' doesn't have a default value" in html.unescape(body)
    assert fake.rows.get(25, []) == []
    full = {"field_213": "x", "field_214": "1", "field_215": "2", "field_216": "68"}
    assert call(fake, action="insert", entity_id=25, items=full)[0] == 200


def test_s2_strict_sql_refuses_a_non_integer_in_a_dropdown(fake) -> None:
    record = insert(fake, field_213="x", field_216="68")
    fake.strict_sql = True
    status, body = call(
        fake,
        action="update",
        entity_id=25,
        update_by_field={"id": record},
        data={"field_216": "abc"},
    )
    assert status == 200 and "1366 - Incorrect integer value: 'abc'" in html.unescape(body)
    assert "field_216" in body and fake.rows[25][0]["field_216"] == "68"


def test_d1_display_errors_turns_the_empty_500_into_a_fatal_error_page(fake) -> None:
    fake.display_errors = True
    status, body = call(fake, action="login", password="wrong")
    assert status == 200 and "<b>Fatal error</b>:  Uncaught TypeError: http_response_code()" in body
    status, body = call(fake, action="select", entity_id=25, select_fields=["215"])
    assert status == 200 and "Uncaught TypeError: strlen()" in body
    status, answer = call(fake, action="login", key="wrong")  # D4: JSON errors unchanged
    assert (status, answer["error_message"]) == (500, "API Key mismatch")


def test_d2_display_errors_prints_warnings_before_the_db_error(fake) -> None:
    fake.display_errors = True
    status, body = call(fake, action="select", entity_id=9999)
    assert status == 200 and body.count("<b>Warning</b>:  Undefined array key 9999") == 2
    assert body.index("Warning") < body.index("<app_db_error>")


def test_d3_the_first_select_carries_deprecation_notices_before_its_json(fake) -> None:
    fake.display_errors = True
    status, first = call(fake, action="select", entity_id=25, select_fields="215")
    assert status == 200 and isinstance(first, str) and first.count("<b>Deprecated</b>") == 4
    notices, _, answer = first.rpartition("<br />\n")
    assert notices and json.loads(answer)["status"] == "success"
    assert call(fake, action="select", entity_id=25)[1]["status"] == "success"  # warm: clean
    fake.opcache = False
    assert "<b>Deprecated</b>" in call(fake, action="select", entity_id=25)[1]
