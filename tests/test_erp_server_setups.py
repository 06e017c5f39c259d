"""ERPClient against the stateful fake Rukovoditel in the server set-ups the live capture
recorded (reference/rukovoditel-live.md): credentials checked (#37-#41), strict SQL mode (S1,
S2) and display_errors=On (D1, D3). Each answer must become our typed error with a message
that says what to fix, or the data when Rukovoditel's answer is usable."""

from __future__ import annotations

import pytest

from prometei.erp.client import ERPClient
from prometei.errors import UpstreamAuthError, UpstreamProtocolError
from tests.conftest import BASE_ENV, ERP_URL, TEST_SECRETS
from tests.fakes.rukovoditel import FakeRukovoditel

KEY = TEST_SECRETS["CRM_API_KEY"]
PASSWORD = TEST_SECRETS["CRM_API_PASSWORD"]
USER = BASE_ENV["CRM_API_USERNAME"]
ALL_FIELDS = {"field_1039": "A", "field_1040": "1", "field_1041": "7", "field_1042": "68"}


def client(key: str = KEY, username: str = USER, password: str = PASSWORD) -> ERPClient:
    return ERPClient(ERP_URL, key, username, password)


@pytest.mark.parametrize(
    ("credentials", "fix"),
    [
        ({"key": "wrong-key"}, "CRM_API_KEY"),  # 37
        ({"password": "wrong-password"}, "CRM_API_PASSWORD"),  # 39
        ({"username": "nobody"}, "CRM_API_USERNAME"),  # 40
    ],
    ids=["37-key", "39-password", "40-username"],
)
@pytest.mark.parametrize("display_errors", [False, True], ids=["quiet", "D1-display-errors"])
def test_wrong_credentials_are_a_permanent_auth_error_naming_the_variable(
    erp, credentials, fix, display_errors
) -> None:
    erp.display_errors = display_errors
    with pytest.raises(UpstreamAuthError) as caught:
        client(**credentials).insert(70, ALL_FIELDS)
    assert not caught.value.retryable and fix in str(caught.value)
    assert erp.rows.get(70, []) == []


def test_an_inactive_user_is_an_auth_error(erp) -> None:
    erp.active = False  # 41
    with pytest.raises(UpstreamAuthError, match="the user is active"):
        client().login()


def test_s1_strict_mode_insert_without_every_field_says_what_to_fix(erp) -> None:
    erp.strict_sql = True
    with pytest.raises(UpstreamProtocolError) as caught:
        client().insert(70, {"field_1039": "A", "field_1041": "7"})
    assert not caught.value.retryable
    assert "1364" in str(caught.value) and "ERP_FIELD_MAP" in str(caught.value)
    assert client().insert(70, ALL_FIELDS).ids == ["801"]


def test_s2_strict_mode_text_in_a_dropdown_says_what_to_fix(erp) -> None:
    erp.strict_sql = True
    client().insert(70, ALL_FIELDS)
    with pytest.raises(UpstreamProtocolError) as caught:
        client().update(70, by={"field_1041": "7"}, data={"field_1042": "В работе"})  # noqa: RUF001
    assert not caught.value.retryable
    assert "1366" in str(caught.value) and "choice id" in str(caught.value)
    assert erp.rows[70][0]["field_1042"] == "68"


def test_d3_the_first_select_after_a_deploy_still_finds_the_record(
    erp: FakeRukovoditel,
) -> None:
    erp.display_errors = True
    erp.opcache = False  # every select carries the notices
    record = client().insert(70, ALL_FIELDS).ids[0]
    rows = client().select(70, filters={"1041": "7"}, select_fields=[1041], limit=2)
    assert [(row["id"], row["1041"]) for row in rows] == [(record, "7")]
