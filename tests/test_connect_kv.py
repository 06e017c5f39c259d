"""/api/oauth/callback against KV (the fakeredis REST shim on loopback): what a visit costs in KV
commands, and the callback's time budget with a slow KV.

- An anonymous view of the status page is one KV read and no write: the Upstash quota is not
  something anyone on the internet can use up by reloading a page. The state (one write) and
  the cookie come only with the Connect button (`?start=1`).
- A KV slower than the callback's budget makes the callback refuse before the authorization
  code is sent (`prometei.web.connect_budget`): the token endpoint sees no request. The shim's
  `before_command` hook moves the budget's fake clock as if each command took that long.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import responses

from tests.conftest import AMO_BASE
from tests.support.kvshim import KVShim, oauth_kv_env, running_shim

TOKEN_URL = AMO_BASE + "/oauth2/access_token"
CLIENT_SECRET = "client-secret-SECRET-5555"
CODE = "def50200authcode-SECRET-9999"
PATH = "/api/oauth/callback"
TOKEN_BODY = {
    "token_type": "Bearer",
    "expires_in": 86400,
    "access_token": "access-token-SECRET-7777",
    "refresh_token": "refresh-token-SECRET-8888",
}


@pytest.fixture
def shim(set_env) -> Iterator[KVShim]:
    with running_shim() as kv:
        set_env(**oauth_kv_env(kv, CLIENT_SECRET))
        yield kv


@pytest.fixture
def amo(shim: KVShim) -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru(shim.url)
        yield rsps


def browser(lang: str = "en"):
    from prometei.web.apps import create_oauth_app

    client = create_oauth_app().test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = lang
    return client


def names(commands: list[list[object]]) -> list[str]:
    return [str(command[0]).upper() for command in commands]


def text_of(response) -> str:
    body = re.sub(r"<style>.*?</style>", " ", response.get_data(as_text=True), flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def redirect_for(client) -> str:
    """Click Connect in this browser; amoCRM's redirect back with a code for its state."""
    started = client.get(f"{PATH}?start=1")
    assert started.status_code == 303, text_of(started)
    state = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
    return f"{PATH}?" + urlencode({"code": CODE, "state": state, "referer": "example.amocrm.ru"})


def connect(client, amo: responses.RequestsMock) -> None:
    amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    done = client.get(redirect_for(client))
    assert done.status_code == 303, text_of(done)


# ---- what a view costs --------------------------------------------------------------------


@pytest.mark.parametrize("connected", [False, True])
def test_an_anonymous_view_costs_one_kv_read_and_no_write(shim, amo, connected):
    if connected:
        connect(browser(), amo)
    shim.commands.clear()
    for _ in range(5):  # five strangers, no cookies
        page = browser().get(PATH)
        assert page.status_code == 200
        assert ("Status connected" in text_of(page)) is connected
        assert "Set-Cookie" not in page.headers
    assert names(shim.commands) == ["HMGET"] * 5  # the token hash: connected or not
    assert shim.redis.keys("prometei:state:*") == []  # no state issued for a view


def test_the_connect_button_costs_one_kv_write_and_sets_the_cookie(shim):
    client = browser()
    page = client.get(PATH)
    assert f'href="{PATH}?start=1"' in page.get_data(as_text=True)
    shim.commands.clear()
    started = client.get(f"{PATH}?start=1")
    assert started.status_code == 303
    assert started.headers["Location"].startswith("https://www.amocrm.ru/oauth?")
    assert started.headers["Cache-Control"] == "no-store"
    cookie = started.headers["Set-Cookie"].lower()
    assert cookie.startswith("prometei_connect=") and "httponly" in cookie
    assert "samesite=lax" in cookie
    assert names(shim.commands) == ["SET"]
    [nonce_key] = shim.redis.keys("prometei:state:oauth-state:*")
    assert 0 < shim.redis.ttl(nonce_key) <= 16 * 60


def test_the_connect_button_with_the_store_down_says_so(shim, set_env):
    set_env(KV_REST_API_TOKEN="wrong-token")
    started = browser().get(f"{PATH}?start=1")
    assert started.status_code == 503
    assert "Connecting did not start" in text_of(started)
    assert "Set-Cookie" not in started.headers


# ---- the callback's time budget with a slow KV ------------------------------------------------


class BudgetClock:
    """The budget's monotonic clock; the shim moves it as if a command took `slow[name]` s."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slow: dict[str, float] = {}

    def __call__(self) -> float:
        return self.now

    def command(self, command: list[object]) -> None:
        self.now += self.slow.get(str(command[0]).upper(), 0.0)


@pytest.fixture
def budget_clock(shim, monkeypatch) -> BudgetClock:
    from prometei.web import oauth_page

    clock = BudgetClock()
    monkeypatch.setattr(oauth_page, "_monotonic", clock)
    shim.before_command = clock.command
    return clock


@pytest.mark.parametrize(
    ("slow", "state_spent"),
    [
        # Taking the refresh lease (SET NX PX) ate the budget: nothing is spent at all.
        ({"SET": 5.0}, False),
        # The state's DEL itself was slow: the state is spent, the code still not sent.
        ({"DEL": 2.5, "SET": 4.7}, True),
    ],
)
def test_a_kv_slower_than_the_budget_refuses_before_the_code_is_sent(
    shim, amo, budget_clock, caplog, slow, state_spent
):
    caplog.set_level(logging.INFO)
    token_endpoint = amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    client = browser()
    redirect = redirect_for(client)  # issued before the clock turns slow
    budget_clock.slow = slow

    response = client.get(redirect)
    assert response.status_code == 503
    text = text_of(response)
    assert "The token store is answering too slowly" in text
    assert "The authorization code was not sent to amoCRM" in text
    assert token_endpoint.call_count == 0  # the single-use code never left
    assert shim.redis.hget("prometei:amocrm:tokens", "record") is None
    assert "authorization code was not sent" in caplog.text
    assert CODE not in caplog.text and CODE not in response.get_data(as_text=True)
    left = shim.redis.keys("prometei:state:oauth-state:*")
    assert (left == []) is state_spent
    assert shim.redis.get("prometei:amocrm:refresh-lock") is None  # released

    # Once KV is quick again, the same code connects (a fresh state if the old one is spent).
    budget_clock.slow = {}
    again = client.get(redirect_for(client) if state_spent else redirect)
    assert again.status_code == 303, text_of(again)
    assert token_endpoint.call_count == 1


def test_a_kv_within_the_budget_connects(shim, amo, budget_clock):
    """Slow, but inside every deadline and the budget: the page still connects."""
    from prometei.web.connect_budget import send_by_s, state_command_s

    token_endpoint = amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    client = browser()
    redirect = redirect_for(client)
    # The state's GET, the lease's SET and the state's DEL leave the code 0.01 s to spare.
    lease = send_by_s() - state_command_s() - 1.9 - 0.01
    budget_clock.slow = {"GET": 1.9, "SET": lease, "DEL": 1.9}
    assert state_command_s() > 1.9
    response = client.get(redirect)
    assert response.status_code == 303, text_of(response)
    assert token_endpoint.call_count == 1


def test_the_state_commands_of_the_connect_flow_have_the_short_deadline(shim, amo):
    """The nonce's GET and DEL carry CONNECT_STATE_TIMEOUT, not the client's (3, 10) s, and a
    KV that does not answer in time is a 503 before the code is sent."""
    from prometei.services import get_services
    from prometei.store.kv import CONNECT_STATE_TIMEOUT, KV_TIMEOUT

    client = browser()
    redirect = redirect_for(client)
    state_store = get_services().connect_state
    assert state_store.timeout == CONNECT_STATE_TIMEOUT != KV_TIMEOUT
    assert get_services().state.timeout is None  # the other users keep the client's default

    sent: list[tuple[float, float]] = []

    def get_times_out(*args, timeout=None):
        from prometei.errors import UpstreamUnavailable

        sent.append(timeout)
        raise UpstreamUnavailable("kv", "did not complete its answer within 2s (whole-request)")

    state_store.client.command = get_times_out
    token_endpoint = amo.add(responses.POST, TOKEN_URL, json=TOKEN_BODY)
    response = client.get(redirect)
    assert response.status_code == 503
    assert "The authorization code was not used" in text_of(response)
    assert sent == [CONNECT_STATE_TIMEOUT]
    assert token_endpoint.call_count == 0


# ---- the numbers ---------------------------------------------------------------------------


def test_the_connect_budget_table_is_a_bound():
    """docs/token-rotation.md, "Connect page": the figures there are these constants."""
    from prometei.tokens import CONNECT_LOCK_WAIT_S
    from prometei.web import connect_budget as budget

    root = Path(__file__).resolve().parents[1]
    vercel = json.loads((root / "vercel.json").read_text())
    assert vercel["functions"]["api/oauth/callback.py"]["maxDuration"] == (
        budget.CALLBACK_MAX_DURATION_S
    )
    assert budget.state_command_s() == 2.0
    assert budget.exchange_reserve_s() == pytest.approx(13 + 2 * 4 + 0.2)  # 21.2 s
    assert budget.send_by_s() == pytest.approx(30 - 2 - 21.2)  # 6.8 s
    # The code leaves by 6.8 s, so the pair is stored by 28 s: 2 s for a cold start and the page.
    assert budget.send_by_s() + budget.exchange_reserve_s() + budget.START_MARGIN_S == 30
    # A quick KV and a refresh lock freed at the very end of the wait still fit.
    assert CONNECT_LOCK_WAIT_S + budget.state_command_s() < budget.send_by_s()
    docs = (root / "docs/token-rotation.md").read_text()
    for figure in ("21.2 s", "6.8 s", "2 s"):
        assert figure in docs


def test_a_release_never_outlasts_the_time_left(tmp_path):
    from prometei.store.file import FileTokenStore
    from prometei.tokens.lease import Holding

    store = FileTokenStore(tmp_path)
    releases: list[str] = []
    real_release = store.release_lock

    def counted(owner: str) -> bool:
        releases.append(owner)
        return real_release(owner)

    store.release_lock = counted  # type: ignore[method-assign]

    def release_with(seconds_left: float) -> str:
        owner = store.acquire_lock(8000)
        assert owner is not None
        Holding(store, owner, ttl_ms=8000, sleep=lambda s: None).release(lambda: seconds_left)
        return owner

    owner = release_with(1.0)  # less than one store command's deadline: no try
    assert releases == []
    assert store.acquire_lock(8000) is None  # left to run out by itself
    real_release(owner)
    release_with(60.0)
    assert len(releases) == 1
    assert store.acquire_lock(8000) is not None
