"""ERPClient against recorded Rukovoditel answers (`responses`; nothing leaves the process)."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
import responses

from prometei.config import settings_from_mapping
from prometei.erp.client import ERPClient, InsertResult
from prometei.errors import (
    ConfigError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from tests.conftest import BASE_ENV, ERP_URL, TEST_SECRETS
from tests.fixtures import rukovoditel as ruko

KEY = TEST_SECRETS["CRM_API_KEY"]
PASSWORD = TEST_SECRETS["CRM_API_PASSWORD"]
ENTITY = ruko.ENTITY_ID
LOOKUP = ruko.LEAD_FIELD_ID
LEAD = ruko.LEAD_ID
ITEMS = {"field_1039": "Заказ #1042", "field_1040": "150000"}


def make_client(**kwargs: Any) -> ERPClient:
    return ERPClient(ERP_URL, KEY, "api", PASSWORD, **kwargs)


def reply(body: str | Exception, status: int = 200, **kwargs: Any) -> None:
    responses.add(
        responses.POST, ERP_URL, body=body, status=status, content_type=ruko.HTML, **kwargs
    )


def sent_json(index: int) -> dict[str, Any]:
    request = responses.calls[index].request
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.body is not None
    return dict(json.loads(request.body))


def sent_form(index: int) -> dict[str, str]:
    request = responses.calls[index].request
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.body is not None
    body = request.body if isinstance(request.body, str) else request.body.decode()
    return dict(parse_qsl(body, keep_blank_values=True, strict_parsing=True))


# ---- construction -------------------------------------------------------------------------
def test_from_settings_uses_env_values_and_format() -> None:
    settings = settings_from_mapping({**BASE_ENV, "ERP_REQUEST_FORMAT": "form"})
    client = ERPClient.from_settings(settings)
    assert client.url == ERP_URL
    assert client.username == "api"
    assert client.request_format == "form"
    assert KEY not in repr(client) and PASSWORD not in repr(client)


def test_repr_shows_the_scheme_and_host_only() -> None:
    url = "https://erp.example.test:8443/private/api/rest.php?site=a"
    shown = repr(ERPClient(url, KEY, "api", PASSWORD))
    assert "url='https://erp.example.test'" in shown
    assert "private" not in shown and "rest.php" not in shown and "8443" not in shown


def test_from_settings_names_the_missing_variable() -> None:
    env = {k: v for k, v in BASE_ENV.items() if k != "CRM_API_PASSWORD"}
    with pytest.raises(ConfigError, match="CRM_API_PASSWORD"):
        ERPClient.from_settings(settings_from_mapping(env))


def test_unknown_request_format_is_refused() -> None:
    with pytest.raises(ValueError, match="ERP_REQUEST_FORMAT"):
        make_client(request_format="xml")


# ---- request encoding ------------------------------------------------------------------------
@responses.activate
def test_insert_sends_a_json_body_with_credentials_and_items() -> None:
    reply(ruko.INSERT_OK)
    result = make_client().insert(ENTITY, ITEMS)
    assert result == InsertResult(id="812")
    assert sent_json(0) == {
        "key": KEY,
        "username": "api",
        "password": PASSWORD,
        "action": "insert",
        "entity_id": ENTITY,
        "items": ITEMS,
    }


@responses.activate
def test_insert_in_form_mode_sends_php_bracket_fields() -> None:
    reply(ruko.INSERT_OK)
    make_client(request_format="form").insert(ENTITY, ITEMS)
    assert sent_form(0) == {
        "key": KEY,
        "username": "api",
        "password": PASSWORD,
        "action": "insert",
        "entity_id": "70",
        "items[field_1039]": "Заказ #1042",
        "items[field_1040]": "150000",
    }


@responses.activate
def test_select_sends_numeric_filter_keys_and_select_fields_as_a_string() -> None:
    reply(ruko.SELECT_ONE)
    rows = make_client().select(ENTITY, filters={"1041": LEAD}, select_fields=[1041, 1039], limit=2)
    body = sent_json(0)
    assert body["filters"] == {"1041": LEAD}
    assert body["select_fields"] == "1041,1039"
    assert body["limit"] == 2
    assert rows[0]["id"] == "812" and rows[0]["1041"] == LEAD


@responses.activate
def test_select_in_form_mode() -> None:
    reply(ruko.SELECT_EMPTY)
    rows = make_client(request_format="form").select(
        ENTITY, filters={"1041": LEAD}, select_fields=[1041], limit=2
    )
    form = sent_form(0)
    assert rows == []
    assert form["action"] == "select"
    assert form["filters[1041]"] == LEAD
    assert form["select_fields"] == "1041"
    assert form["limit"] == "2"


@pytest.mark.parametrize(
    ("filters", "error"),
    [({"field_1041": LEAD}, ValueError), ({"1041": 31234567}, TypeError)],
    ids=["field_prefix", "number_value"],
)
@responses.activate
def test_select_refuses_filters_the_server_would_silently_drop(
    filters: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        make_client().select(ENTITY, filters=filters, select_fields=[1041], limit=2)
    assert len(responses.calls) == 0


@responses.activate
def test_update_by_id_json_and_form() -> None:
    reply(ruko.UPDATE_OK)
    reply(ruko.UPDATE_OK)
    data = {"field_1039": "Заказ (upd)"}
    assert make_client().update(ENTITY, by={"id": 812}, data=data) == ["812"]
    assert make_client(request_format="form").update(ENTITY, by={"id": 812}, data=data) == ["812"]
    body = sent_json(0)
    assert body["action"] == "update"
    assert body["update_by_field"] == {"id": 812}
    assert body["data"] == data
    form = sent_form(1)
    assert form["update_by_field[id]"] == "812"
    assert form["data[field_1039]"] == "Заказ (upd)"


@responses.activate
def test_update_that_matched_nothing_returns_no_ids() -> None:
    reply(ruko.UPDATE_NOTHING)
    assert make_client().update(ENTITY, by={"field_1041": LEAD}, data={"field_1040": "1"}) == []
    assert sent_json(0)["update_by_field"] == {"field_1041": LEAD}


def test_update_refuses_a_bare_field_id() -> None:
    # update_by_field wants field_N (the server answers "1041 not exist in entity 70").
    with pytest.raises(ValueError, match="field_"):
        make_client().update(ENTITY, by={"1041": LEAD}, data={})


@responses.activate
def test_form_encoding_flattens_lists_of_items() -> None:
    reply(ruko.INSERT_TWO)
    client = make_client(request_format="form")
    result = client._call("insert", entity_id=ENTITY, items=[{"field_1": "a"}, {"field_1": "b"}])
    assert result == {"id": "812,813"}
    form = sent_form(0)
    assert form["items[0][field_1]"] == "a" and form["items[1][field_1]"] == "b"


# ---- successful answers ------------------------------------------------------------------------
@responses.activate
def test_insert_skipped_by_unique_field() -> None:
    reply(ruko.INSERT_SKIPPED_UNIQUE)
    result = make_client().insert(ENTITY, ITEMS)
    assert result.id == ""
    assert result.skipped_as_duplicate
    assert result.unique_fields_warning == [{"id": "1041", "value": LEAD}]


@responses.activate
def test_login_returns_the_user_without_secrets() -> None:
    reply(ruko.LOGIN_OK)
    user = make_client().login()
    assert user["username"] == "api" and user["group_id"] == 4
    assert sent_json(0)["action"] == "login"
    assert KEY not in json.dumps(user) and PASSWORD not in json.dumps(user)


@responses.activate
def test_login_drops_password_like_keys() -> None:
    reply('{"status":"success","data":{"id":"7","password":"$P$Bhash","username":"api"}}')
    assert make_client().login() == {"id": "7", "username": "api"}


@responses.activate
def test_php_deprecation_notices_before_the_json_are_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reply(ruko.DEPRECATED_THEN_SELECT_ONE)
    with caplog.at_level(logging.WARNING, logger="prometei.erp"):
        rows = make_client().select(ENTITY, filters={"1041": LEAD}, select_fields=[1041], limit=2)
    assert [row["id"] for row in rows] == ["812"]
    assert "display_errors" in caplog.text


# ---- schema actions ----------------------------------------------------------------------------
@responses.activate
def test_entity_fields_sends_the_entity_and_returns_the_map() -> None:
    reply(ruko.ENTITY_FIELDS_70)
    fields = make_client().entity_fields(ENTITY)
    assert sent_json(0)["action"] == "get_entity_fields"
    assert sent_json(0)["entity_id"] == ENTITY
    assert fields["1040"]["type"] == "fieldtype_input_numeric"


@responses.activate
def test_field_choices_in_form_mode() -> None:
    reply(ruko.CHOICES_1042)
    choices = make_client(request_format="form").field_choices(ENTITY, 1042)
    form = sent_form(0)
    assert (form["action"], form["entity_id"], form["field_id"]) == (
        "get_field_choices",
        "70",
        "1042",
    )
    assert [c["name"] for c in choices] == ["В работе", "Новая"]  # noqa: RUF001


@responses.activate
def test_field_choices_that_are_not_a_list_are_a_protocol_error() -> None:
    reply('{"status":"success","data":{"id":"1"}}')
    with pytest.raises(UpstreamProtocolError, match="not a list of choices"):
        make_client().field_choices(ENTITY, 1042)


# ---- every error shape -------------------------------------------------------------------------
ERROR_SHAPES = [
    # id, body, HTTP status, error class, retryable, words the message must contain
    ("34_login_fail", ruko.ERROR_34_LOGIN_FAIL, 200, UpstreamAuthError, False,
     ["login_fail", "CRM_API_USERNAME", "CRM_API_PASSWORD"]),
    ("34_access_denied", ruko.ERROR_34_ACCESS_DENIED, 200, UpstreamAuthError, False,
     ["access_denied", "ERP_ENTITY_ID"]),
    ("34_key_mismatch", ruko.ERROR_34_KEY_MISMATCH, 200, UpstreamAuthError, False,
     ["API Key mismatch", "CRM_API_KEY"]),
    ("36_key_mismatch", ruko.ERROR_KEY_MISMATCH, 500, UpstreamAuthError, False,
     ["API Key mismatch", "CRM_API_KEY"]),
    ("36_field_not_exist", ruko.ERROR_FIELD_NOT_EXIST, 500, UpstreamRejected, False,
     ["field_9999 not exist in entity 70", "ERP_FIELD_MAP"]),
    ("36_entity_not_found", ruko.ERROR_ENTITY_NOT_FOUND, 500, UpstreamRejected, False,
     ["entity 9999 not found", "ERP_ENTITY_ID"]),
    ("36_key_required_old_server", ruko.ERROR_KEY_REQUIRED, 500, UpstreamRejected, False,
     ["key is required", "ERP_REQUEST_FORMAT=form"]),
    ("36_parent_required", ruko.ERROR_PARENT_REQUIRED, 500, UpstreamRejected, False,
     ["parent_item_id", "ERP_ENTITY_ID"]),
    ("36_empty_500", "", 500, UpstreamAuthError, False,
     ["empty body", "CRM_API_USERNAME", "CRM_API_PASSWORD", "ERP_ENTITY_ID"]),
    ("db_error", ruko.APP_DB_ERROR_UNKNOWN_COLUMN, 200, UpstreamProtocolError, False,
     ["1054 - Unknown column 'abc' in 'where clause'"]),
    ("db_error_after_warnings", ruko.APP_DB_ERROR_NO_TABLE_AFTER_WARNINGS, 200,
     UpstreamProtocolError, False, ["1146 - Table 'crm.app_entity_9999'", "ERP_ENTITY_ID"]),
    ("db_error_bare_fragment", "<app_db_error>1054 - Unknown column 'abc' in 'WHERE'", 200,
     UpstreamProtocolError, False, ["1054 - Unknown column 'abc'", "ERP_FIELD_MAP"]),
    ("db_gone_away", ruko.APP_DB_ERROR_GONE_AWAY, 200, UpstreamProtocolError, True,
     ["2006 - MySQL server has gone away"]),
    ("fatal_string_error_code", ruko.FATAL_HTTP_RESPONSE_CODE, 200, UpstreamAuthError, False,
     ["CRM_API_USERNAME", "CRM_API_PASSWORD"]),
    ("36_entity_does_not_exist", ruko.ERROR_ENTITY_DOES_NOT_EXIST, 500, UpstreamRejected, False,
     ["Entity #9999 does not exist", "ERP_ENTITY_ID"]),
    # Not one of Rukovoditel's own answers: worth a retry (a proxy, a crash, a cut body).
    ("fatal_other", ruko.FATAL_OTHER, 200, UpstreamProtocolError, True,
     ["PHP fatal error", "Allowed memory size", "if it persists"]),
    ("html_login_page", ruko.LOGIN_PAGE, 200, UpstreamProtocolError, True,
     ["not Rukovoditel JSON", "CRM_API_URL"]),
    ("html_500_from_the_web_server", ruko.APACHE_500, 500, UpstreamProtocolError, True,
     ["not Rukovoditel JSON", "HTTP 500", "if it persists"]),
    ("html_404", ruko.NGINX_404, 404, UpstreamProtocolError, False, ["HTTP 404", "CRM_API_URL"]),
    ("redirect", "", 301, UpstreamProtocolError, False, ["HTTP 301", "CRM_API_URL"]),
    ("empty_200", "", 200, UpstreamProtocolError, True, ["empty body"]),
    ("json_without_status", '{"data":{"id":"1"}}', 200, UpstreamProtocolError, True,
     ["unexpected answer"]),
    ("json_not_object", "[]", 200, UpstreamProtocolError, True, ["not Rukovoditel JSON"]),
    ("502", ruko.NGINX_502, 502, UpstreamUnavailable, True, ["HTTP 502"]),
    ("html_500", ruko.NGINX_500, 500, UpstreamProtocolError, True, ["HTTP 500", "web server"]),
    ("json_500_not_envelope", '{"message":"Internal Server Error"}', 500, UpstreamProtocolError,
     True, ["HTTP 500", "web server"]),
    ("503", "", 503, UpstreamUnavailable, True, ["HTTP 503"]),
    ("504", ruko.NGINX_502.replace("502 Bad", "504 Gateway"), 504, UpstreamUnavailable, True,
     ["HTTP 504"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "error_class", "retryable", "words"),
    [shape[1:] for shape in ERROR_SHAPES],
    ids=[shape[0] for shape in ERROR_SHAPES],
)
@responses.activate
def test_error_shapes(
    body: str, status: int, error_class: type[UpstreamError], retryable: bool, words: list[str]
) -> None:
    reply(body, status)
    with pytest.raises(UpstreamError) as caught:
        make_client().insert(ENTITY, ITEMS)
    error = caught.value
    assert type(error) is error_class
    assert error.retryable is retryable
    assert error.service == "erp"
    assert error.status == status
    for word in words:
        assert word in str(error)


@responses.activate
def test_429_keeps_retry_after() -> None:
    reply("", 429, headers={"Retry-After": "30"})
    with pytest.raises(UpstreamUnavailable) as caught:
        make_client().select(ENTITY, filters={}, select_fields=[1041], limit=2)
    assert caught.value.retry_after_seconds == 30.0


@pytest.mark.parametrize(
    "failure",
    [requests.ReadTimeout("read timed out"), requests.ConnectionError("connection reset")],
    ids=["timeout", "reset"],
)
@responses.activate
def test_network_failures_are_retryable(failure: Exception) -> None:
    reply(failure)
    with pytest.raises(UpstreamUnavailable) as caught:
        make_client().insert(ENTITY, ITEMS)
    assert caught.value.retryable


@responses.activate
def test_error_body_excerpt_is_kept_for_logs() -> None:
    reply(ruko.ERROR_FIELD_NOT_EXIST, 500)
    with pytest.raises(UpstreamRejected) as caught:
        make_client().insert(ENTITY, {"field_9999": "x"})
    assert "field_9999 not exist in entity 70" in caught.value.body_excerpt


# ---- secrets -----------------------------------------------------------------------------------
ECHOING_DB_ERROR = ruko.APP_DB_ERROR_GONE_AWAY.replace(
    "/api/rest.php", f"/api/rest.php?key={KEY}&amp;password={PASSWORD}"
).replace("2006 - MySQL server has gone away", f"1064 - syntax error near '{PASSWORD}'")
ECHOING_JSON_ERROR = json.dumps(
    {"status": "error", "error_code": 500, "error_message": f"API Key mismatch: {KEY}"}
)


@responses.activate
def test_no_secret_in_errors_logs_or_outputs(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    bodies = [
        (ECHOING_DB_ERROR, 200),
        (ECHOING_JSON_ERROR, 500),
        (f"<html>debug: password={PASSWORD} key {KEY}</html>", 200),
        (f"<br />\n<b>Fatal error</b>:  Uncaught Error: bad {PASSWORD} in /x.php:1", 200),
    ] + [(shape[1], shape[2]) for shape in ERROR_SHAPES]
    client = make_client()
    with caplog.at_level(logging.DEBUG):
        for body, status in bodies:
            responses.reset()
            reply(body, status)
            with pytest.raises(UpstreamError) as caught:
                client.insert(ENTITY, ITEMS)
            seen += [str(caught.value), caught.value.body_excerpt, repr(caught.value)]
        responses.reset()
        reply(ruko.SELECT_TWO)
        reply(ruko.UPDATE_OK)
        seen.append(json.dumps(client.select(ENTITY, filters={}, select_fields=[LOOKUP], limit=2)))
        responses.reset()
        reply(ruko.LOGIN_OK)
        seen.append(json.dumps(client.login()))
    seen += [caplog.text, repr(client)]
    # The echoed bodies really did carry the secrets, so the scan below means something.
    assert KEY in ECHOING_JSON_ERROR and PASSWORD in ECHOING_DB_ERROR
    everything = "\n".join(seen)
    assert "erp" in everything
    for secret in (KEY, PASSWORD):
        assert secret not in everything


@responses.activate
def test_short_password_is_scrubbed_by_exact_value() -> None:
    # The global redaction ignores values under 4 characters; the client masks its own.
    reply('{"status":"error","error_code":500,"error_message":"bad login pw9 for api"}', 500)
    with pytest.raises(UpstreamRejected) as caught:
        ERPClient(ERP_URL, KEY, "api", "pw9").insert(ENTITY, ITEMS)
    assert "pw9" not in str(caught.value) and "pw9" not in caught.value.body_excerpt
    assert "bad login" in str(caught.value)
