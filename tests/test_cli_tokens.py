"""`python -m prometei tokens status|oauth-url`: facts about the tokens, never a token."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
import responses
from click.testing import CliRunner, Result
from pydantic import SecretStr

from prometei.cli import tokens as tokens_cli
from prometei.cli.tokens import jwt_expiry, tokens
from prometei.store.base import TokenRecord
from prometei.store.file import FileTokenStore
from tests.conftest import TEST_SECRETS

ACCESS = "oauth-access-SECRET-aaaa"
REFRESH = "oauth-refresh-SECRET-rrrr"
CLIENT_SECRET = "client-secret-SECRET-cccc"
KV_URL = "https://tokens-kv.upstash.io"
KV_TOKEN = "kv-rest-token-SECRET-6666"
REDIRECT = "https://prometei.example.test/api/oauth/callback"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
ALL_SECRETS = (*TEST_SECRETS.values(), ACCESS, REFRESH, CLIENT_SECRET, KV_TOKEN)


@pytest.fixture(autouse=True)
def _restore_root_level():
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.fixture(autouse=True)
def frozen(monkeypatch):
    monkeypatch.setattr(tokens_cli, "clock", lambda: NOW)


def run(*args: str, extra: tuple[str, ...] = ()) -> Result:
    result = CliRunner().invoke(tokens, list(args))
    for text in (result.output, result.stdout, result.stderr):
        for secret in (*ALL_SECRETS, *extra):
            assert secret not in text
    return result


@pytest.fixture
def oauth_env(set_env):
    set_env(
        AMOCRM_ACCESS_TOKEN=None,
        AMOCRM_CLIENT_ID="client-id-1234",
        AMOCRM_CLIENT_SECRET=CLIENT_SECRET,
        AMOCRM_REDIRECT_URI=REDIRECT,
    )


def stored(project_env, **overrides) -> TokenRecord:
    values = {
        "access_token": SecretStr(ACCESS),
        "refresh_token": SecretStr(REFRESH),
        "expires_at": int(NOW) + 3 * 3600,
        "obtained_at": int(NOW) - 10 * 86400,
        "refreshed_at": int(NOW) - 2 * 86400,
        "host": "example.amocrm.ru",
    }
    values.update(overrides)
    store = FileTokenStore(Path(project_env["PROMETEI_STATE_DIR"]))
    return store.write(TokenRecord(**values))


def fake_jwt(exp: int) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'exp': exp, 'jti': 'x'})}.c2lnbmF0dXJl"


def test_status_of_a_connected_oauth_pair(oauth_env, project_env):
    stored(project_env)
    result = run("status")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "OAuth (refreshed automatically)" in out
    assert "file: local file" in out and "amocrm-tokens.json" in out
    assert "connected                 yes" in out
    assert "2026-03-01 15:00 UTC (in 3h 0m)" in out
    assert "last refresh              2026-02-27 12:00 UTC (2d 0h ago)" in out
    # 90 days after the last rotation
    assert "refresh token lapses      2026-05-28 12:00 UTC" in out


def test_status_never_refreshed_says_never(oauth_env, project_env):
    stored(project_env, refreshed_at=None)
    result = run("status")
    assert result.exit_code == 0
    assert "last refresh              never" in result.stdout


def test_status_without_stored_tokens_exits_1_with_the_reconnect_hint(oauth_env):
    result = run("status")
    assert result.exit_code == 1
    assert "connected                 no" in result.stdout
    assert "/api/oauth/callback" in result.stdout


def test_status_json_has_metadata_only(oauth_env, project_env):
    stored(project_env)
    result = run("status", "--json")
    assert result.exit_code == 0
    status = json.loads(result.stdout)
    assert status["connected"] is True
    assert status["expires_at"] == int(NOW) + 3 * 3600
    assert status["store"] == "file"
    assert not {"access_token", "refresh_token"} & set(status)


def test_status_with_an_unreachable_kv_store_exits_1(oauth_env, set_env):
    set_env(KV_REST_API_URL=KV_URL, KV_REST_API_TOKEN=KV_TOKEN)
    with responses.RequestsMock() as mock:
        mock.post(KV_URL, status=401, json={"error": "WRONGPASS invalid or missing auth token"})
        result = run("status")
    assert result.exit_code == 1
    assert "could not read the token store" in result.stderr
    assert "doctor" in result.stderr


def test_status_of_a_long_lived_token_reads_its_expiry_not_its_value(set_env):
    token = fake_jwt(int(datetime(2027, 1, 1, tzinfo=UTC).timestamp()))
    set_env(AMOCRM_ACCESS_TOKEN=token)
    result = run("status", extra=(token,))
    assert result.exit_code == 0, result.output
    assert "long-lived token (AMOCRM_ACCESS_TOKEN)" in result.stdout
    assert "token expires             2027-01-01 00:00 UTC (in 305d 12h)" in result.stdout
    assert "not used" in result.stdout  # no token store involved


def test_status_of_an_opaque_long_lived_token_has_unknown_expiry():
    result = run("status")
    assert result.exit_code == 0
    assert "token expires             unknown" in result.stdout


def test_status_with_a_malformed_setting_exits_2(set_env):
    set_env(AMOCRM_BASE_DOMAIN="amocrm.de")
    result = run("status")
    assert result.exit_code == 2
    assert "AMOCRM_BASE_DOMAIN" in result.stderr


def test_oauth_url_prints_the_connect_page(oauth_env):
    result = run("oauth-url")
    assert result.exit_code == 0
    assert result.stdout.strip() == REDIRECT


def test_oauth_url_in_long_lived_mode_is_a_usage_error():
    result = run("oauth-url")
    assert result.exit_code == 2
    assert "AMOCRM_ACCESS_TOKEN is set" in result.stderr


def test_jwt_expiry_reads_exp_and_tolerates_anything_else():
    assert jwt_expiry(fake_jwt(1_900_000_000)) == 1_900_000_000
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.%%%.c") is None
    assert jwt_expiry("a.bnVsbA.c") is None  # "null"
