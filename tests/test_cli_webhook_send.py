"""`python -m prometei webhook send` against a `responses`-mocked intake.

The captured body must parse with the project's own webhook parser (and be accepted by the
real intake app), the token must travel in `?token=` only, and no output may show a secret.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from click.testing import CliRunner, Result

from prometei.amocrm.webhook import parse_webhook
from prometei.cli.webhook_send import shown_url, webhook, with_token
from prometei.events import build_lead_events
from prometei.samples import SampleLead, encode_form, webhook_fields
from tests.conftest import EVENT_API, TEST_SECRETS

INTAKE = "https://prometei.example.test/api/webhook"
SECRET = TEST_SECRETS["AMOCRM_WEBHOOK_SECRET"]


@pytest.fixture(autouse=True)
def _restore_root_level():
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def assert_no_secrets(*texts: str, extra: tuple[str, ...] = ()) -> None:
    for text in texts:
        for secret in (*TEST_SECRETS.values(), *extra):
            assert secret not in text


def invoke(*args: str, extra_secrets: tuple[str, ...] = ()) -> Result:
    result = CliRunner().invoke(webhook, ["send", *args])
    assert_no_secrets(result.output, result.stdout, result.stderr, extra=extra_secrets)
    return result


@pytest.fixture
def intake():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(
            INTAKE,
            json={
                "accepted": 1,
                "ignored": 0,
                "event_ids": ["amocrm-lead-25399013-status-142-7012345-1732000000"],
                "inngest_ids": ["01JEVENT"],
            },
        )
        yield rsps


def sent(intake) -> tuple[bytes, dict[str, list[str]], str]:
    request = intake.calls[-1].request
    return request.body, parse_qs(urlsplit(request.url).query), request.headers["Content-Type"]


def test_default_sends_a_status_change_with_the_configured_token(intake):
    result = invoke("--url", INTAKE)
    assert result.exit_code == 0, result.output
    body, query, content_type = sent(intake)
    assert query == {"token": [SECRET]}
    assert content_type == "application/x-www-form-urlencoded"
    payload = parse_webhook(body)
    assert payload.account.subdomain == "example"
    assert payload.account.id == 29085955
    assert payload.account.self_host == "example.amocrm.ru"
    [item] = payload.leads
    assert (item.action, item.id, item.status_id, item.pipeline_id) == (
        "status",
        25399013,
        142,
        7012345,
    )
    assert item.old_status_id == 32392156
    assert "HTTP 200" in result.stdout
    assert '"accepted": 1' in result.stdout
    assert "token=%5BREDACTED%5D" in result.stdout or "token=[REDACTED]" in result.stdout


@pytest.mark.parametrize("kind", ["status", "add", "update"])
def test_each_kind_parses_into_one_lead_event_of_that_action(intake, kind):
    result = invoke(
        "--url",
        INTAKE,
        "--kind",
        kind,
        "--lead-id",
        "31234567",
        "--status-id",
        "143",
        "--pipeline-id",
        "6254262",
    )
    assert result.exit_code == 0, result.output
    body, _, _ = sent(intake)
    payload = parse_webhook(body)
    [item] = payload.leads
    assert (item.action, item.id, item.status_id, item.pipeline_id) == (
        kind,
        31234567,
        143,
        6254262,
    )
    [event] = build_lead_events(payload).events
    assert event["name"] == f"amocrm/lead.{kind}"
    assert event["data"]["lead_id"] == 31234567
    if kind == "update":
        assert item.fields["custom_fields"]["0"]["values"]["0"]["value"] == "Website"


def test_the_body_is_accepted_by_the_real_intake(intake):
    result = invoke("--url", INTAKE)
    assert result.exit_code == 0
    body, query, content_type = sent(intake)

    from prometei.web.apps import create_webhook_app

    with responses.RequestsMock() as inngest:
        inngest.post(EVENT_API, json={"ids": ["01JREAL"], "status": 200})
        answer = (
            create_webhook_app()
            .test_client()
            .post(f"/api/webhook?token={query['token'][0]}", data=body, content_type=content_type)
        )
        events = json.loads(inngest.calls[0].request.body)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["accepted"] == 1
    assert events[0]["name"] == "amocrm/lead.status"


def test_token_option_wins_and_an_old_token_in_the_url_is_replaced(intake):
    result = invoke(
        "--url",
        INTAKE + "?token=stale-value&x=1",
        "--token",
        "given-SECRET-9999",
        extra_secrets=("given-SECRET-9999",),
    )
    assert result.exit_code == 0, result.output
    _, query, _ = sent(intake)
    assert query == {"x": ["1"], "token": ["given-SECRET-9999"]}


def test_subdomain_and_account_id_options_change_the_sender(intake):
    result = invoke("--url", INTAKE, "--subdomain", "other", "--account-id", "123")
    assert result.exit_code == 0
    payload = parse_webhook(sent(intake)[0])
    assert (payload.account.subdomain, payload.account.id) == ("other", 123)


def test_a_refusal_exits_1_with_the_answer_and_a_hint(intake):
    intake.replace(
        responses.POST,
        INTAKE,
        status=401,
        json={"error": "missing or wrong ?token= in the webhook URL"},
    )
    result = invoke("--url", INTAKE)
    assert result.exit_code == 1
    assert "HTTP 401" in result.stdout
    assert "missing or wrong ?token=" in result.stdout
    assert "AMOCRM_WEBHOOK_SECRET" in result.stderr


def test_an_unreachable_intake_exits_1(intake):
    result = invoke("--url", "https://nowhere.example.test/api/webhook")
    assert result.exit_code == 1
    assert "request failed" in result.stderr


def test_no_account_is_a_usage_error(intake, set_env):
    set_env(AMOCRM_SUBDOMAIN=None)
    result = invoke("--url", INTAKE)
    assert result.exit_code == 2
    assert "--subdomain" in result.stderr
    assert len(intake.calls) == 0


def test_bad_kind_is_a_click_usage_error():
    result = invoke("--kind", "delete")
    assert result.exit_code == 2


# ---- samples and URL helpers ------------------------------------------------------------------


def test_a_fixed_time_gives_the_same_event_id_and_a_new_time_a_new_one():
    def event_id(now: int) -> str:
        pairs = webhook_fields("status", subdomain="example", now=now)
        return build_lead_events(parse_webhook(encode_form(pairs))).events[0]["id"]

    assert event_id(1712056800) == event_id(1712056800)
    assert event_id(1712056800) != event_id(1712056801)


def test_sample_lead_values_land_in_the_body():
    lead = SampleLead(lead_id=5, pipeline_id=6, status_id=7, old_status_id=8, name="Café & Co")
    payload = parse_webhook(encode_form(webhook_fields("status", subdomain="acme", lead=lead)))
    item = payload.leads[0]
    assert (item.id, item.pipeline_id, item.status_id, item.old_status_id) == (5, 6, 7, 8)
    assert item.fields["name"] == "Café & Co"


def test_url_helpers_mask_and_replace_the_token():
    url = with_token("https://h.test/api/webhook?token=old", "new-one")
    assert parse_qs(urlsplit(url).query) == {"token": ["new-one"]}
    assert "new-one" not in shown_url(url)
    assert with_token("https://h.test/api/webhook?token=old", None) == "https://h.test/api/webhook"
