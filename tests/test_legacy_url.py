"""The TypeScript version's webhook URLs: /api/amocrm-webhook, and /api/inngest without a token.

With ?token= they are the intake. Without it they are refused by default, with the URL to put
into amoCRM; AMOCRM_WEBHOOK_ALLOW_LEGACY_URL=1 accepts them (account check still applied), and
doctor warns while it is on.
"""

from __future__ import annotations

import logging

import pytest

from prometei.doctor import check_environment
from prometei.web.apps import create_inngest_app, create_webhook_app
from tests.conftest import BASE_ENV, TEST_SECRETS
from tests.fixtures.amocrm_bodies import STATUS_LEAD, encode, lines
from tests.support.legacy import FORM, SECRET, accept_events, intake_events, sent_batches
from tests.test_entrypoints import ENTRYPOINTS, load_like_vercel

OLD_URL = "/api/amocrm-webhook"


@pytest.fixture(autouse=True)
def _no_public_origin(set_env) -> None:
    # Neither is a project-prefixed variable, so the shared fixture does not clear them.
    set_env(PUBLIC_URL=None, VERCEL_PROJECT_PRODUCTION_URL=None)


def post(client, url: str, body: str = STATUS_LEAD, **kwargs):
    return client.post(url, data=encode(body), content_type=FORM, **kwargs)


def assert_no_secret(text: str) -> None:
    for value in TEST_SECRETS.values():
        assert value not in text


# ---- with the token: the intake -----------------------------------------------------------


@pytest.mark.parametrize("app", [create_webhook_app, create_inngest_app])
def test_old_urls_with_the_token_send_the_intakes_events(mock, app) -> None:
    accept_events(mock)
    expected = intake_events(mock, STATUS_LEAD)
    url = OLD_URL if app is create_webhook_app else "/api/inngest"

    response = post(app().test_client(), f"{url}?token={SECRET}")

    assert response.status_code == 200
    assert response.get_json()["accepted"] == 1
    assert sent_batches(mock)[1:] == [expected]


def test_old_url_with_a_wrong_token_is_401_even_with_the_opt_in(mock, set_env) -> None:
    set_env(AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="1")
    response = post(create_webhook_app().test_client(), f"{OLD_URL}?token=wrong")
    assert response.status_code == 401
    assert "AMOCRM_WEBHOOK_SECRET" in response.get_json()["error"]
    assert sent_batches(mock) == []


# ---- without the token: refused by default, naming the URL to use -------------------------


@pytest.mark.parametrize(
    ("env", "expected_url", "source"),
    [
        (
            {"PUBLIC_URL": "https://prometei.example.com/some/page/"},
            "https://prometei.example.com/api/webhook?token=<AMOCRM_WEBHOOK_SECRET>",
            "PUBLIC_URL",
        ),
        (
            {"VERCEL_PROJECT_PRODUCTION_URL": "prometei-ingest.vercel.app"},
            "https://prometei-ingest.vercel.app/api/webhook?token=<AMOCRM_WEBHOOK_SECRET>",
            "VERCEL_PROJECT_PRODUCTION_URL",
        ),
        (
            {},
            "https://intake.example.org/api/webhook?token=<AMOCRM_WEBHOOK_SECRET>",
            "Host header",
        ),
    ],
    ids=["public-url", "vercel-production-url", "request-origin"],
)
@pytest.mark.parametrize("path", [OLD_URL, "/api/inngest"])
def test_tokenless_old_url_is_refused_naming_the_url_to_put_into_amocrm(
    mock, set_env, env, expected_url, source, path
) -> None:
    set_env(**env)
    app = create_webhook_app() if path == OLD_URL else create_inngest_app()

    response = post(app.test_client(), path, base_url="https://intake.example.org")

    assert response.status_code == 401
    message = response.get_json()["error"]
    assert f"{path} without ?token=" in message
    assert f"replace it with {expected_url} " in message
    assert f"origin from {source}" in message or source in message
    assert "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL=1" in message
    assert_no_secret(response.get_data(as_text=True))
    assert sent_batches(mock) == []


def test_request_origin_honours_the_forwarded_scheme(mock) -> None:
    response = post(
        create_webhook_app().test_client(),
        OLD_URL,
        base_url="http://intake.example.org",
        headers={"X-Forwarded-Proto": "https"},
    )
    assert "https://intake.example.org/api/webhook?token=" in response.get_json()["error"]


def test_the_new_url_never_takes_the_tokenless_rule(mock, set_env) -> None:
    set_env(AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="1")
    response = post(create_webhook_app().test_client(), "/api/webhook")
    assert response.status_code == 401
    assert "missing or wrong ?token=" in response.get_json()["error"]
    assert sent_batches(mock) == []


# ---- the opt-in bridge --------------------------------------------------------------------


@pytest.mark.parametrize("path", [OLD_URL, "/api/inngest"])
def test_opt_in_accepts_the_tokenless_old_url_with_the_intakes_events(
    mock, set_env, caplog, path
) -> None:
    set_env(AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="1", PUBLIC_URL="https://prometei.example.com")
    accept_events(mock)
    expected = intake_events(mock, STATUS_LEAD)
    app = create_webhook_app() if path == OLD_URL else create_inngest_app()
    caplog.set_level(logging.WARNING)

    response = post(app.test_client(), path)

    assert response.status_code == 200
    assert sent_batches(mock)[1:] == [expected]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        path in line
        and "use https://prometei.example.com/api/webhook with the token parameter" in line
        for line in warnings
    )
    assert_no_secret("\n".join(warnings))


def test_opt_in_still_checks_the_account(mock, set_env) -> None:
    set_env(AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="1")
    body = "\n".join(
        f"{key}={'elsewhere' if key == 'account[subdomain]' else value}"
        for key, value in lines(STATUS_LEAD)
        if key != "account[_links][self]"
    )
    response = post(create_webhook_app().test_client(), OLD_URL, body)
    assert response.status_code == 403
    assert "AMOCRM_SUBDOMAIN" in response.get_json()["error"]
    assert sent_batches(mock) == []


def test_a_malformed_opt_in_value_is_a_configuration_error(mock, set_env) -> None:
    set_env(AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="perhaps")
    response = post(create_webhook_app().test_client(), OLD_URL)
    assert response.status_code == 503
    assert "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL" in response.get_json()["error"]


# ---- the Vercel entrypoint and doctor -----------------------------------------------------


def test_old_url_entrypoint_serves_the_intake_on_its_full_path(mock) -> None:
    app = load_like_vercel(ENTRYPOINTS[OLD_URL]).app
    client = app.test_client()

    refused = post(client, OLD_URL)
    readiness = client.get(OLD_URL)

    assert refused.status_code == 401
    assert "/api/webhook?token=<AMOCRM_WEBHOOK_SECRET>" in refused.get_json()["error"]
    assert readiness.status_code == 200
    assert readiness.get_json()["ok"] is True


def test_doctor_warns_while_the_opt_in_is_on() -> None:
    on = dict(BASE_ENV, AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="1", PUBLIC_URL="https://p.example.com")
    rows, settings = check_environment(on)
    [row] = [r for r in rows if r.name == "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL"]
    assert settings is not None
    assert (row.status, row.ok) == ("WARN", True)
    assert "without ?token=" in row.detail
    assert "https://p.example.com/api/webhook?token=<AMOCRM_WEBHOOK_SECRET>" in row.fix
    assert "remove AMOCRM_WEBHOOK_ALLOW_LEGACY_URL" in row.fix

    off_rows, _ = check_environment(dict(BASE_ENV))
    assert "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL" not in {r.name for r in off_rows}


def test_doctor_fails_a_malformed_opt_in_value() -> None:
    rows, _ = check_environment(dict(BASE_ENV, AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="perhaps"))
    [row] = [r for r in rows if r.name == "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL"]
    assert row.status == "FAIL"
    assert "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL to 1" in row.fix
