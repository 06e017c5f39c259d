"""Rotating the webhook secret without refusing amoCRM in between (AMOCRM_WEBHOOK_SECRET_PREVIOUS)."""

from __future__ import annotations

import logging

import pytest
import responses

from prometei.config import settings_from_mapping
from prometei.doctor import check_webhook_secret
from prometei.web.apps import create_webhook_app
from tests.conftest import BASE_ENV, EVENT_API, TEST_SECRETS
from tests.fixtures.amocrm_bodies import STATUS_LEAD, encode

OLD = TEST_SECRETS["AMOCRM_WEBHOOK_SECRET"]
NEW = "webhook-secret-NEW-5555-rotated"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def rotating(set_env):
    set_env(AMOCRM_WEBHOOK_SECRET=NEW, AMOCRM_WEBHOOK_SECRET_PREVIOUS=OLD)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as event_api:
        event_api.post(EVENT_API, json={"ids": ["01ROT"], "status": 200})
        yield create_webhook_app().test_client(), event_api


def _post(client, token: str):
    return client.post(f"/api/webhook?token={token}", data=encode(STATUS_LEAD), content_type=FORM)


def test_both_secrets_are_accepted_during_the_switch(rotating, caplog) -> None:
    client, event_api = rotating
    with caplog.at_level(logging.WARNING, logger="prometei.web.intake"):
        assert _post(client, NEW).status_code == 200
        assert "PREVIOUS" not in caplog.text
        assert _post(client, OLD).status_code == 200
    assert len(event_api.calls) == 2
    assert "accepted with AMOCRM_WEBHOOK_SECRET_PREVIOUS" in caplog.text
    assert OLD not in caplog.text and NEW not in caplog.text


@pytest.mark.parametrize("token", ["", "webhook-secret-SECRET-222", "something-else"])
def test_other_tokens_are_still_refused_during_the_switch(rotating, token) -> None:
    client, event_api = rotating
    assert _post(client, token).status_code == 401
    assert len(event_api.calls) == 0


def test_without_the_previous_secret_the_old_url_is_refused(set_env) -> None:
    set_env(AMOCRM_WEBHOOK_SECRET=NEW)
    client = create_webhook_app().test_client()
    assert _post(client, OLD).status_code == 401


def test_the_previous_secret_is_redacted_like_any_secret() -> None:
    settings = settings_from_mapping(dict(BASE_ENV, AMOCRM_WEBHOOK_SECRET_PREVIOUS=NEW))
    assert NEW in settings.secret_values()


def test_doctor_reminds_to_unset_the_previous_secret() -> None:
    settings = settings_from_mapping(dict(BASE_ENV, AMOCRM_WEBHOOK_SECRET_PREVIOUS=NEW))
    check = check_webhook_secret(settings)
    assert check.ok and check.warning
    assert "AMOCRM_WEBHOOK_SECRET_PREVIOUS" in check.fix
    assert NEW not in check.detail + check.fix
