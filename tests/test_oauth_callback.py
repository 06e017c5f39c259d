"""/api/oauth/callback: the connect page and the code exchange, page by page.

amoCRM's token endpoint is a `responses` mock; the token and state stores are the real file
stores in the test's PROMETEI_STATE_DIR. A test client is one browser: it keeps the connect
cookie, so a state taken from its connect page is redeemable by it and by no other client.
Pages are asked for in English (Accept-Language) unless a test is about the language. Every
test that handles a secret scans the page and the captured log lines for it.
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


def browser(lang: str | None = "en"):
    """A fresh test client (one browser, its own cookies), asking for `lang` pages."""
    from prometei.web.apps import create_oauth_app

    client = create_oauth_app().test_client()
    if lang:
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = lang
    return client


@pytest.fixture
def client(oauth_env):
    return browser()


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


START = f"{PATH}?start=1"


def start_link(response) -> str:
    """The Connect button's target on a status page."""
    [start] = [link for link in links_of(response) if "start=1" in link]
    return start


def authorize_url(client, start: str = START) -> str:
    """Click Connect in this browser: the start URL answers 303 to amoCRM's authorize URL."""
    started = client.get(start)
    assert started.status_code == 303, text_of(started)
    assert_page_headers_of_redirect(started)
    location = started.headers["Location"]
    assert location.startswith("https://www.amocrm.ru/oauth?")
    return location


def assert_page_headers_of_redirect(response) -> None:
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def issue_state(client, start: str = START) -> str:
    """Click Connect in this browser and take the state from amoCRM's authorize URL."""
    return parse_qs(urlsplit(authorize_url(client, start)).query)["state"][0]


def callback_url(**params: str) -> str:
    return f"{PATH}?{urlencode(params)}"


def redirect_params(client, **overrides: str) -> dict[str, str]:
    """What amoCRM appends to the redirect URI, with a state this browser was given."""
    params = {"code": CODE, "referer": "example.amocrm.ru"}
    if "state" not in overrides:
        params["state"] = issue_state(client)
    params.update(overrides)
    return {k: v for k, v in params.items() if v != ""}


def signed_state(now: int | None = None) -> str:
    """A correctly signed state that no connect page issued (nothing stored for it)."""
    from prometei.amocrm.oauth import derive_state_key, sign_state
    from prometei.services import get_services

    key = derive_state_key(get_services().settings.amocrm_client_secret)
    return sign_state(key, int(time.time()) if now is None else now)


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


def test_connect_page_not_connected_starts_at_an_authorize_url_with_signed_state(client, logs):
    response = client.get(PATH)
    assert response.status_code == 200
    assert_page_headers(response)
    text = text_of(response)
    assert "Not connected" in text
    assert "example.amocrm.ru" in text
    assert "Connect amoCRM" in text
    assert start_link(response) == START
    assert "Set-Cookie" not in response.headers  # nothing issued for a mere view

    authorize = authorize_url(client, start_link(response))
    query = parse_qs(urlsplit(authorize).query)
    assert query["client_id"] == [CLIENT_ID]
    assert len(query["state"]) == 1
    # The state it carries is one this deployment signed.
    from prometei.amocrm.oauth import derive_state_key, verify_state
    from prometei.services import get_services

    key = derive_state_key(get_services().settings.amocrm_client_secret)
    assert verify_state(query["state"][0], key, int(time.time()))
    assert "client_secret" not in authorize
    assert_no_secrets(response, logs)


def test_connect_start_sets_an_httponly_lax_secure_browser_cookie(client):
    response = client.get(START)
    assert response.status_code == 303
    [cookie] = response.headers.getlist("Set-Cookie")
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert cookie.startswith("prometei_connect=")
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "secure" in attributes  # AMOCRM_REDIRECT_URI is https
    assert "path=/api/oauth/callback" in attributes
    # The browser keeps its id: a second click (another tab) does not replace it.
    again = client.get(START)
    assert again.headers["Set-Cookie"].split(";")[0] == cookie.split(";")[0]


def test_cookie_is_not_secure_when_the_page_is_plain_http_locally(set_env):
    set_env(
        AMOCRM_ACCESS_TOKEN=None,
        AMOCRM_CLIENT_ID=CLIENT_ID,
        AMOCRM_CLIENT_SECRET=CLIENT_SECRET,
        AMOCRM_REDIRECT_URI="http://127.0.0.1:3000/api/oauth/callback",
    )
    cookie = browser().get(START).headers["Set-Cookie"].lower()
    assert "secure" not in [part.strip() for part in cookie.split(";")]


def test_connect_page_connected_shows_status_but_no_store_or_token_times(client, logs, project_env):
    seed_pair(expires_at=1893456000, obtained_at=1893369600, refreshed_at=1893400000)
    response = client.get(PATH)
    assert response.status_code == 200
    assert_page_headers(response)
    text = text_of(response)
    assert "Status connected" in text
    assert "Connect amoCRM" in text
    # Anonymous visitors learn nothing about where or when: that is the CLI's job.
    assert "2030" not in text
    assert not re.search(r"\d{4}-\d\d-\d\d", text)
    assert "file" not in text.lower()
    assert project_env["PROMETEI_STATE_DIR"] not in text  # no store location
    assert "tokens status" in text  # where the details are
    assert_no_secrets(response, logs)


def test_connect_page_with_an_unusable_pair_says_connect_again_without_the_reason(
    client, set_env, logs
):
    from pydantic import SecretStr

    from prometei.services import get_services
    from prometei.store.base import TokenRecord

    get_services().store.write(
        TokenRecord(
            access_token=SecretStr(ACCESS),
            refresh_token=SecretStr(REFRESH),
            expires_at=1893456000,
            obtained_at=1893369600,
            host="other.amocrm.ru",
        )
    )
    response = client.get(PATH)
    text = text_of(response)
    assert "Not connected" in text
    assert "cannot be used" in text
    assert "other.amocrm.ru" not in text
    assert_no_secrets(response, logs)


def test_connect_page_in_long_lived_mode_explains_oauth_is_not_used(set_env, logs):
    set_env(AMOCRM_CLIENT_ID=CLIENT_ID, AMOCRM_CLIENT_SECRET=CLIENT_SECRET)
    response = browser().get(PATH)
    assert response.status_code == 200
    assert_page_headers(response)
    text = text_of(response)
    assert "long-lived amoCRM token (AMOCRM_ACCESS_TOKEN)" in text
    assert "OAuth is not used" in text
    assert not [link for link in links_of(response) if link.startswith("https://")]
    assert not [link for link in links_of(response) if "start=1" in link]
    body = response.get_data(as_text=True)
    assert TEST_SECRETS["AMOCRM_ACCESS_TOKEN"] not in body
    assert CLIENT_SECRET not in body
    assert "Set-Cookie" not in response.headers  # no connect flow, no state


def test_connect_page_names_missing_oauth_variables_with_503(set_env):
    set_env(AMOCRM_ACCESS_TOKEN=None, AMOCRM_CLIENT_ID=CLIENT_ID)
    response = browser().get(PATH)
    assert response.status_code == 503
    assert_page_headers(response)
    text = text_of(response)
    assert "AMOCRM_CLIENT_SECRET" in text
    assert "AMOCRM_REDIRECT_URI" in text
    assert "AMOCRM_CLIENT_ID," not in text  # set, so not named as missing


def test_missing_subdomain_is_a_503_page_naming_it(oauth_env, set_env):
    set_env(AMOCRM_SUBDOMAIN=None)
    response = browser().get(PATH)
    assert response.status_code == 503
    assert "AMOCRM_SUBDOMAIN" in text_of(response)


def test_on_vercel_without_kv_oauth_mode_names_the_kv_variables(oauth_env, set_env, amo):
    set_env(VERCEL="1")
    page = browser().get(PATH)
    assert page.status_code == 503
    assert "KV_REST_API_URL" in text_of(page)
    redirect = browser().get(
        callback_url(code=CODE, state=signed_state(), referer="example.amocrm.ru")
    )
    assert redirect.status_code == 503
    assert len(amo.calls) == 0


# ---- languages --------------------------------------------------------------------------


def test_pages_are_russian_by_default(oauth_env):
    response = browser(lang=None).get(PATH)
    body = response.get_data(as_text=True)
    assert '<html lang="ru">' in body
    assert response.headers["Content-Language"] == "ru"
    text = text_of(response)
    assert "Подключение amoCRM" in text and "Подключить amoCRM" in text
    assert "Не подключено" in text  # noqa: RUF001


@pytest.mark.parametrize(
    ("accept", "lang"),
    [
        ("en-US,en;q=0.9", "en"),
        ("ru-RU,ru;q=0.9,en;q=0.8", "ru"),
        ("de-DE,en;q=0.5,ru;q=0.4", "en"),
        ("en;q=0.2,ru;q=0.3", "ru"),
        ("de, fr", "ru"),
        ("en;q=0", "ru"),
        ("garbage;;;q=x", "ru"),
    ],
)
def test_accept_language_picks_the_page_language(oauth_env, accept, lang):
    response = browser(lang=accept).get(PATH)
    assert f'<html lang="{lang}">' in response.get_data(as_text=True)


def test_lang_switch_wins_and_its_links_never_carry_the_code(client, amo):
    english = browser(lang="ru").get(f"{PATH}?lang=en")
    assert '<html lang="en">' in english.get_data(as_text=True)
    # An error page for a code offers the switch too, pointing at the plain page.
    page = client.get(callback_url(code=CODE, state="", referer="example.amocrm.ru"))
    switch = [link for link in links_of(page) if "lang=" in link]
    assert switch == [f"{PATH}?lang=ru"]  # English is the current one, not a link
    assert not [link for link in links_of(page) if "code" in link]


def test_the_language_chosen_on_the_connect_page_survives_the_round_trip(oauth_env, amo):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    person = browser(lang="ru")
    page = person.get(f"{PATH}?lang=en")
    assert start_link(page) == f"{START}&lang=en"
    state = issue_state(person, start_link(page))
    done = person.get(callback_url(code=CODE, state=state, referer="example.amocrm.ru"))
    assert done.status_code == 303
    assert done.headers["Location"] == f"{PATH}?lang=en"


def test_every_answer_has_a_russian_page(oauth_env, amo):
    """The Russian catalogue covers every key the English one has, and no page leaks a key."""
    from prometei.web.connect_texts import TEXTS

    for key, versions in TEXTS.items():
        assert set(versions) == {"ru", "en"}, key
        assert versions["ru"] != versions["en"] or "amoCRM" in versions["ru"], key
    amo.add(responses.POST, TOKEN_URL, status=500, body="")
    person = browser(lang=None)
    for url in (
        PATH,
        callback_url(error="access_denied"),
        callback_url(code=CODE, state="", referer="example.amocrm.ru"),
        callback_url(code=CODE, state="", from_widget="1", referer="example.amocrm.ru"),
        callback_url(code=CODE, state=signed_state(), referer="example.amocrm.ru"),
        callback_url(**redirect_params(person)),
    ):
        text = text_of(person.get(url))
        assert re.search("[а-яА-Я]{4,}", text), url  # noqa: RUF001
        assert not re.search(r"\b[a-z]+\.[a-z_]+\.p\d\b", text), url  # no catalogue key


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
    response = client.get(callback_url(**redirect_params(client, referer=referer)))
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
    state = issue_state(client)
    tampered = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
    response = client.get(callback_url(**redirect_params(client, state=tampered)))
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
    state = issue_state(client)
    later = int(time.time()) + 16 * 60
    monkeypatch.setattr(oauth_page, "_now", lambda: later)

    response = client.get(callback_url(**redirect_params(client, state=state)))
    assert response.status_code == 400
    text = text_of(response)
    assert "has expired or was not issued by this deployment" in text
    assert "valid for 15 minutes" in text
    assert len(amo.calls) == 0
    assert_no_secrets(response, logs)


def test_code_without_state_is_refused_widget_install_included(client, amo, logs):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    response = client.get(callback_url(**redirect_params(client, state="")))
    assert response.status_code == 400
    assert "no state" in text_of(response)

    widget = client.get(callback_url(**redirect_params(client, state="", from_widget="1")))
    assert widget.status_code == 400
    text = text_of(widget)
    assert "from_widget" in text and "Connect amoCRM" in text
    assert PATH in links_of(widget)
    assert len(amo.calls) == 0
    assert stored_record() is None
    assert_no_secrets(widget, logs)


def test_a_widget_flag_does_not_skip_the_state_check(client, amo):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    response = client.get(
        callback_url(code=CODE, state=signed_state(), from_widget="1", referer="example.amocrm.ru")
    )
    assert response.status_code == 400
    assert len(amo.calls) == 0


def test_a_signed_state_no_connect_page_issued_is_refused(client, amo, logs):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    issue_state(client)  # the browser has a cookie, but not for this state
    response = client.get(
        callback_url(code=CODE, state=signed_state(), referer="example.amocrm.ru")
    )
    assert response.status_code == 400
    assert "already used" in text_of(response)
    assert len(amo.calls) == 0
    assert stored_record() is None


def test_a_state_opened_in_another_browser_is_refused_and_stores_nothing(oauth_env, amo, logs):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    attacker = browser()
    params = redirect_params(attacker)  # the attacker's own code and state…
    victim = browser()
    issue_state(victim)  # …opened by someone with a cookie of their own
    for person in (victim, browser()):  # with another cookie, and with none
        response = person.get(callback_url(**params))
        assert response.status_code == 400
        assert "started in another browser" in text_of(response)
        assert_no_secrets(response, logs)
    assert len(amo.calls) == 0
    assert stored_record() is None
    # The state is still good for the browser it was issued to.
    assert attacker.get(callback_url(**params)).status_code == 303


def test_a_state_works_once(client, amo, logs):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    params = redirect_params(client)
    first = client.get(callback_url(**params))
    assert first.status_code == 303
    again = client.get(callback_url(**params))  # back button, a reload of the old URL, a replay
    assert again.status_code == 400
    assert "already used" in text_of(again)
    assert len(amo.calls) == 1
    assert_no_secrets(again, logs)


def test_two_redirects_racing_for_one_state_spend_it_once(client, amo, monkeypatch):
    """Between the check and the spend another request wins: the code is not sent."""
    from prometei.services import get_services

    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    params = redirect_params(client)
    state_store = get_services().connect_state
    real_delete = state_store.delete

    def other_request_first(key: str) -> bool:
        assert real_delete(key)  # the other request spends it…
        return real_delete(key)  # …so ours gets False

    monkeypatch.setattr(state_store, "delete", other_request_first)
    response = client.get(callback_url(**params))
    assert response.status_code == 400
    assert "already used" in text_of(response)
    assert len(amo.calls) == 0


def test_code_for_another_integration_is_refused(client, amo):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    response = client.get(callback_url(**redirect_params(client, client_id="someone-else")))
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
    response = client.get(callback_url(error=error, state=signed_state()))
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
    response = client.get(callback_url(**redirect_params(client)))
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
    response = client.get(callback_url(**redirect_params(client)))
    assert response.status_code == 502
    text = text_of(response)
    assert "amoCRM refused the request" in text
    assert "AMOCRM_CLIENT_ID / AMOCRM_CLIENT_SECRET" in text
    assert stored_record() is None
    assert_no_secrets(response, logs)


def test_token_endpoint_500_is_a_502_saying_try_again(client, amo, logs):
    amo.add(responses.POST, TOKEN_URL, status=500, body="")
    response = client.get(callback_url(**redirect_params(client)))
    assert response.status_code == 502
    assert_page_headers(response)
    text = text_of(response)
    assert "amoCRM is not answering" in text
    assert "try again" in text
    assert stored_record() is None
    assert_no_secrets(response, logs)


@pytest.mark.parametrize("referer", ["example.amocrm.ru", "https://example.amocrm.ru"])
def test_success_exchanges_stores_the_pair_and_redirects_to_the_status_page(
    client, amo, logs, referer
):
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    before = int(time.time())
    response = client.get(callback_url(**redirect_params(client, referer=referer)))
    assert response.status_code == 303, text_of(response)
    assert response.headers["Location"] == PATH
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"

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

    # The page it lands on reports the connection; reloading it exchanges nothing.
    for _ in range(2):
        status_page = client.get(response.headers["Location"])
        assert status_page.status_code == 200
        assert "Status connected" in text_of(status_page)
        assert_no_secrets(status_page, logs)
    assert len(amo.calls) == 1


def test_code_in_long_lived_mode_is_not_exchanged(set_env, amo):
    set_env(
        AMOCRM_CLIENT_ID=CLIENT_ID,
        AMOCRM_CLIENT_SECRET=CLIENT_SECRET,
        AMOCRM_REDIRECT_URI=REDIRECT_URI,
    )
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    response = browser().get(
        callback_url(code=CODE, referer="example.amocrm.ru", state=signed_state())
    )
    assert response.status_code == 409
    assert "OAuth is not used by this deployment" in text_of(response)
    assert len(amo.calls) == 0


# ---- readiness: OAuth mode without a stored pair is not ready ------------------------------


def test_readiness_is_not_ok_in_oauth_mode_until_a_pair_is_stored(oauth_env):
    from prometei.web.apps import create_webhook_app

    client = create_webhook_app().test_client()
    report = client.get("/api/webhook").get_json()
    assert report["ok"] is False
    assert any("not connected" in problem for problem in report["problems"])

    seed_pair(expires_at=int(time.time()) + 3600, obtained_at=int(time.time()))
    ready = client.get("/api/webhook")
    assert ready.status_code == 200
    assert ready.get_json()["ok"] is True


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
    issue_state(client)
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

    params = redirect_params(client)
    response = client.get(callback_url(**params))
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

    # Once the refresh is done, the same redirect (same code, same state) connects.
    assert services.store.release_lock(other)
    again = client.get(callback_url(**params))
    assert again.status_code == 303, text_of(again)
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
    response = client.get(callback_url(**redirect_params(client)))
    assert response.status_code == 303, text_of(response)
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

    params = redirect_params(client)
    store.acquire_lock = store_down
    response = client.get(callback_url(**params))
    assert response.status_code == 503
    text = text_of(response)
    assert "Token store unreachable" in text and "code was not used" in text
    assert len(amo.calls) == 0
    assert_no_secrets(response, logs)


def test_the_callback_entrypoint_loads_no_http_client_at_import():
    """Cold starts: `requests` (and the OAuth client) load only when a code is exchanged."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    probe = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('cb', 'api/oauth/callback.py')\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted(m for m in ('requests', 'prometei.amocrm.oauth') if m in sys.modules))\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
