"""The amoCRM webhook intake over HTTP: every answer DESIGN.md 3.2 promises, and readiness."""

from __future__ import annotations

import io
import json
import logging

import pytest
import requests
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prometei.web.apps import create_webhook_app
from prometei.web.intake import MAX_BODY_BYTES
from tests.conftest import EVENT_API, TEST_SECRETS
from tests.fixtures.amocrm_bodies import (
    ADD_TWO_LEADS,
    CONTACT_AND_TASK,
    STATUS_LEAD,
    encode,
    lines,
)

SECRET = TEST_SECRETS["AMOCRM_WEBHOOK_SECRET"]
URL = f"/api/webhook?token={SECRET}"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def client():
    return create_webhook_app().test_client()


@pytest.fixture
def event_api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def accept_events(mock: responses.RequestsMock, ids: list[str]) -> None:
    mock.post(EVENT_API, json={"ids": ids, "status": 200})


def post(client, body: bytes | str, url: str = URL, content_type: str = FORM, **kwargs):
    data = encode(body) if isinstance(body, str) else body
    return client.post(url, data=data, content_type=content_type, **kwargs)


def sent_events(mock: responses.RequestsMock) -> list[dict]:
    assert len(mock.calls) == 1, "all events of one webhook go in one call"
    return json.loads(mock.calls[0].request.body)


def replace(body: str, key: str, value: str) -> str:
    return "\n".join(f"{k}={value if k == key else v}" for k, v in lines(body))


def assert_no_secret(text: str) -> None:
    for value in TEST_SECRETS.values():
        assert value not in text


# ---- 200 -----------------------------------------------------------------------------------


def test_status_change_is_sent_to_inngest(client, event_api) -> None:
    accept_events(event_api, ["01HXYZ"])

    response = post(client, STATUS_LEAD)

    assert response.status_code == 200
    [event] = sent_events(event_api)
    assert response.get_json() == {
        "accepted": 1,
        "ignored": 0,
        "event_ids": [event["id"]],
        "inngest_ids": ["01HXYZ"],
    }
    assert event["id"].startswith("amocrm-lead-25399013-status-")
    assert event == {
        "name": "amocrm/lead.status",
        "data": {
            "lead_id": 25399013,
            "account_id": 29085955,
            "subdomain": "example",
            "action": "status",
            "pipeline_id": 7012345,
            "status_id": 142,
            "old_pipeline_id": 7012345,
            "old_status_id": 32392156,
            "status_changed": True,
            "pipeline_changed": False,
            "fields": {
                "id": "25399013",
                "name": "Order #1042",
                "status_id": "142",
                "old_status_id": "32392156",
                "price": "15000",
                "responsible_user_id": "938348",
                "last_modified": "1712056800",
                "modified_user_id": "938348",
                "created_user_id": "102525",
                "date_create": "1711900000",
                "pipeline_id": "7012345",
                "old_pipeline_id": "7012345",
                "account_id": "29085955",
                "created_at": "1711900000",
                "updated_at": "1712056800",
            },
        },
        "id": event["id"],
    }
    assert event["id"].startswith("amocrm-lead-25399013-status-")
    # Short timeout: amoCRM gives up after 2 s.
    connect, read = event_api.calls[0].request.req_kwargs["timeout"]
    assert connect + read < 2.5


def test_redelivered_webhook_sends_the_same_event_id(client, event_api) -> None:
    accept_events(event_api, ["01A"])
    post(client, STATUS_LEAD)
    post(client, STATUS_LEAD)

    first, second = (json.loads(call.request.body)[0]["id"] for call in event_api.calls)
    assert first == second


def test_the_answer_names_our_event_ids_the_same_on_redelivery(client, event_api) -> None:
    accept_events(event_api, ["01A"])

    answers = [post(client, STATUS_LEAD).get_json() for _ in range(2)]

    assert answers[0]["event_ids"] == answers[1]["event_ids"]
    assert answers[0]["event_ids"] == [json.loads(event_api.calls[0].request.body)[0]["id"]]


def test_several_leads_go_in_one_call(client, event_api) -> None:
    accept_events(event_api, ["01A", "01B"])

    response = post(client, ADD_TWO_LEADS)

    events = sent_events(event_api)
    assert response.get_json() == {
        "accepted": 2,
        "ignored": 0,
        "event_ids": [e["id"] for e in events],
        "inngest_ids": ["01A", "01B"],
    }
    assert [(e["name"], e["data"]["lead_id"]) for e in events] == [
        ("amocrm/lead.add", 25400001),
        ("amocrm/lead.add", 25400002),
    ]


def test_contacts_and_tasks_are_acknowledged_without_calling_inngest(client, event_api) -> None:
    response = post(client, CONTACT_AND_TASK)

    assert response.status_code == 200
    assert response.get_json() == {
        "accepted": 0,
        "ignored": 4,
        "event_ids": [],
        "inngest_ids": [],
    }
    assert len(event_api.calls) == 0


def test_status_outside_the_trigger_list_is_ignored(client, event_api, set_env) -> None:
    set_env(AMOCRM_TRIGGER_STATUSES="7012345:143")

    response = post(client, STATUS_LEAD)

    assert response.status_code == 200
    assert response.get_json() == {
        "accepted": 0,
        "ignored": 1,
        "event_ids": [],
        "inngest_ids": [],
    }
    assert len(event_api.calls) == 0


def test_one_info_line_with_counts_and_no_token(client, event_api, caplog) -> None:
    accept_events(event_api, ["01A", "01B"])

    with caplog.at_level(logging.INFO, logger="prometei.web.intake"):
        post(client, ADD_TWO_LEADS)

    lines_ = [r for r in caplog.records if r.name == "prometei.web.intake"]
    assert len(lines_) == 1
    assert lines_[0].levelno == logging.INFO
    assert "accepted=2" in lines_[0].getMessage()
    assert_no_secret(caplog.text)


def test_dev_mode_without_a_secret_accepts_with_a_warning(client, set_env, caplog) -> None:
    set_env(INNGEST_DEV="1", AMOCRM_WEBHOOK_SECRET=None)
    with responses.RequestsMock() as mock:
        mock.post(
            f"http://127.0.0.1:8288/e/{TEST_SECRETS['INNGEST_EVENT_KEY']}", json={"ids": ["d"]}
        )
        response = post(client, STATUS_LEAD, url="/api/webhook")

    assert response.status_code == 200
    assert "AMOCRM_WEBHOOK_SECRET is not set" in caplog.text


# ---- 4xx -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/api/webhook",
        "/api/webhook?token=",
        "/api/webhook?token=wrong",
        "/api/webhook?token=%C3%A9",
    ],
)
def test_missing_or_wrong_token_is_401(client, event_api, url: str) -> None:
    response = post(client, STATUS_LEAD, url=url)

    assert response.status_code == 401
    assert "?token=" in response.get_json()["error"]
    assert len(event_api.calls) == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"leads[status][0][id]=abc&account[subdomain]=example", "must be a number"),
        (b"leads[status][0][id]=%zz&account[subdomain]=example", "percent-encoding"),
        (b"leads[status][0][id]=1", "no account block"),
        (b"\xff\xfe\x00", "UTF-8"),
        (b"a=1&a[b]=2&account[subdomain]=example", "both a value and a group"),
    ],
)
def test_malformed_body_is_400(client, event_api, body: bytes, fragment: str) -> None:
    response = post(client, body)

    assert response.status_code == 400
    assert fragment in response.get_json()["error"]
    assert len(event_api.calls) == 0


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("account[subdomain]", "intruder", "'intruder'"),
        ("account[id]", "1234", "AMOCRM_ACCOUNT_ID"),
        ("account[_links][self]", "https://example.evil.test", "account[_links][self]"),
        ("account[_links][self]", "https://other.amocrm.ru", "account[_links][self]"),
    ],
)
def test_another_account_is_403(client, event_api, key: str, value: str, fragment: str) -> None:
    response = post(client, replace(STATUS_LEAD, key, value))

    assert response.status_code == 403
    assert fragment in response.get_json()["error"]
    assert len(event_api.calls) == 0


def test_kommo_host_of_the_same_account_is_accepted(client, event_api) -> None:
    accept_events(event_api, ["k"])

    response = post(
        client, replace(STATUS_LEAD, "account[_links][self]", "https://example.kommo.com")
    )

    assert response.status_code == 200


def test_account_id_is_not_checked_when_not_configured(client, event_api, set_env) -> None:
    set_env(AMOCRM_ACCOUNT_ID=None)
    accept_events(event_api, ["x"])

    response = post(client, replace(STATUS_LEAD, "account[id]", "1234"))

    assert response.status_code == 200


def test_content_length_over_the_limit_is_413(client, event_api) -> None:
    response = post(client, b"x=" + b"a" * MAX_BODY_BYTES)

    assert response.status_code == 413
    assert len(event_api.calls) == 0


def test_body_over_the_limit_without_content_length_is_413(client, event_api) -> None:
    big = b"x=" + b"a" * MAX_BODY_BYTES
    response = client.post(
        URL,
        input_stream=io.BytesIO(big),
        content_type=FORM,
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 413


def test_body_at_the_limit_is_read(client, event_api) -> None:
    accept_events(event_api, ["x"])
    padding = MAX_BODY_BYTES - len(encode(STATUS_LEAD)) - len("&pad=")
    body = encode(STATUS_LEAD) + b"&pad=" + b"a" * padding
    assert len(body) == MAX_BODY_BYTES

    assert post(client, body).status_code == 200


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "multipart/form-data"])
def test_not_a_form_is_415(client, event_api, content_type: str) -> None:
    response = post(client, b'{"leads": []}', content_type=content_type)

    assert response.status_code == 415
    assert FORM in response.get_json()["error"]


def test_content_type_is_checked_before_the_token(client) -> None:
    response = post(client, b"{}", url="/api/webhook", content_type="application/json")

    assert response.status_code == 415


# ---- 503 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        dict(body=requests.ReadTimeout()),
        dict(body=requests.ConnectionError()),
        dict(status=500, body="boom"),
        dict(status=503, json={"error": "down"}),
        dict(status=401, json={"error": "Event key not found"}),
    ],
)
def test_event_api_failure_is_503_so_amocrm_retries(client, event_api, answer: dict) -> None:
    event_api.post(EVENT_API, **answer)

    response = post(client, STATUS_LEAD)

    assert response.status_code == 503
    message = response.get_json()["error"]
    assert "amoCRM will retry" in message
    assert_no_secret(message)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"AMOCRM_SUBDOMAIN": None}, "AMOCRM_SUBDOMAIN"),
        ({"AMOCRM_WEBHOOK_SECRET": None}, "AMOCRM_WEBHOOK_SECRET"),
        ({"INNGEST_EVENT_KEY": None}, "INNGEST_EVENT_KEY"),
        ({"AMOCRM_TRIGGER_STATUSES": "not-a-pair"}, "AMOCRM_TRIGGER_STATUSES"),
    ],
)
def test_misconfiguration_is_503_naming_the_variable(
    client, event_api, set_env, env: dict, variable: str
) -> None:
    set_env(**env)

    response = post(client, STATUS_LEAD)

    assert response.status_code == 503
    assert variable in response.get_json()["error"]
    assert len(event_api.calls) == 0


def test_unexpected_failure_is_503_not_500(client, event_api, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr("prometei.web.intake.build_lead_events", broken)

    response = post(client, STATUS_LEAD)

    assert response.status_code == 503
    assert "amoCRM will retry" in response.get_json()["error"]


@settings(
    max_examples=150,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.binary(max_size=200), st.sampled_from([b"", b"&account[subdomain]=example"]))
def test_any_body_gets_a_deliberate_answer(raw: bytes, suffix: bytes) -> None:
    client = create_webhook_app().test_client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        accept_events(mock, ["f"])
        response = post(client, raw + suffix)

    assert response.status_code in (200, 400, 403)
    assert response.is_json


# ---- GET readiness -------------------------------------------------------------------------


def test_readiness_reports_presence_only(client) -> None:
    response = client.get("/api/webhook")

    assert response.status_code == 200
    report = response.get_json()
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["mode"] == "cloud"
    assert report["store"] == "file"
    assert report["token_mode"] == "long-lived"
    assert report["settings"]["AMOCRM_WEBHOOK_SECRET"] is True
    assert report["settings"]["AMOCRM_CLIENT_ID"] is False
    assert all(isinstance(v, bool) for v in report["settings"].values())
    assert_no_secret(response.get_data(as_text=True))


def test_readiness_lists_problems(client, set_env) -> None:
    set_env(AMOCRM_WEBHOOK_SECRET=None, INNGEST_EVENT_KEY=None, AMOCRM_ACCESS_TOKEN=None)

    response = client.get("/api/webhook")

    assert response.status_code == 503
    report = response.get_json()
    assert report["ok"] is False
    assert report["token_mode"] == "oauth"
    joined = " ".join(report["problems"])
    for variable in ("AMOCRM_WEBHOOK_SECRET", "INNGEST_EVENT_KEY", "AMOCRM_CLIENT_ID"):
        assert variable in joined
    assert_no_secret(response.get_data(as_text=True))


def test_readiness_in_dev_mode_does_not_require_cloud_keys(client, set_env) -> None:
    set_env(INNGEST_DEV="1", AMOCRM_WEBHOOK_SECRET=None, INNGEST_EVENT_KEY=None)

    report = client.get("/api/webhook").get_json()

    assert report["mode"] == "dev"
    assert report["ok"] is True


def test_readiness_with_broken_settings(client, set_env) -> None:
    set_env(AMOCRM_TRIGGER_STATUSES="nonsense")

    response = client.get("/api/webhook")

    assert response.status_code == 503
    assert "AMOCRM_TRIGGER_STATUSES" in response.get_json()["problems"][0]


# ---- the same handling on /api/inngest -----------------------------------------------------


def test_form_post_to_inngest_endpoint_is_handled_as_a_webhook(event_api) -> None:
    from prometei.web.apps import create_inngest_app

    client = create_inngest_app().test_client()
    accept_events(event_api, ["01I"])

    ok = post(client, STATUS_LEAD, url=f"/api/inngest?token={SECRET}")
    refused = post(client, STATUS_LEAD, url="/api/inngest?token=wrong")

    assert ok.status_code == 200
    [event] = sent_events(event_api)
    assert ok.get_json()["event_ids"] == [event["id"]]
    assert ok.get_json()["inngest_ids"] == ["01I"]
    assert event["name"] == "amocrm/lead.status"
    assert refused.status_code == 401
