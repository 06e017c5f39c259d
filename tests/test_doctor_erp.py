"""doctor's ERP rows: exit 1 whenever a write would fail or lose a value.

Rukovoditel is the stateful fake (it answers get_entity_fields / get_field_choices like the
live server); amoCRM answers the account and the pipelines.
"""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner, Result

from prometei.cli.doctor import doctor
from tests.conftest import AMO_BASE, ERP_URL, TEST_SECRETS
from tests.fakes.rukovoditel import FakeField, FakeRukovoditel
from tests.fixtures.amocrm_api import pipelines_body

ACCOUNT = {"id": 29085955, "subdomain": "example", "name": "Example LLC"}
PIPELINES = pipelines_body((142, "Новая"), (143, "Закрыто и не реализовано"))


@pytest.fixture
def fake(mock) -> FakeRukovoditel:
    mock.get(f"{AMO_BASE}/api/v4/account", json=ACCOUNT)
    mock.get(f"{AMO_BASE}/api/v4/leads/pipelines", json=PIPELINES)
    return FakeRukovoditel(ERP_URL).install(mock)


def invoke() -> Result:
    result = CliRunner().invoke(doctor, [])
    for secret in TEST_SECRETS.values():
        assert secret not in result.output
    return result


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


def test_stage_names_missing_from_a_dropdown_are_named(fake, set_env) -> None:
    set_env(ERP_FIELD_MAP='{"field_1039": "name", "field_1042": "status_name"}')
    set_env(ERP_LEAD_ID_FIELD="1041")
    result = invoke()
    status, detail = row(result, "erp field map")
    assert status == "WARN"
    assert "'Закрыто и не реализовано'" in detail and "'Новая'" not in detail


def test_an_amocrm_id_into_a_dropdown_and_unreadable_choices_warn(fake, set_env) -> None:
    fake.admin = False
    set_env(ERP_FIELD_MAP='{"field_1039": "name", "field_1042": "status_id"}')
    result = invoke()
    status, detail = row(result, "erp field map")
    assert status == "WARN"
    assert "amoCRM ids are not choice ids" in detail and "administrators only" in detail


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
