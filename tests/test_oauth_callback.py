"""/api/oauth/callback: the connect page and the code exchange, page by page.

amoCRM's token endpoint is a `responses` mock; the token store is the real file store in the
test's PROMETEI_STATE_DIR. Every test that handles a secret scans the page and the captured
log lines for it.
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import responses

from tests.conftest import AMO_BASE, TEST_SECRETS

TOKEN_URL = AMO_BASE + "/oauth2/access_token"
CLIENT_ID = "client-id-1"
CLIENT_SECRET = "client-secret-SECRET-5555"
REDIRECT_URI = "https://prometei.example.test/api/oauth/callback"
CODE = "def50200authcode-SECRET-9999"
ACCESS = "access-token-SECRET-7777"
REFRESH = "refresh-token-SECRET-8888"
SECRETS = (CODE, CLIENT_SECRET, ACCESS, REFRESH)
PATH = "/api/oauth/callback"

TOKEN_BODY = {
    "token_type": "Bearer",
    "expires_in": 86400,
    "access_token": ACCESS,
    "refresh_token": REFRESH,
}
PROBLEM_TYPE = "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"
BAD_REQUEST_BODY = {
    "title": "Некорректный запрос",
    "type": PROBLEM_TYPE,
    "status": 401,
    "detail": "\u0412 запросе отсутствует ряд параметров или параметры невалидны",
}
REVOKED_CODE_BODY = {**BAD_REQUEST_BODY, "hint": "Authorization code has been revoked"}
BAD_CLIENT_BODY = {
    "title": "Некорректный клиент",
    "type": PROBLEM_TYPE,
    "status": 401,
    "detail": "Авторизация клиента не прошла",
}


@pytest.fixture
def oauth_env(set_env) -> None:
    set_env(
        AMOCRM_ACCESS_TOKEN=None,
        AMOCRM_CLIENT_ID=CLIENT_ID,
        AMOCRM_CLIENT_SECRET=CLIENT_SECRET,
        AMOCRM_REDIRECT_URI=REDIRECT_URI,
    )


@pytest.fixture
def client(oauth_env):
    from prometei.web.apps import create_oauth_app

    return create_oauth_app().test_client()


@pytest.fixture
def amo() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def text_of(response) -> str:
    """The page's visible text, whitespace-folded, for phrase assertions."""
    body = response.get_data(as_text=True)
    body = re.sub(r"<style>.*?</style>", " ", body, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def links_of(response) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]*)"', response.get_data(True))]


def assert_no_secrets(response, caplog: pytest.LogCaptureFixture | None = None) -> None:
    body = response.get_data(as_text=True)
    headers = str(response.headers)
    logged = ""
    if caplog is not None:
        logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in SECRETS:
        assert secret not in body, f"page shows {secret!r}"
        assert secret not in headers
        assert secret not in logged, f"log shows {secret!r}"
        for link in links_of(response):
            assert secret not in link


def assert_page_headers(response) -> None:
    assert response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def fresh_state(now: int | None = None) -> str:
    from prometei.amocrm.oauth import derive_state_key, sign_state
    from prometei.services import get_services

    key = derive_state_key(get_services().settings.amocrm_client_secret)
    return sign_state(key, int(time.time()) if now is None else now)


def callback_url(**params: str) -> str:
    return f"{PATH}?{urlencode(params)}"


def redirect_params(**overrides: str) -> dict[str, str]:
    params = {"code": CODE, "state": fresh_state(), "referer": "example.amocrm.ru"}
    params.update(overrides)
    return {k: v for k, v in params.items() if v != ""}


def stored_record():
    from prometei.services import get_services

    return get_services().store.read()


def seed_pair(*, expires_at: int, obtained_at: int, refreshed_at: int | None = None) -> None:
    from pydantic import SecretStr

    from prometei.services import get_services
    from prometei.store.base import TokenRecord

    get_services().store.write(
        TokenRecord(
            access_token=SecretStr(ACCESS),
            refresh_token=SecretStr(REFRESH),
            expires_at=expires_at,
            obtained_at=obtained_at,
            refreshed_at=refreshed_at,
            host="example.amocrm.ru",
        )
    )


# ---- connect page ----------------------------------------------------------------------


def test_connect_page_not_connected_links_to_authorize_url_with_signed_state(client, logs):
    response = client.get(PATH)
    assert response.status_code == 200
    assert_page_headers(response)
    text = text_of(response)
    assert "Not connected" in text
    assert "example.amocrm.ru" in text
    assert "Connect amoCRM" in text

    [authorize] = [link for link in links_of(response) if link.startswith("https://")]
    query = parse_qs(urlsplit(authorize).query)
    assert query["client_id"] == [CLIENT_ID]
    assert len(query["state"]) == 1
    # The state it carries is one this deployment accepts.
    from prometei.amocrm.oauth import derive_state_key, verify_state
    from prometei.services import get_services

    key = derive_state_key(get_services().settings.amocrm_client_secret)
    verify_state(query["state"][0], key, int(time.time()))
    assert "client_secret" not in authorize
    assert_no_secrets(response, logs)


def test_connect_page_connected_shows_expiry_and_store_without_tokens(client, logs):
    seed_pair(expires_at=1893456000, obtained_at=1893369600, refreshed_at=None)  # 2030-01-01
    response = client.get(PATH)
    assert response.status_code == 200
    assert_page_headers(response)
    text = text_of(response)
    assert "Status connected" in text
    assert "2030-01-01 00:00 UTC" in text
    assert "Last refresh never" in text
    assert "file" in text.lower()
    assert "Connect amoCRM" in text
    assert_no_secrets(response, logs)


def test_connect_page_in_long_lived_mode_explains_oauth_is_not_used(set_env, logs):
    from prometei.web.apps import create_oauth_app

    set_env(AMOCRM_CLIENT_ID=CLIENT_ID, AMOCRM_CLIENT_SECRET=CLIENT_SECRET)
    response = create_oauth_app().test_client().get(PATH)
    assert response.status_code == 200
    assert_page_headers(response)
    text = text_of(response)
    assert "long-lived amoCRM token (AMOCRM_ACCESS_TOKEN)" in text
    assert "OAuth is not used" in text
    assert not [link for link in links_of(response) if link.startswith("https://")]
    body = response.get_data(as_text=True)
    assert TEST_SECRETS["AMOCRM_ACCESS_TOKEN"] not in body
    assert CLIENT_SECRET not in body


def test_connect_page_names_missing_oauth_variables_with_503(set_env):
    from prometei.web.apps import create_oauth_app

    set_env(AMOCRM_ACCESS_TOKEN=None, AMOCRM_CLIENT_ID=CLIENT_ID)
    response = create_oauth_app().test_client().get(PATH)
    assert response.status_code == 503
    assert_page_headers(response)
    text = text_of(response)
    assert "AMOCRM_CLIENT_SECRET" in text
    assert "AMOCRM_REDIRECT_URI" in text
    assert "AMOCRM_CLIENT_ID," not in text  # set, so not named as missing


def test_missing_subdomain_is_a_503_page_naming_it(oauth_env, set_env):
    from prometei.web.apps import create_oauth_app

    set_env(AMOCRM_SUBDOMAIN=None)
    response = create_oauth_app().test_client().get(PATH)
    assert response.status_code == 503
    assert "AMOCRM_SUBDOMAIN" in text_of(response)


# ---- the redirect back from amoCRM ------------------------------------------------------


@pytest.mark.parametrize(
    "referer",
    [
        "evil.example.com",
        "other.amocrm.ru",  # a known domain, but not the configured account
        "example.amocrm.ru.evil.test",
        "https://example.amocrm.ru@evil.test",
        "",
    ],
)
def test_foreign_referer_is_refused_with_403_before_any_network_call(client, amo, logs, referer):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    response = client.get(callback_url(**redirect_params(referer=referer)))
    assert response.status_code == 403
    assert_page_headers(response)
    text = text_of(response)
    assert "Another amoCRM account" in text
    assert "serves the amoCRM account example.amocrm.ru only" in text
    assert len(amo.calls) == 0
    assert stored_record() is None
    assert_no_secrets(response, logs)
    if referer:
        assert referer not in text  # attacker-controlled text is not echoed


def test_tampered_state_is_refused_with_400(client, amo, logs):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    state = fresh_state()
    tampered = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
    response = client.get(callback_url(**redirect_params(state=tampered)))
    assert response.status_code == 400
    assert_page_headers(response)
    assert "This connect link is not valid" in text_of(response)
    assert len(amo.calls) == 0
    assert stored_record() is None
    assert_no_secrets(response, logs)


def test_expired_state_is_refused_with_400(client, amo, logs, monkeypatch):
    from prometei.web import oauth_page

    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    # Take the state from the connect page, as a person would, then come back 16 minutes later.
    page = client.get(PATH)
    [authorize] = [link for link in links_of(page) if link.startswith("https://")]
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    later = int(time.time()) + 16 * 60
    monkeypatch.setattr(oauth_page, "_now", lambda: later)

    response = client.get(callback_url(**redirect_params(state=state)))
    assert response.status_code == 400
    text = text_of(response)
    assert "has expired or was not issued by this deployment" in text
    assert "valid for 15 minutes" in text
    assert len(amo.calls) == 0
    assert_no_secrets(response, logs)


def test_code_without_state_is_refused_unless_widget_install(client, amo, logs):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    response = client.get(callback_url(**redirect_params(state="")))
    assert response.status_code == 400
    assert "no state" in text_of(response)
    assert len(amo.calls) == 0

    widget = client.get(callback_url(**redirect_params(state="", from_widget="1")))
    assert widget.status_code == 200
    assert "amoCRM connected" in text_of(widget)
    assert len(amo.calls) == 1
    assert_no_secrets(widget, logs)


def test_code_for_another_integration_is_refused(client, amo):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    response = client.get(callback_url(**redirect_params(client_id="someone-else")))
    assert response.status_code == 400
    assert "different integration" in text_of(response)
    assert len(amo.calls) == 0


@pytest.mark.parametrize(
    ("error", "status", "phrase"),
    [
        ("access_denied", 403, "Access was not granted"),
        ("server_error", 400, "amoCRM redirected back with the error “server_error”"),
        ("<script>alert(1)</script>", 400, "unknown_error"),
    ],
)
def test_amocrm_error_redirect_renders_a_readable_page(client, amo, error, status, phrase):
    response = client.get(callback_url(error=error, state=fresh_state()))
    assert response.status_code == status
    assert_page_headers(response)
    assert phrase in text_of(response)
    assert "<script>" not in response.get_data(as_text=True)
    assert PATH in links_of(response)  # a way back to the connect page
    assert len(amo.calls) == 0


@pytest.mark.parametrize("problem", [REVOKED_CODE_BODY, BAD_REQUEST_BODY])
def test_reused_code_token_endpoint_401_is_a_502_saying_codes_are_single_use(
    client, amo, logs, problem
):
    amo.add(responses.POST, TOKEN_URL, status=401, json=problem)
    response = client.get(callback_url(**redirect_params()))
    assert response.status_code == 502
    assert_page_headers(response)
    text = text_of(response)
    assert "amoCRM refused the authorization code" in text
    assert "already used" in text
    assert "only for 20 minutes" in text
    assert "Connect amoCRM again" in text
    assert len(amo.calls) == 1
    assert stored_record() is None
    assert_no_secrets(response, logs)


def test_wrong_client_secret_is_a_502_naming_the_variables(client, amo, logs):
    amo.add(responses.POST, TOKEN_URL, status=401, json=BAD_CLIENT_BODY)
    response = client.get(callback_url(**redirect_params()))
    assert response.status_code == 502
    text = text_of(response)
    assert "amoCRM refused the request" in text
    assert "AMOCRM_CLIENT_ID / AMOCRM_CLIENT_SECRET" in text
    assert stored_record() is None
    assert_no_secrets(response, logs)


def test_token_endpoint_500_is_a_502_saying_try_again(client, amo, logs):
    amo.add(responses.POST, TOKEN_URL, status=500, body="")
    response = client.get(callback_url(**redirect_params()))
    assert response.status_code == 502
    assert_page_headers(response)
    text = text_of(response)
    assert "amoCRM is not answering" in text
    assert "try again" in text
    assert stored_record() is None
    assert_no_secrets(response, logs)


@pytest.mark.parametrize("referer", ["example.amocrm.ru", "https://example.amocrm.ru"])
def test_success_exchanges_at_configured_host_and_stores_the_pair(client, amo, logs, referer):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    before = int(time.time())
    response = client.get(callback_url(**redirect_params(referer=referer)))
    assert response.status_code == 200, text_of(response)
    assert_page_headers(response)
    text = text_of(response)
    assert "amoCRM connected" in text
    assert "connected to example.amocrm.ru" in text
    assert "Access token valid until" in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", text)

    [call] = amo.calls
    assert call.request.url == TOKEN_URL
    raw = call.request.body
    sent = raw.decode() if isinstance(raw, bytes) else str(raw)
    fields = (
        json.loads(sent)
        if sent.lstrip().startswith("{")
        else {k: v[0] for k, v in parse_qs(sent).items()}
    )
    assert fields["grant_type"] == "authorization_code"
    assert fields["code"] == CODE
    assert fields["redirect_uri"] == REDIRECT_URI
    assert fields["client_id"] == CLIENT_ID

    record = stored_record()
    assert record is not None
    assert record.access_token.get_secret_value() == ACCESS
    assert record.refresh_token.get_secret_value() == REFRESH
    assert record.host == "example.amocrm.ru"
    assert record.expires_at >= before + 86400 - 120
    assert_no_secrets(response, logs)

    # The connect page now reports the connection.
    status_page = client.get(PATH)
    assert "Status connected" in text_of(status_page)
    assert_no_secrets(status_page, logs)


def test_code_in_long_lived_mode_is_not_exchanged(set_env, amo):
    from prometei.web.apps import create_oauth_app

    set_env(
        AMOCRM_CLIENT_ID=CLIENT_ID,
        AMOCRM_CLIENT_SECRET=CLIENT_SECRET,
        AMOCRM_REDIRECT_URI=REDIRECT_URI,
    )
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    response = (
        create_oauth_app()
        .test_client()
        .get(callback_url(code=CODE, referer="example.amocrm.ru", state=fresh_state()))
    )
    assert response.status_code == 409
    assert "OAuth is not used by this deployment" in text_of(response)
    assert len(amo.calls) == 0


def test_html_is_escaped_and_page_has_no_script():
    from prometei.web.pages import Link, render_html

    body = render_html(
        title="<b>x</b>",
        status=200,
        tone="info",
        paragraphs=["<img src=x onerror=alert(1)>"],
        facts=[("a", '"quoted"')],
        action=Link("go", "/api/oauth/callback?x=1&y=2"),
    )
    assert "<b>x</b>" not in body and "&lt;b&gt;x&lt;/b&gt;" in body
    assert "<img" not in body
    assert "<script" not in body
    assert 'href="/api/oauth/callback?x=1&amp;y=2"' in body


# ---- review fixes: state with non-ASCII text, the refresh lock around the exchange ----------


def test_non_ascii_state_is_a_400_not_a_500(client, amo, logs):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    response = client.get(f"{PATH}?code=abc&state=1.a.%C3%A9&referer=example.amocrm.ru")
    assert response.status_code == 400
    assert_page_headers(response)
    assert "This connect link is not valid" in text_of(response)
    assert len(amo.calls) == 0
    assert stored_record() is None


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_busy_refresh_lock_is_a_503_and_the_code_is_not_spent(client, amo, logs):
    from prometei.services import get_services

    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    services = get_services()
    clock = FakeClock()
    services.tokens._clock, services.tokens._sleep = clock, clock.sleep  # no real waiting
    other = services.store.acquire_lock(120_000)  # an instance is refreshing
    assert other is not None

    response = client.get(callback_url(**redirect_params()))
    assert response.status_code == 503
    assert_page_headers(response)
    assert response.headers["Retry-After"] == "60"
    text = text_of(response)
    assert "A token refresh is in progress" in text
    assert "Try again in a minute" in text and "code was not used" in text
    assert len(amo.calls) == 0  # the single-use code is still good
    assert stored_record() is None
    assert 0 < sum(clock.sleeps) <= 10  # a bounded wait, well inside maxDuration 30 s
    assert_no_secrets(response, logs)

    # Once the refresh is done, the same redirect (same code) connects.
    assert services.store.release_lock(other)
    again = client.get(callback_url(**redirect_params()))
    assert again.status_code == 200, text_of(again)
    assert len(amo.calls) == 1


def test_the_exchange_and_the_write_happen_under_the_refresh_lock(client, amo, logs):
    from prometei.services import get_services

    store = get_services().store
    seen: list[bool] = []

    def token_endpoint(request):
        seen.append(store.acquire_lock(1000) is None)  # held by the callback right now
        return 200, {}, json.dumps(TOKEN_BODY)

    amo.add_callback(
        responses.POST, TOKEN_URL, callback=token_endpoint, content_type="application/json"
    )
    response = client.get(callback_url(**redirect_params()))
    assert response.status_code == 200, text_of(response)
    assert seen == [True]
    assert stored_record().refresh_token.get_secret_value() == REFRESH
    owner = store.acquire_lock(1000)  # released afterwards (compare-and-delete)
    assert owner is not None and store.release_lock(owner)
    assert_no_secrets(response, logs)


def test_token_store_down_before_the_exchange_does_not_spend_the_code(client, amo, logs):
    from prometei.errors import UpstreamUnavailable
    from prometei.services import get_services

    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    store = get_services().store

    def store_down(ttl_ms: int, owner: str | None = None) -> str | None:
        raise UpstreamUnavailable("kv", "no answer within 3s (timeout); will retry")

    store.acquire_lock = store_down
    response = client.get(callback_url(**redirect_params()))
    assert response.status_code == 503
    text = text_of(response)
    assert "Token store unreachable" in text and "code was not used" in text
    assert len(amo.calls) == 0
    assert_no_secrets(response, logs)
