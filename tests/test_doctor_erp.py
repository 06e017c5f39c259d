"""doctor's ERP rows: exit 1 whenever a write would fail or lose a value.

Rukovoditel is the stateful fake (it answers get_entity_fields / get_field_choices like the
live server); amoCRM answers the account and the pipelines.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import responses
from click.testing import CliRunner, Result

from prometei.cli.doctor import doctor
from tests.conftest import AMO_BASE, ERP_URL, TEST_SECRETS
from tests.fakes.rukovoditel import FakeField, FakeRukovoditel
from tests.fixtures.amocrm_api import PIPELINE_ID, pipelines_body

ACCOUNT = {"id": 29085955, "subdomain": "example", "name": "Example LLC"}
PIPELINES = pipelines_body((142, "Новая"), (143, "Закрыто и не реализовано"))


@pytest.fixture
def fake(mock) -> FakeRukovoditel:
    mock.get(f"{AMO_BASE}/api/v4/account", json=ACCOUNT)
    mock.get(f"{AMO_BASE}/api/v4/leads/pipelines", json=PIPELINES)
    return FakeRukovoditel(ERP_URL).install(mock)


def fake_custom_field(
    mock: responses.RequestsMock,
    field_id: int,
    amo_type: str,
    enums: list[str] | None = None,
    *,
    name: str = "Source",
) -> None:
    """amoCRM's GET /api/v4/leads/custom_fields/{id} for one field (`enums` for lists)."""
    values = [{"id": 1000 + n, "value": v, "sort": n} for n, v in enumerate(enums or [])]
    mock.get(
        f"{AMO_BASE}/api/v4/leads/custom_fields/{field_id}",
        json={"id": field_id, "name": name, "type": amo_type, "enums": values or None},
    )


def invoke() -> Result:
    result = CliRunner().invoke(doctor, [])
    for secret in TEST_SECRETS.values():
        assert secret not in result.output
    return result


def doctor_with_dropdown(set_env: Any, source: str, **env: str) -> Result:
    """doctor with the dropdown field_1042 filled from `source` (and the name, the lookup
    field set)."""
    field_map = f'{{"field_1039": "name", "field_1042": "{source}"}}'
    set_env(ERP_FIELD_MAP=field_map, ERP_LEAD_ID_FIELD="1041", **env)
    return invoke()


def row(result: Result, name: str) -> tuple[str, str]:
    """(status, detail with wrapping undone) of one row."""
    text = re.sub(r"\n\s{20,}(?!fix: )", " ", result.stdout)
    match = re.search(rf"^{re.escape(name)}\s+(OK|FAIL|SKIP|WARN)\s+(.*)$", text, flags=re.M)
    assert match, f"no row {name!r} in\n{result.stdout}"
    return match.group(1), match.group(2)


def fix(result: Result, name: str) -> str:
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
    return next(line.strip() for line in lines[start + 1 :] if line.strip().startswith("fix: "))


def test_a_good_setup_with_the_lookup_field_is_ready(fake, set_env) -> None:
    set_env(ERP_LEAD_ID_FIELD="1041")
    result = invoke()
    assert result.exit_code == 0, result.output
    assert row(result, "erp entity") == (
        "OK",
        'entity 70: 10 fields, 4 writable, heading field_1039 "Название" (input)',
    )
    assert row(result, "erp field map")[0] == "OK"
    assert row(result, "erp one record") == (
        "OK",
        'lookup by field_1041 "amoCRM ID" (input): one record per lead, always',
    )


def test_a_wrong_entity_fails(fake, set_env) -> None:
    set_env(ERP_ENTITY_ID="9999")
    result = invoke()
    assert result.exit_code == 1
    status, detail = row(result, "erp entity")
    assert status == "FAIL" and "Entity #9999 does not exist" in detail
    assert "ERP_ENTITY_ID" in fix(result, "erp entity")
    assert row(result, "erp field map")[0] == "SKIP"


@pytest.mark.parametrize(
    ("field_map", "words"),
    [
        ('{"field_1039": "name", "field_9999": "price"}', ["field_9999 is not a field"]),
        ('{"field_1040": "name"}', ["text source cannot fill numeric"]),
        ('{"field_1030": "id"}', ["filled by Rukovoditel"]),
    ],
    ids=["missing_field", "wrong_type", "system_field"],
)
def test_a_map_that_would_lose_values_fails(fake, set_env, field_map, words) -> None:
    set_env(ERP_FIELD_MAP=field_map, ERP_LEAD_ID_FIELD="1041")
    result = invoke()
    assert result.exit_code == 1
    status, detail = row(result, "erp field map")
    assert status == "FAIL"
    for word in words:
        assert word in detail
    assert "erp fields" in fix(result, "erp field map")


def test_an_unfilled_required_field_fails(fake, set_env) -> None:
    fake.add_field(70, FakeField(1043, "input", "Телефон", required=True))
    set_env(ERP_LEAD_ID_FIELD="1041")
    result = invoke()
    assert result.exit_code == 1
    assert 'field_1043 "Телефон" (input) is required' in row(result, "erp field map")[1]


@pytest.mark.parametrize(
    ("field", "words"),
    [("1040", ["input_numeric", "30000009.00"]), ("4242", ["not a field of ERP entity 70"])],
    ids=["numeric", "missing"],
)
def test_a_wrong_lookup_field_fails(fake, set_env, field, words) -> None:
    set_env(ERP_LEAD_ID_FIELD=field)
    result = invoke()
    assert result.exit_code == 1
    status, detail = row(result, "erp one record")
    assert status == "FAIL"
    for word in words:
        assert word in detail


def test_no_lookup_field_warns_and_says_where_records_are_remembered(fake) -> None:
    result = invoke()
    assert result.exit_code == 0
    status, detail = row(result, "erp one record")
    assert status == "WARN" and "state.json" in detail and "lost insert answer" in detail
    assert "ERP_LEAD_ID_FIELD" in fix(result, "erp one record")


def test_no_lookup_field_and_no_store_on_vercel_fails(fake, set_env) -> None:
    set_env(VERCEL="1")
    result = invoke()
    assert result.exit_code == 1
    status, detail = row(result, "erp one record")
    assert status == "FAIL" and "leads would be refused" in detail
    assert "KV" in fix(result, "erp one record")


def test_trigger_stages_missing_from_a_dropdown_fail_and_are_named(fake, set_env) -> None:
    result = doctor_with_dropdown(set_env, "status_name")
    assert result.exit_code == 1, result.output
    status, detail = row(result, "erp field map")
    assert status == "FAIL"
    assert f"'Закрыто и не реализовано' ({PIPELINE_ID}:143)" in detail
    assert "'Новая'" not in detail and "fail for good" in detail
    assert "add the missing choices" in fix(result, "erp field map")
    assert "AMOCRM_TRIGGER_STATUSES" in fix(result, "erp field map")


def test_only_the_trigger_stages_need_a_choice(fake, set_env) -> None:
    result = doctor_with_dropdown(
        set_env, "status_name", AMOCRM_TRIGGER_STATUSES=f"{PIPELINE_ID}:142"
    )
    assert result.exit_code == 0, result.output
    assert row(result, "erp field map")[0] == "OK"


def test_a_pipeline_name_missing_from_a_dropdown_fails(fake, set_env) -> None:
    result = doctor_with_dropdown(set_env, "pipeline_name")
    assert result.exit_code == 1
    assert f"'Продажи' ({PIPELINE_ID})" in row(result, "erp field map")[1]


def test_an_inactive_choice_does_not_count_for_a_stage(fake, set_env) -> None:
    fake.entities[70].fields[1042].inactive = (68,)  # "Новая" switched off
    result = doctor_with_dropdown(
        set_env, "status_name", AMOCRM_TRIGGER_STATUSES=f"{PIPELINE_ID}:142"
    )
    assert result.exit_code == 1
    assert f"'Новая' ({PIPELINE_ID}:142)" in row(result, "erp field map")[1]


def test_a_dropdown_without_active_choices_fails(fake, mock, set_env) -> None:
    fake.entities[70].fields[1042].inactive = (68, 69)
    fake_custom_field(mock, 66339, "select", ["Новая"])
    result = doctor_with_dropdown(set_env, "cf:66339")
    assert result.exit_code == 1
    status, detail = row(result, "erp field map")
    assert status == "FAIL" and "has no active choices: every value would be refused" in detail


def test_an_amocrm_id_into_a_dropdown_fails(fake, set_env) -> None:
    result = doctor_with_dropdown(set_env, "status_id")
    assert result.exit_code == 1
    status, detail = row(result, "erp field map")
    assert status == "FAIL" and "amoCRM ids are not choice ids" in detail
    assert "status_name" in detail


def test_names_into_a_dropdown_whose_choices_are_unreadable_fail(fake, set_env) -> None:
    fake.admin = False
    result = doctor_with_dropdown(set_env, "status_name")
    assert result.exit_code == 1
    status, detail = row(result, "erp field map")
    assert status == "FAIL" and "administrators only" in detail
    assert "every value would be refused" in detail
    assert "administrator rights" in fix(result, "erp field map")


def test_a_custom_field_of_unknown_kind_into_unreadable_choices_warns(fake, mock, set_env) -> None:
    fake.admin = False
    fake_custom_field(mock, 66339, "chained_list")
    result = doctor_with_dropdown(set_env, "cf:66339")
    assert result.exit_code == 0, result.output
    status, detail = row(result, "erp field map")
    assert status == "WARN" and "choice ids go unchecked" in detail


@pytest.mark.parametrize(
    ("amo_type", "target", "status", "words"),
    [
        ("text", "field_1040", "FAIL", ['cf:66339 "Source" (text)', "cannot fill numeric"]),
        ("numeric", "field_1040", "OK", []),
        ("date", "field_1040", "FAIL", ["a timestamp source cannot fill numeric"]),
        ("numeric", "field_1044", "FAIL", ["a number source cannot fill date"]),
        ("date_time", "field_1044", "OK", []),
        ("select", "field_1042", "FAIL", ["'Горячий'", "no active choice of that label"]),
        ("numeric", "field_1042", "FAIL", ["a number source cannot fill"]),
    ],
)
def test_a_custom_field_source_is_checked_against_its_amocrm_type(
    fake, mock, set_env, amo_type, target, status, words
) -> None:
    fake.add_field(70, FakeField(1044, "input_date", "Дата"))
    fake_custom_field(mock, 66339, amo_type, ["Новая", "Горячий"], name="Source")
    set_env(ERP_FIELD_MAP=f'{{"field_1039": "name", "{target}": "cf:66339"}}')
    set_env(ERP_LEAD_ID_FIELD="1041")
    result = invoke()
    got, detail = row(result, "erp field map")
    assert (got, result.exit_code) == (status, 1 if status == "FAIL" else 0), result.output
    for word in words:
        assert word in detail


def test_a_custom_field_amocrm_does_not_have_fails(fake, mock, set_env) -> None:
    mock.get(f"{AMO_BASE}/api/v4/leads/custom_fields/66339", status=204)
    set_env(ERP_FIELD_MAP='{"field_1039": "name", "field_1040": "cf:66339"}')
    set_env(ERP_LEAD_ID_FIELD="1041")
    result = invoke()
    assert result.exit_code == 1
    assert "amoCRM has no lead custom field 66339" in row(result, "erp field map")[1]


def test_a_custom_field_into_a_text_field_costs_no_amocrm_request(fake, mock, set_env) -> None:
    set_env(ERP_FIELD_MAP='{"field_1039": "cf:66339"}', ERP_LEAD_ID_FIELD="1041")
    result = invoke()
    assert result.exit_code == 0, result.output
    assert not [c for c in mock.calls if "custom_fields" in c.request.url]


def test_a_server_without_schema_actions_warns_and_writes_go_unchecked(fake) -> None:
    fake.legacy = True
    result = invoke()
    assert result.exit_code == 0
    assert row(result, "erp entity")[0] == "WARN"
    assert "3.4" in fix(result, "erp entity")
    assert row(result, "erp field map")[0] == "SKIP"


def test_schema_rows_are_skipped_when_the_login_fails(fake) -> None:
    fake.fail_next("login", (500, {}, ""))
    result = invoke()
    assert row(result, "erp")[0] == "FAIL"
    for name in ("erp entity", "erp field map", "erp one record"):
        assert row(result, name)[0] == "SKIP"
    assert fake.actions("get_entity_fields") == []
