"""amocrm-token-keepalive over the signed executor protocol (cron trigger).

amoCRM's token endpoint is a `responses` mock; the pair lives in the real file store under the
test's PROMETEI_STATE_DIR.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest
import responses
from pydantic import SecretStr

from tests.conftest import AMO_BASE
from tests.support.executor import make_event, run_function

FN = "amocrm-token-keepalive"
TOKEN_URL = AMO_BASE + "/oauth2/access_token"
OLD_ACCESS = "old-access-SECRET-1212"
OLD_REFRESH = "old-refresh-SECRET-3434"
NEW_ACCESS = "new-access-SECRET-5656"
NEW_REFRESH = "new-refresh-SECRET-7878"
CLIENT_SECRET = "client-secret-SECRET-5555"
DAY = 86400


@pytest.fixture
def oauth_env(set_env) -> None:
    set_env(
        AMOCRM_ACCESS_TOKEN=None,
        AMOCRM_CLIENT_ID="client-id-1",
        AMOCRM_CLIENT_SECRET=CLIENT_SECRET,
        AMOCRM_REDIRECT_URI="https://prometei.example.test/api/oauth/callback",
    )


@pytest.fixture
def amo() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def cron_event() -> dict:
    from prometei.functions.keepalive import CRON

    return make_event("inngest/scheduled.timer", {"cron": CRON})


def seed_pair(age_days: float) -> int:
    from prometei.services import get_services
    from prometei.store.base import TokenRecord

    now = int(time.time())
    rotated = now - int(age_days * DAY)
    get_services().store.write(
        TokenRecord(
            access_token=SecretStr(OLD_ACCESS),
            refresh_token=SecretStr(OLD_REFRESH),
            expires_at=now + DAY // 2,
            obtained_at=rotated,
            host="example.amocrm.ru",
        )
    )
    return rotated


def stored():
    from prometei.services import get_services

    return get_services().store.read()


def request_fields(call) -> dict[str, str]:
    raw = call.request.body
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if text.lstrip().startswith("{"):
        return json.loads(text)
    return {k: v[0] for k, v in parse_qs(text).items()}


def assert_no_tokens(run) -> None:
    dumped = json.dumps([run.output, run.steps, run.step_outputs], default=str)
    for secret in (OLD_ACCESS, OLD_REFRESH, NEW_ACCESS, NEW_REFRESH, CLIENT_SECRET):
        assert secret not in dumped


def test_function_is_registered_with_a_daily_utc_cron():
    from prometei.config import get_settings
    from prometei.functions import all_functions
    from prometei.functions.keepalive import CRON, REFRESH_AFTER_S

    ids = {fn.id for fn in all_functions(get_settings())}
    assert f"prometei-ingest-{FN}" in ids
    assert CRON.startswith("TZ=UTC ") and len(CRON.split()) == 6
    # The threshold leaves most of amoCRM's 90-day refresh window as slack.
    assert DAY <= REFRESH_AFTER_S <= 30 * DAY


def test_old_pair_is_refreshed_once_and_the_new_pair_stored(oauth_env, app_client, amo):
    seed_pair(age_days=10)
    amo.add(
        responses.POST,
        TOKEN_URL,
        json={
            "token_type": "Bearer",
            "expires_in": DAY,
            "access_token": NEW_ACCESS,
            "refresh_token": NEW_REFRESH,
        },
    )
    run = run_function(app_client, FN, cron_event())
    assert run.status == "Completed", run.output

    [call] = amo.calls
    fields = request_fields(call)
    assert fields["grant_type"] == "refresh_token"
    assert fields["refresh_token"] == OLD_REFRESH

    assert run.output["status"] == "refreshed"
    assert run.output["refreshed"] is True
    assert run.output["expires_at"].endswith("Z")
    assert 9.9 <= run.output["age_days"] <= 10.1  # the age that triggered the refresh
    record = stored()
    assert record.refresh_token.get_secret_value() == NEW_REFRESH
    assert record.access_token.get_secret_value() == NEW_ACCESS
    assert_no_tokens(run)


def test_fresh_pair_is_left_alone(oauth_env, app_client, amo):
    seed_pair(age_days=1)
    amo.add(responses.POST, TOKEN_URL, json={"unexpected": True})
    run = run_function(app_client, FN, cron_event())
    assert run.status == "Completed", run.output
    assert len(amo.calls) == 0
    assert run.output["status"] == "fresh"
    assert run.output["refreshed"] is False
    assert 0.9 <= run.output["age_days"] <= 1.1
    assert run.output["refresh_token_lapses_by"] is not None
    assert stored().refresh_token.get_secret_value() == OLD_REFRESH
    assert_no_tokens(run)


def test_long_lived_mode_is_skipped(app_client, amo):
    run = run_function(app_client, FN, cron_event())
    assert run.status == "Completed"
    assert run.output["status"] == "skipped"
    assert "AMOCRM_ACCESS_TOKEN" in run.output["reason"]
    assert len(amo.calls) == 0


def test_not_connected_fails_visibly_with_how_to_reconnect(oauth_env, app_client, amo):
    run = run_function(app_client, FN, cron_event())
    assert run.status == "Failed"
    assert len(run.responses) == 1  # non-retriable: one call, no retries
    assert run.output["code"] == "non_retriable_error"
    assert "not connected" in run.output["message"]
    assert "/api/oauth/callback" in run.output["message"]
    assert len(amo.calls) == 0


def test_revoked_refresh_token_fails_without_retry(oauth_env, app_client, amo):
    seed_pair(age_days=30)
    amo.add(
        responses.POST,
        TOKEN_URL,
        status=401,
        json={
            "hint": "Token has been revoked",
            "title": "Некорректный запрос",
            "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
            "status": 401,
            "detail": "\u0412 запросе отсутствует ряд параметров или параметры невалидны",
        },
    )
    run = run_function(app_client, FN, cron_event())
    assert run.status == "Failed", run.responses
    assert len(run.responses) == 1, run.responses  # no retries: a retry cannot help
    assert "/api/oauth/callback" in run.output["message"]
    assert len(amo.calls) == 1
    assert stored().refresh_token.get_secret_value() == OLD_REFRESH
    assert_no_tokens(run)
