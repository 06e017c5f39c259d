"""AMOCRM_API_BASE_URL: where amoCRM requests go when an operator says so (tests, proxies),
without loosening which hosts may receive a token, a code or the client secret."""

from __future__ import annotations

import pytest
import responses
from pydantic import SecretStr
from responses import matchers

from prometei.amocrm.client import AmoCRMClient
from prometei.amocrm.oauth import OAuthClient
from prometei.config import get_settings, settings_from_mapping
from prometei.doctor import check_environment
from prometei.errors import ConfigError, InputError
from tests.conftest import BASE_ENV

PROXY = "https://amo-proxy.example.test/amocrm"
TOKEN = "amo-access-token-SECRET-cccc"


class Tokens:
    def __init__(self, host: str = "example.amocrm.ru") -> None:
        self.host = host

    def access_token(self) -> str:
        return TOKEN

    def after_unauthorized(self, rejected: str) -> str | None:
        return None

    def account_host(self) -> str:
        return self.host


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("https://amo-proxy.example.test/amocrm/", "https://amo-proxy.example.test/amocrm"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://localhost:8765/", "http://localhost:8765"),
        ("http://[::1]:8765", "http://[::1]:8765"),
    ],
)
def test_accepted_values(value: str, stored: str) -> None:
    settings = settings_from_mapping({"AMOCRM_API_BASE_URL": value})

    assert settings.amocrm_api_base_url == stored


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("http://amo-proxy.example.test", "https://"),
        ("https://user:hunter2-SECRET@amo-proxy.example.test", "credentials"),
        ("https://amo-proxy.example.test/?token=x", "query"),
        ("ftp://amo-proxy.example.test", "https://"),
        ("amo-proxy.example.test", "https://"),
        ("https://amo-proxy.example.test:99999", "port"),
    ],
)
def test_refused_values_name_the_variable_and_never_echo_it(value: str, words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings_from_mapping({"AMOCRM_API_BASE_URL": value})

    assert "AMOCRM_API_BASE_URL" in refused.value.message
    assert words in refused.value.message
    assert "hunter2" not in refused.value.message


def test_lead_requests_go_to_the_base_url(mock: responses.RequestsMock, set_env) -> None:
    set_env(AMOCRM_API_BASE_URL=PROXY)
    mock.get(
        f"{PROXY}/api/v4/leads/77",
        json={"id": 77, "name": "Via proxy"},
        match=[matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})],
    )
    client = AmoCRMClient.from_settings(get_settings(), Tokens())

    lead = client.get_lead(77)

    assert lead is not None and lead.name == "Via proxy"


def test_the_account_host_is_still_checked_with_a_base_url(
    mock: responses.RequestsMock, set_env
) -> None:
    set_env(AMOCRM_API_BASE_URL=PROXY)
    client = AmoCRMClient.from_settings(get_settings(), Tokens(host="other.amocrm.ru"))

    with pytest.raises(ConfigError, match="not the configured account"):
        client.get_lead(77)
    assert len(mock.calls) == 0


def oauth(base_url: str | None) -> OAuthClient:
    return OAuthClient(
        client_id="client-id-1",
        client_secret=SecretStr("client-secret-SECRET-9999"),
        redirect_uri="https://prometei.example.test/api/oauth/callback",
        api_base_url=base_url,
        clock=lambda: 1_700_000_000,
    )


def test_token_requests_go_to_the_base_url_for_a_checked_host(
    mock: responses.RequestsMock,
) -> None:
    mock.post(
        f"{PROXY}/oauth2/access_token",
        json={
            "token_type": "Bearer",
            "expires_in": 86400,
            "access_token": "a",
            "refresh_token": "r",
        },
    )

    record = oauth(PROXY).refresh("old-refresh-SECRET", "example.amocrm.ru")

    assert record.host == "example.amocrm.ru"
    assert len(mock.calls) == 1


def test_a_forged_host_is_refused_with_a_base_url_too(mock: responses.RequestsMock) -> None:
    # A `referer` or webhook host is checked exactly as without the setting.
    with pytest.raises(InputError, match="refusing to send OAuth credentials"):
        oauth(PROXY).exchange_code("code-1", "evil.example.com")
    assert len(mock.calls) == 0


def test_moved_account_discovery_is_not_attempted_through_a_base_url(
    mock: responses.RequestsMock,
) -> None:
    assert oauth(PROXY).discover_moved_host("a.b.c", "refresh-SECRET") is None
    assert len(mock.calls) == 0


def test_from_settings_passes_the_base_url(mock: responses.RequestsMock) -> None:
    settings = settings_from_mapping(
        {
            "AMOCRM_CLIENT_ID": "client-id-1",
            "AMOCRM_CLIENT_SECRET": "client-secret-SECRET-9999",
            "AMOCRM_REDIRECT_URI": "https://prometei.example.test/api/oauth/callback",
            "AMOCRM_API_BASE_URL": "http://127.0.0.1:9",
        }
    )
    mock.post(
        "http://127.0.0.1:9/oauth2/access_token",
        json={
            "token_type": "Bearer",
            "expires_in": 86400,
            "access_token": "a",
            "refresh_token": "r",
        },
    )

    OAuthClient.from_settings(settings).refresh("old-refresh-SECRET", "example.amocrm.ru")

    assert mock.calls[0].request.url == "http://127.0.0.1:9/oauth2/access_token"


def test_doctor_warns_while_the_base_url_is_set() -> None:
    rows, settings = check_environment({**BASE_ENV, "AMOCRM_API_BASE_URL": PROXY})

    assert settings is not None
    [row] = [row for row in rows if row.name == "AMOCRM_API_BASE_URL"]
    assert row.warning and PROXY in row.detail and "example.amocrm.ru" in row.detail
