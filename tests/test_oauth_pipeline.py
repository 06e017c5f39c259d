"""The OAuth issue's acceptance path: only KV and OAuth credentials in the environment, a
connect through the callback page, then the lead pipeline runs on the stored (and later
refreshed) tokens. KV is the fakeredis HTTP shim on loopback, so the store speaks real REST."""

from __future__ import annotations

import html
import json
import re
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import responses

from tests.conftest import AMO_BASE, ERP_URL
from tests.fakes.rukovoditel import FakeRukovoditel
from tests.support.executor import make_event, run_function
from tests.support.kvshim import oauth_kv_env, running_shim

CLIENT_SECRET = "client-secret-SECRET-5555"
TOKEN_URL = f"{AMO_BASE}/oauth2/access_token"
LEAD_ID = 25399013


def token_answer(n: int) -> dict:
    return {
        "token_type": "Bearer",
        "expires_in": 86400,
        "access_token": f"access-SECRET-{n}",
        "refresh_token": f"refresh-SECRET-{n}",
    }


@pytest.fixture
def kv_oauth_env(set_env):
    with running_shim() as shim:
        set_env(**oauth_kv_env(shim, CLIENT_SECRET))
        yield shim


@pytest.fixture
def mock(kv_oauth_env):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru(kv_oauth_env.url)  # the KV shim is a real loopback server
        yield rsps


def connect(mock) -> None:
    """Connect as a person would: the connect page, its button (cookie + state), then amoCRM's
    redirect."""
    from prometei.web.apps import create_oauth_app

    mock.post(TOKEN_URL, json=token_answer(1))
    browser = create_oauth_app().test_client()
    page = browser.get("/api/oauth/callback")
    [start] = re.findall(r'href="([^"]*start=1[^"]*)"', page.get_data(as_text=True))
    authorize = browser.get(html.unescape(start)).headers["Location"]
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    query = urlencode(
        {"code": "one-time-code-SECRET", "state": state, "referer": "example.amocrm.ru"}
    )
    done = browser.get(f"/api/oauth/callback?{query}")
    assert done.status_code == 303, done.get_data(as_text=True)
    assert "SECRET" not in done.get_data(as_text=True)


def lead_json() -> dict:
    return {
        "id": LEAD_ID,
        "name": "Order #1042",
        "price": 15000,
        "status_id": 142,
        "pipeline_id": 7012345,
        "_embedded": {"contacts": []},
    }


def test_connect_then_sync_then_refresh_without_any_token_in_env(kv_oauth_env, mock, caplog):
    from prometei.services import get_services, reset_services
    from prometei.web.apps import create_inngest_app

    connect(mock)
    stored = kv_oauth_env.redis.hgetall("prometei:amocrm:tokens")
    assert stored, "the pair went to KV"
    assert "access-SECRET-1" in str(stored)

    erp = FakeRukovoditel(ERP_URL).install(mock)
    lead = mock.get(f"{AMO_BASE}/api/v4/leads/{LEAD_ID}", json=lead_json())
    app = create_inngest_app().test_client()
    run = run_function(
        app, "amocrm-webhook-handler", make_event("amocrm/lead.sync", {"lead_id": LEAD_ID})
    )
    assert run.status == "Completed", run.output
    assert lead.calls[0].request.headers["Authorization"] == "Bearer access-SECRET-1"
    assert len(erp.rows[70]) == 1

    # A day later the access token has expired: the next run refreshes once, through KV.
    store = get_services().store
    record = store.read()
    store.write(record.model_copy(update={"expires_at": int(time.time()) - 60}))
    reset_services()  # a new instance: nothing cached in memory
    refresh = mock.post(TOKEN_URL, json=token_answer(2))
    run = run_function(
        app, "amocrm-webhook-handler", make_event("amocrm/lead.sync", {"lead_id": LEAD_ID})
    )
    assert run.status == "Completed", run.output
    bodies = [json.loads(c.request.body) for c in refresh.calls]
    assert [b["grant_type"] for b in bodies][-1] == "refresh_token"
    assert bodies[-1]["refresh_token"] == "refresh-SECRET-1"
    assert lead.calls[-1].request.headers["Authorization"] == "Bearer access-SECRET-2"
    assert get_services().store.read().refresh_token.get_secret_value() == "refresh-SECRET-2"

    dumped = json.dumps([run.output, run.step_outputs]) + caplog.text
    for secret in (
        "access-SECRET",
        "refresh-SECRET",
        "one-time-code-SECRET",
        CLIENT_SECRET,
        kv_oauth_env.token,
    ):
        assert secret not in dumped
