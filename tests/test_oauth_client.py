"""OAuth client: authorize URL, signed state, token endpoint bodies and errors, moved
accounts, and the host allow-list."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from pydantic import SecretStr

from prometei.amocrm import domains
from prometei.amocrm.oauth import (
    AccountMaybeMoved,
    OAuthClient,
    RefreshTokenRevoked,
    derive_state_key,
    sign_state,
    verify_state,
)
from prometei.config import settings_from_mapping
from prometei.errors import (
    ConfigError,
    InputError,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from tests.support.fake_amo_oauth import REVOKED_BODY

SECRET = "client-secret-SECRET-8888"
REDIRECT = "https://prometei.example.test/api/oauth/callback/"  # note the trailing slash
HOST = "example.amocrm.ru"
TOKEN_URL = f"https://{HOST}/oauth2/access_token"


def client(base_domain: str = "amocrm.ru") -> OAuthClient:
    return OAuthClient(
        client_id="client-id-1",
        client_secret=SecretStr(SECRET),
        redirect_uri=REDIRECT,
        base_domain=base_domain,
        clock=lambda: 1_700_000_000,
    )


def pair(n: int = 1) -> dict:
    return {
        "token_type": "Bearer",
        "expires_in": 86400,
        "access_token": f"acc-SECRET-{n}",
        "refresh_token": f"ref-SECRET-{n}",
    }


def jwt(claims: dict) -> str:
    def seg(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'RS256'})}.{seg(claims)}.c2lnbmF0dXJl"


# ---- authorize URL and state ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("base", "www"),
    [
        ("amocrm.ru", "www.amocrm.ru"),
        ("amocrm.com", "www.amocrm.com"),
        ("kommo.com", "www.kommo.com"),
    ],
)
def test_authorize_url(base, www):
    url = urlsplit(client(base).authorize_url("st.ate.x"))
    assert (url.scheme, url.netloc, url.path) == ("https", www, "/oauth")
    assert parse_qs(url.query) == {
        "client_id": ["client-id-1"],
        "state": ["st.ate.x"],
        "mode": ["post_message"],
    }


def test_state_roundtrip_tamper_and_expiry():
    key = derive_state_key(SECRET)
    assert key == client().state_key and SECRET.encode() not in key
    state = sign_state(key, now=1000)
    verify_state(state, key, now=1000 + 899)

    with pytest.raises(InputError, match="expired"):
        verify_state(state, key, now=1000 + 901)
    with pytest.raises(InputError, match="expired"):
        verify_state(state, key, now=1000 - 3600)  # from the future
    ts, nonce, mac = state.split(".")
    with pytest.raises(InputError, match="signature"):
        verify_state(f"{int(ts) + 1}.{nonce}.{mac}", key, now=1000)
    with pytest.raises(InputError, match="signature"):
        verify_state(state, derive_state_key("another-secret"), now=1000)
    for bad in ("", "abc", "1.2", "x.y.z"):
        with pytest.raises(InputError, match="malformed"):
            verify_state(bad, key, now=1000)
    assert sign_state(key, 1000) != state  # fresh nonce each time


def test_from_settings_requires_every_oauth_variable():
    with pytest.raises(ConfigError) as info:
        OAuthClient.from_settings(settings_from_mapping({"AMOCRM_CLIENT_ID": "x"}))
    assert "AMOCRM_CLIENT_SECRET" in str(info.value) and "AMOCRM_REDIRECT_URI" in str(info.value)


# ---- token endpoint -------------------------------------------------------------------------
@responses.activate
def test_exchange_code_body_and_record():
    responses.post(TOKEN_URL, json=pair())
    record = client().exchange_code(" the-code ", HOST)
    assert json.loads(responses.calls[0].request.body) == {
        "client_id": "client-id-1",
        "client_secret": SECRET,
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": REDIRECT,
    }
    assert record.access_token.get_secret_value() == "acc-SECRET-1"
    assert record.refresh_token.get_secret_value() == "ref-SECRET-1"
    assert (record.expires_at, record.obtained_at, record.refreshed_at) == (
        1_700_086_400,
        1_700_000_000,
        None,
    )
    assert record.host == HOST


@responses.activate
def test_refresh_body_and_record():
    responses.post(TOKEN_URL, json=pair(2))
    record = client().refresh(SecretStr("ref-SECRET-1"), HOST)
    body = json.loads(responses.calls[0].request.body)
    assert body == {
        "client_id": "client-id-1",
        "client_secret": SECRET,
        "grant_type": "refresh_token",
        "refresh_token": "ref-SECRET-1",
        "redirect_uri": REDIRECT,
    }
    assert record.refreshed_at == 1_700_000_000
    assert record.refresh_token.get_secret_value() == "ref-SECRET-2"


@responses.activate
def test_revoked_refresh_token_is_its_own_error_without_secrets():
    responses.post(TOKEN_URL, status=401, json=REVOKED_BODY)
    with pytest.raises(RefreshTokenRevoked) as info:
        client().refresh("ref-SECRET-1", HOST)
    assert isinstance(info.value, UpstreamAuthError)
    text = f"{info.value} {info.value.body_excerpt}"
    assert "ref-SECRET-1" not in text and SECRET not in text
    assert len(responses.calls) == 1  # never retried automatically


@responses.activate
def test_spent_code_is_a_rejection_not_a_revoked_refresh():
    responses.post(TOKEN_URL, status=401, json=REVOKED_BODY)
    with pytest.raises(UpstreamRejected) as info:
        client().exchange_code("used-code", HOST)
    assert not isinstance(info.value, RefreshTokenRevoked)
    assert "20 minutes" in str(info.value)


@responses.activate
def test_wrong_client_names_the_variables():
    responses.post(
        TOKEN_URL,
        status=401,
        json={
            "title": "Некорректный клиент",
            "status": 401,
            "detail": "Авторизация клиента не прошла",
        },
    )
    with pytest.raises(UpstreamAuthError) as info:
        client().refresh("r", HOST)
    assert not isinstance(info.value, RefreshTokenRevoked)
    assert "AMOCRM_CLIENT_ID" in str(info.value) and "AMOCRM_CLIENT_SECRET" in str(info.value)
    assert SECRET not in str(info.value)


@responses.activate
def test_bad_request_on_exchange_points_at_the_redirect_uri():
    responses.post(TOKEN_URL, status=400, json={"title": "Некорректный запрос", "status": 400})
    with pytest.raises(UpstreamRejected, match="AMOCRM_REDIRECT_URI"):
        client().exchange_code("c", HOST)


@responses.activate
def test_403_html_means_blocked():
    responses.post(
        TOKEN_URL,
        status=403,
        body="<html><h1>403 Forbidden</h1>nginx</html>",
        content_type="text/html",
    )
    with pytest.raises(UpstreamAuthError, match="blocked") as info:
        client().refresh("r", HOST)
    assert not info.value.retryable


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
@responses.activate
def test_server_errors_are_unavailable_and_not_retried_here(status):
    responses.post(TOKEN_URL, status=status, body="oops")
    with pytest.raises(UpstreamUnavailable):
        client().refresh("r", HOST)
    assert len(responses.calls) == 1


@responses.activate
def test_timeout_is_unavailable():
    responses.post(TOKEN_URL, body=requests.ConnectTimeout("slow"))
    with pytest.raises(UpstreamUnavailable):
        client().refresh("r", HOST)


@responses.activate
def test_redirects_are_never_followed():
    responses.post(TOKEN_URL, status=302, headers={"Location": "https://evil.example/steal"})
    with pytest.raises(AccountMaybeMoved):
        client().refresh("r", HOST)
    assert [c.request.url for c in responses.calls] == [TOKEN_URL]


@responses.activate
def test_200_without_tokens_is_a_protocol_error():
    responses.post(TOKEN_URL, json={"token_type": "Bearer"})
    with pytest.raises(UpstreamProtocolError):
        client().refresh("r", HOST)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example.com",
        "example.amocrm.ru.evil.com",
        "www.amocrm.ru",
        "api-b.amocrm.ru",
        "EXAMPLE.amocrm.ru",
        "example.amocrm.ru:8443",
        "user@example.amocrm.ru",
        "",
    ],
)
@responses.activate
def test_secrets_never_go_to_a_host_outside_the_allow_list(host):
    with pytest.raises(InputError, match="refusing"):
        client().refresh("ref-SECRET-1", host)
    with pytest.raises(InputError):
        client().exchange_code("code", host)
    assert len(responses.calls) == 0


# ---- moved account (reference §2.7) ----------------------------------------------------------
@responses.activate
def test_discover_moved_host_uses_the_api_domain_from_the_token():
    responses.get(
        "https://api-b.amocrm.ru/oauth2/account/current/subdomain",
        json={
            "id": 1,
            "subdomain": "renamed",
            "domain": "renamed.kommo.com",
            "top_level_domain": "com",
        },
    )
    host = client().discover_moved_host(jwt({"api_domain": "api-b.amocrm.ru"}), "ref-SECRET-1")
    assert host == "renamed.kommo.com"
    assert responses.calls[0].request.headers["X-Refresh-Token"] == "ref-SECRET-1"


@responses.activate
def test_discover_accepts_a_bare_base_domain_with_subdomain():
    responses.get(
        "https://api-a.amocrm.ru/oauth2/account/current/subdomain",
        json={"id": 1, "subdomain": "example", "domain": "amocrm.com"},
    )
    assert client().discover_moved_host(jwt({"api_domain": "api-a.amocrm.ru"}), "r") == (
        "example.amocrm.com"
    )


@pytest.mark.parametrize("api_domain", ["evil.example", "api-b.amocrm.ru.evil.io", None])
@responses.activate
def test_discover_refuses_an_api_domain_outside_the_allow_list(api_domain):
    claims = {"api_domain": api_domain} if api_domain else {}
    assert client().discover_moved_host(jwt(claims), "ref-SECRET-1") is None
    assert client().discover_moved_host("not-a-jwt", "ref-SECRET-1") is None
    assert len(responses.calls) == 0


@responses.activate
def test_discover_refuses_an_answer_outside_the_allow_list():
    responses.get(
        "https://api-b.amocrm.ru/oauth2/account/current/subdomain",
        json={"id": 1, "subdomain": "x", "domain": "x.evil.example"},
    )
    assert client().discover_moved_host(jwt({"api_domain": "api-b.amocrm.ru"}), "r") is None


@responses.activate
def test_discover_returns_none_when_amocrm_refuses():
    responses.get(
        "https://api-b.amocrm.ru/oauth2/account/current/subdomain",
        status=401,
        json={"title": "Unauthorized"},
    )
    assert client().discover_moved_host(jwt({"api_domain": "api-b.amocrm.ru"}), "r") is None


# ---- domains -----------------------------------------------------------------------------------
def test_domain_helpers():
    assert domains.is_account_host("oooprometei.amocrm.ru")
    assert domains.is_account_host("a-b.kommo.com") and domains.is_account_host("x.amocrm.com")
    for bad in (
        "www.amocrm.ru",
        "api-b.amocrm.ru",
        "amocrm.ru",
        "x.amocrm.org",
        "x.y.amocrm.ru",
        "-x.amocrm.ru",
        "x.amocrm.ru.",
        "X.amocrm.ru",
    ):
        assert not domains.is_account_host(bad), bad
    assert domains.is_configured_account("example.amocrm.ru", "example", "amocrm.ru")
    assert not domains.is_configured_account("example.kommo.com", "example", "amocrm.ru")
    assert not domains.is_configured_account("other.amocrm.ru", "example", "amocrm.ru")
    assert domains.is_api_domain("api-b.amocrm.ru") and domains.is_api_domain("api-c.kommo.com")
    assert not domains.is_api_domain("api-b.amocrm.ru.evil.com")
    assert domains.parse_referer("example.amocrm.ru") == "example.amocrm.ru"
    assert domains.parse_referer("https://Example.amocrm.ru/") == "example.amocrm.ru"
    assert domains.parse_referer("http://example.kommo.com/leads?x=1") == "example.kommo.com"
    for bad in (
        None,
        "",
        "evil.com",
        "javascript://example.amocrm.ru",
        "example.amocrm.ru:444",
        "https://user@example.amocrm.ru",
        "example.amocrm.ru.evil.com",
        " a b ",
    ):
        assert domains.parse_referer(bad) is None, bad


# ---- review fixes ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "state",
    [
        "1.a.\u00e9",  # ?state=1.a.%C3%A9: a non-ASCII MAC made compare_digest raise TypeError
        "1.\u00e9.abc",
        "\u00b2.a.b",  # a superscript two passes str.isdigit but not int()
        "\u0661\u0662.a.b",  # Arabic-Indic digits
    ],
)
def test_non_ascii_state_is_malformed_not_a_crash(state):
    with pytest.raises(InputError, match="malformed"):
        verify_state(state, derive_state_key(SECRET), now=1000)


@responses.activate
def test_token_requests_use_the_short_lock_time_timeouts():
    # Every token-endpoint call runs under the refresh lock; the lease is sized for (3, 10).
    responses.post(TOKEN_URL, json=pair(2))
    client().refresh(SecretStr("ref-SECRET-1"), HOST)
    assert responses.calls[0].request.req_kwargs["timeout"] == (3.0, 10.0)
