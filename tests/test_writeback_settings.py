"""The write-back settings and what doctor says about them (amoCRM is `FakeAmoCRM` through
`responses`, so the rights and fields it answers are the fake's model)."""

from __future__ import annotations

import pytest

from prometei.config import settings_from_mapping
from prometei.doctor import Check, check_amocrm_writeback, run_checks
from prometei.errors import ConfigError
from prometei.services import Services
from tests.conftest import BASE_ENV
from tests.fakes.amocrm import ERP_ID_FIELD, FakeAmoCRM, user_body
from tests.fakes.web import Reply

AMOCRM_OK = Check("amocrm", True, "accepted")


# ---- settings --------------------------------------------------------------------------------
def test_write_back_is_off_unless_asked_for() -> None:
    settings = settings_from_mapping(BASE_ENV)
    assert not settings.amocrm_sync_note and not settings.amocrm_failure_note
    assert settings.amocrm_erp_id_field is None and not settings.writes_back


@pytest.mark.parametrize(
    ("api_url", "public_url", "base"),
    [
        ("https://crm.example.ru/api/rest.php", None, "https://crm.example.ru"),
        ("https://example.ru/crm/api/rest.php", None, "https://example.ru/crm"),
        ("http://10.0.0.5:8080/api/rest.php?x=1", None, "http://10.0.0.5:8080"),
        (
            "https://crm.example.ru/api/rest.php",
            "https://erp.example.ru/",
            "https://erp.example.ru",
        ),
        ("https://crm.example.ru/api/rest.php", "https://x.ru/ruko/", "https://x.ru/ruko"),
    ],
)
def test_record_links_start_at_the_public_url_else_the_api_urls_base(
    api_url: str, public_url: str | None, base: str
) -> None:
    env = {"CRM_API_URL": api_url, **({"CRM_PUBLIC_URL": public_url} if public_url else {})}
    assert settings_from_mapping(env).erp_web_base == base


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("CRM_PUBLIC_URL", "crm.example.ru", "http(s) URL"),
        ("CRM_PUBLIC_URL", "https://user:pw@crm.example.ru", "credentials"),
        ("CRM_PUBLIC_URL", "https://crm.example.ru/?a=1", "query string"),
        ("CRM_PUBLIC_URL", "https://crm.example.ru:abc/x", "malformed port"),
        ("AMOCRM_ERP_ID_FIELD", "abc", "AMOCRM_ERP_ID_FIELD"),
        ("AMOCRM_ERP_ID_FIELD", "0", "AMOCRM_ERP_ID_FIELD"),
        ("AMOCRM_SYNC_NOTE", "maybe", "AMOCRM_SYNC_NOTE"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(name: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({name: value})
    assert name in caught.value.message and words in caught.value.message
    assert "pw@" not in caught.value.message


# ---- doctor -----------------------------------------------------------------------------------
@pytest.fixture
def amo(amo_account: FakeAmoCRM) -> FakeAmoCRM:
    return amo_account


def checks(amo: FakeAmoCRM, **env: str) -> dict[str, Check]:
    settings = settings_from_mapping({**BASE_ENV, **env})
    rows = check_amocrm_writeback(Services(settings), amocrm=AMOCRM_OK)
    return {row.name: row for row in rows}


def test_full_rights_and_a_text_field_pass(amo) -> None:
    rows = checks(amo, AMOCRM_SYNC_NOTE="1", AMOCRM_ERP_ID_FIELD=str(ERP_ID_FIELD))
    assert [row.status for row in rows.values()] == ["OK", "OK"]
    assert "user 938348 may edit all leads" in rows["amocrm write-back"].detail
    assert "record links point to https://erp.example.test" in rows["amocrm write-back"].detail
    assert "'Запись ERP', text" in rows["amocrm erp id field"].detail
    # harmless reads only
    assert {entry.method for entry in amo.requests()} == {"GET"}


def test_a_user_who_may_not_edit_leads_fails_naming_the_settings(amo) -> None:
    amo.users[938348] = user_body(938348, leads={"view": "A", "edit": "D", "add": "D"})
    row = checks(amo, AMOCRM_FAILURE_NOTE="1")["amocrm write-back"]
    assert row.status == "FAIL"
    assert "may edit no leads" in row.detail and "AMOCRM_FAILURE_NOTE" in row.detail
    assert "the user who created AMOCRM_ACCESS_TOKEN" in row.fix
    assert "Leads: Edit" in row.fix and "unset AMOCRM_FAILURE_NOTE" in row.fix


def test_own_leads_only_and_a_closed_trigger_stage_warn(amo) -> None:
    amo.users[938348] = user_body(
        938348,
        leads={"view": "A", "edit": "M"},
        status_rights=[
            {
                "entity_type": "leads",
                "pipeline_id": 7012345,
                "status_id": 142,
                "rights": {"view": "A", "edit": "D"},
            }
        ],
    )
    row = checks(amo, AMOCRM_SYNC_NOTE="1", AMOCRM_TRIGGER_STATUSES="7012345:142")[
        "amocrm write-back"
    ]
    assert row.status == "WARN"
    assert "its own leads only" in row.detail and "7012345:142" in row.detail


def test_an_administrator_passes_whatever_the_lead_rights_say(amo) -> None:
    amo.users[938348] = user_body(938348, leads={"edit": "D"}, is_admin=True)
    assert checks(amo, AMOCRM_SYNC_NOTE="1")["amocrm write-back"].status == "OK"


def test_rights_that_cannot_be_read_are_a_warning(amo) -> None:
    amo.fail_next(Reply.json({"title": "Forbidden", "status": 403}, 403),
                  match=lambda r: r.path.startswith("/api/v4/users/"))  # fmt: skip
    row = checks(amo, AMOCRM_SYNC_NOTE="1")["amocrm write-back"]
    assert row.status == "WARN" and "403" in row.detail


@pytest.mark.parametrize(
    ("field", "kind", "words"),
    [("424242", None, "is not a lead field"), (str(ERP_ID_FIELD), "select", "cannot hold")],
)
def test_a_wrong_id_field_fails_naming_the_setting(amo, field, kind, words) -> None:
    if kind:
        amo.lead_fields[ERP_ID_FIELD]["type"] = kind
    row = checks(amo, AMOCRM_ERP_ID_FIELD=field)["amocrm erp id field"]
    assert row.status == "FAIL"
    assert words in row.detail and f"AMOCRM_ERP_ID_FIELD={field}" in row.detail
    assert "AMOCRM_ERP_ID_FIELD" in row.fix


def test_a_sync_note_without_a_state_store_fails(amo) -> None:
    row = checks(amo, AMOCRM_SYNC_NOTE="1", VERCEL="1")["amocrm write-back"]
    assert row.status == "FAIL"
    assert "needs a state store" in row.detail and "KV_REST_API_URL" in row.fix


def test_the_rows_appear_only_when_write_back_is_on(amo, mock) -> None:
    off = run_checks({**BASE_ENV, "INNGEST_DEV": "1"}, offline=True)
    on = run_checks({**BASE_ENV, "INNGEST_DEV": "1", "AMOCRM_SYNC_NOTE": "1"}, offline=True)
    assert "amocrm write-back" not in {row.name for row in off}
    [row] = [row for row in on if row.name == "amocrm write-back"]
    assert row.skipped


def test_without_a_passing_amocrm_row_nothing_is_asked(amo) -> None:
    settings = settings_from_mapping({**BASE_ENV, "AMOCRM_SYNC_NOTE": "1"})
    failed = Check("amocrm", False, "401", "reconnect")
    [row] = check_amocrm_writeback(Services(settings), amocrm=failed)
    assert row.skipped and amo.requests() == []
