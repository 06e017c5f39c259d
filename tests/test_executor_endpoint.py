"""/api/inngest in cloud mode: signed, fresh, bounded, whole; syncs never take the Host header.

Each test plays one defect found by an attacker-style run against the real SDK (issue 12):
an unsigned PUT with `Host: evil.example` registered that origin; stale, future and `t`-less
signatures were accepted and a replayed step ran twice; an unsigned 4 MB body was read and
canonicalised before the 401; a body shorter than its Content-Length was accepted.
Registration goes to a real HTTP stub on loopback (the SDK sends it with httpx).
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import responses

from tests.conftest import AMO_BASE, TEST_SECRETS
from tests.support.executor import APP_ID, TEST_SIGNING_KEY, make_event, sign
from tests.support.loopback import serving

FN = "amocrm-webhook-handler"
FALLBACK_KEY = "signkey-test-" + "7e" * 32
LEAD_URL = re.compile(re.escape(AMO_BASE) + r"/api/v4/leads/\d+")


class RegisterStub:
    """Inngest's API as far as a sync needs it: records every `/fn/register` body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        if request.path == "/fn/register":
            self.bodies.append(json.loads(request.get_data() or b"{}"))
        return Response(json.dumps({"ok": True}), content_type="application/json")(
            environ, start_response
        )

    @property
    def urls(self) -> list[str]:
        return [body.get("url", "") for body in self.bodies]


@pytest.fixture
def register(set_env) -> Iterator[RegisterStub]:
    stub = RegisterStub()
    with serving(stub, "inngest-api") as url:
        set_env(INNGEST_API_BASE_URL=url)
        yield stub


def sign_empty(key: str = TEST_SIGNING_KEY) -> str:
    """The header for a request without a body (a sync PUT): HMAC over "" + t."""
    import hashlib
    import hmac

    t = int(time.time())
    mac = hmac.new(re.sub(r"^signkey-\w+-", "", key).encode(), str(t).encode(), hashlib.sha256)
    return f"t={t}&s={mac.hexdigest()}"


def client_for(set_env=None, **env: str | None):
    from prometei.web.apps import create_inngest_app

    if set_env is not None and env:
        set_env(**env)
    return create_inngest_app().test_client()


def first_call(event: dict[str, Any] | None = None) -> dict[str, Any]:
    event = event or make_event(
        "amocrm/lead.status",
        {"lead_id": 25399013, "account_id": 29085955, "subdomain": "example", "action": "status"},
    )
    return {
        "event": event,
        "events": [event],
        "steps": {},
        "use_api": False,
        "version": 1,
        "ctx": {
            "run_id": "01TESTREPLAY",
            "attempt": 0,
            "max_attempts": 5,
            "disable_immediate_execution": False,
            "use_api": False,
            "fn_id": f"{APP_ID}-{FN}",
            "stack": {"stack": [], "current": 0},
        },
    }


def post_signed(client, raw: bytes, signature: str | None, **kwargs: Any):
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Inngest-Signature"] = signature
    return client.post(
        f"/api/inngest?fnId={APP_ID}-{FN}&stepId=step", data=raw, headers=headers, **kwargs
    )


@pytest.fixture
def amo_lead(mock: responses.RequestsMock) -> responses.RequestsMock:
    mock.add(responses.GET, LEAD_URL, json={"id": 25399013, "name": "Order", "price": 1})
    return mock


# ---- sync: no Host-header origin, no unsigned sync ----------------------------------------


def test_unsigned_put_with_a_forged_host_registers_nothing(register, app_client):
    response = app_client.put("/api/inngest", headers={"Host": "evil.example"})
    assert response.status_code == 401
    assert "X-Inngest-Signature" in response.get_json()["error"]
    assert register.bodies == []


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"INNGEST_SERVE_ORIGIN": "https://prometei.example.test"},
            "https://prometei.example.test",
        ),
        (
            {
                "VERCEL": "1",
                "VERCEL_ENV": "production",
                "VERCEL_PROJECT_PRODUCTION_URL": "prometei.example.test",
                "VERCEL_URL": "prometei-abc123.vercel.app",
                "KV_REST_API_URL": "https://kv.example.test",
                "KV_REST_API_TOKEN": "kv-token",
            },
            "https://prometei.example.test",
        ),
        (
            {
                "VERCEL": "1",
                "VERCEL_ENV": "preview",
                "VERCEL_PROJECT_PRODUCTION_URL": "prometei.example.test",
                "VERCEL_URL": "prometei-abc123.vercel.app",
                "KV_REST_API_URL": "https://kv.example.test",
                "KV_REST_API_TOKEN": "kv-token",
            },
            "https://prometei-abc123.vercel.app",  # a preview never registers production's URL
        ),
    ],
)
def test_signed_sync_registers_the_configured_origin_not_the_host_header(
    register, set_env, env, expected
):
    client = client_for(set_env, **env)
    response = client.put(
        "/api/inngest", headers={"Host": "evil.example", "X-Inngest-Signature": sign_empty()}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert register.urls == [f"{expected}/api/inngest"]


def test_signed_out_of_band_sync_without_an_origin_is_refused_naming_the_variable(
    register, app_client
):
    response = app_client.put(
        "/api/inngest", headers={"Host": "evil.example", "X-Inngest-Signature": sign_empty()}
    )
    assert response.status_code == 503
    assert "INNGEST_SERVE_ORIGIN" in response.get_json()["error"]
    assert register.bodies == []


def test_signed_in_band_sync_answers_with_the_url_inngest_signed(app_client):
    raw, signature = sign({"url": "https://prometei.example.test/api/inngest"})
    response = app_client.put(
        "/api/inngest",
        data=raw,
        headers={
            "Host": "evil.example",
            "X-Inngest-Signature": signature,
            "X-Inngest-Sync-Kind": "in_band",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["url"] == "https://prometei.example.test/api/inngest"


def test_dev_mode_still_syncs_unsigned(register, set_env):
    client = client_for(set_env, INNGEST_DEV="1", INNGEST_SIGNING_KEY=None)
    response = client.put("/api/inngest")
    assert response.status_code == 200
    assert register.urls == ["http://localhost/api/inngest"]


# ---- signature freshness --------------------------------------------------------------------


@pytest.mark.parametrize("key", [TEST_SIGNING_KEY, FALLBACK_KEY], ids=["primary", "fallback"])
@pytest.mark.parametrize("age_s", [301, 600, 365 * 86400, int(time.time()) - 1, -301, -86400])
def test_stale_or_future_signatures_are_refused_for_both_keys(set_env, amo_lead, key, age_s):
    client = client_for(set_env, INNGEST_SIGNING_KEY_FALLBACK=FALLBACK_KEY)
    raw, signature = sign(first_call(), key, ts=int(time.time()) - age_s)
    response = post_signed(client, raw, signature)
    assert response.status_code == 401
    assert "minutes" in response.get_json()["error"]
    assert len(amo_lead.calls) == 0


@pytest.mark.parametrize("key", [TEST_SIGNING_KEY, FALLBACK_KEY], ids=["primary", "fallback"])
def test_fresh_signatures_work_with_both_keys(set_env, amo_lead, key):
    client = client_for(set_env, INNGEST_SIGNING_KEY_FALLBACK=FALLBACK_KEY)
    raw, signature = sign(first_call(), key, ts=int(time.time()) - 240)
    response = post_signed(client, raw, signature)
    assert response.status_code == 206, response.get_data(as_text=True)
    assert len(amo_lead.calls) == 1


def test_a_signature_without_timestamp_is_refused(app_client, amo_lead):
    import hashlib
    import hmac

    import jcs

    raw = jcs.canonicalize(first_call())
    key = re.sub(r"^signkey-\w+-", "", TEST_SIGNING_KEY).encode()
    mac = hmac.new(key, raw, hashlib.sha256).hexdigest()  # HMAC over the body alone
    response = post_signed(app_client, raw, f"s={mac}")
    assert response.status_code == 401
    assert "no timestamp" in response.get_json()["error"]
    assert len(amo_lead.calls) == 0


@pytest.mark.parametrize("header", ["t=12ab&s=00", "t=-5&s=00", "garbage"])
def test_malformed_signature_headers_are_refused(app_client, amo_lead, header):
    response = post_signed(app_client, jsonable(first_call()), header)
    assert response.status_code == 401
    assert len(amo_lead.calls) == 0


def jsonable(body: Any) -> bytes:
    import jcs

    return jcs.canonicalize(body)


def test_a_replayed_step_call_runs_once(app_client, amo_lead, monkeypatch):
    raw, signature = sign(first_call())
    first = post_signed(app_client, raw, signature)
    assert first.status_code == 206
    assert len(amo_lead.calls) == 1

    # The same bytes and header, captured and sent again six minutes later.
    later = time.time() + 6 * 60
    monkeypatch.setattr(time, "time", lambda: later)
    replay = post_signed(app_client, raw, signature)
    assert replay.status_code == 401
    assert len(amo_lead.calls) == 1


# ---- the signature itself: checked over the raw bytes before the SDK parses them ------------


@pytest.fixture
def sdk_calls(monkeypatch) -> list[str]:
    """Names of the SDK's signature check and JSON canonicaliser, each time it is called.

    Both are looked up on their modules when called, so wrapping them there sees every call
    the SDK makes; the originals still run."""
    from inngest._internal import net, transforms

    calls: list[str] = []

    def recording(name: str, original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        net, "validate_request_sig", recording("validate_request_sig", net.validate_request_sig)
    )
    monkeypatch.setattr(
        transforms, "canonicalize", recording("canonicalize", transforms.canonicalize)
    )
    return calls


def forged_header(how: str, body: Any) -> str:
    """A header with a current `t` whose `s` does not sign `body` under a configured key."""
    other = {**body, "ctx": {**body["ctx"], "run_id": "01SOMEOTHERRUN"}}
    if how == "primary-key-other-body":
        return sign(other, TEST_SIGNING_KEY)[1]
    if how == "fallback-key-other-body":
        return sign(other, FALLBACK_KEY)[1]
    if how == "unknown-key":
        return sign(body, "signkey-test-" + "00" * 32)[1]
    if how == "non-ascii":  # compare_digest raises on non-ASCII str; must still be a 401
        return f"t={int(time.time())}&s=\u00e9" + "0" * 63
    return f"t={int(time.time())}&s=" + "ab" * 32


FORGERIES = [
    "garbage",
    "primary-key-other-body",
    "fallback-key-other-body",
    "unknown-key",
    "non-ascii",
]


@pytest.mark.parametrize("how", FORGERIES)
def test_a_forged_signature_with_a_current_timestamp_never_reaches_the_sdk(
    set_env, amo_lead, sdk_calls, how
):
    client = client_for(set_env, INNGEST_SIGNING_KEY_FALLBACK=FALLBACK_KEY)
    body = first_call()
    response = post_signed(client, jsonable(body), forged_header(how, body))
    assert response.status_code == 401
    message = response.get_json()["error"]
    assert "does not match the request body" in message
    assert "INNGEST_SIGNING_KEY_FALLBACK" in message
    assert sdk_calls == []
    assert len(amo_lead.calls) == 0


def test_a_forged_4_mib_body_is_read_but_never_parsed(set_env, sdk_calls):
    client = client_for(set_env, INNGEST_SIGNING_KEY_FALLBACK=FALLBACK_KEY)
    body = b'{"event": {"data": "' + b"x" * (4 * 1024 * 1024) + b'"}}'
    stream = CountingInput(body)
    response = client.post(
        f"/api/inngest?fnId={APP_ID}-{FN}&stepId=step",
        input_stream=stream,
        headers={
            "Content-Type": "application/json",
            "X-Inngest-Signature": f"t={int(time.time())}&s=" + "ab" * 32,
        },
        environ_overrides={"CONTENT_LENGTH": str(len(body))},
    )
    assert response.status_code == 401
    assert stream.bytes_read == len(body)  # the HMAC needs the bytes...
    assert sdk_calls == []  # ...but nothing parsed or canonicalised them


@pytest.mark.parametrize("key", [TEST_SIGNING_KEY, FALLBACK_KEY], ids=["primary", "fallback"])
def test_a_correctly_signed_request_still_gets_the_sdks_own_check(
    set_env, amo_lead, sdk_calls, key
):
    client = client_for(set_env, INNGEST_SIGNING_KEY_FALLBACK=FALLBACK_KEY)
    raw, signature = sign(first_call(), key)
    response = post_signed(client, raw, signature)
    assert response.status_code == 206, response.get_data(as_text=True)
    assert sdk_calls[:2] == ["validate_request_sig", "canonicalize"]  # defence in depth
    assert len(amo_lead.calls) == 1


def test_the_fallback_key_signs_nothing_when_it_is_not_configured(app_client, amo_lead):
    raw, signature = sign(first_call(), FALLBACK_KEY)
    response = post_signed(app_client, raw, signature)
    assert response.status_code == 401
    assert "does not match the request body" in response.get_json()["error"]
    assert len(amo_lead.calls) == 0


def test_the_signature_covers_the_bytes_sent_not_their_canonical_form(app_client, amo_lead):
    """Inngest signs exactly the (JCS) bytes it sends; a signature over the canonical form of
    other bytes - the same JSON spaced differently - is a different message here, though the
    SDK alone would accept it."""
    body = first_call()
    _, signature = sign(body)
    response = post_signed(app_client, json.dumps(body, indent=2).encode(), signature)
    assert response.status_code == 401
    assert len(amo_lead.calls) == 0


def test_a_signature_header_without_s_is_refused(app_client, amo_lead, sdk_calls):
    response = post_signed(app_client, jsonable(first_call()), f"t={int(time.time())}")
    assert response.status_code == 401
    assert "no signature (s=)" in response.get_json()["error"]
    assert sdk_calls == []


def test_a_forged_sync_is_a_401_before_the_missing_origin_is_mentioned(register, app_client):
    forged = f"t={int(time.time())}&s=" + "ab" * 32
    response = app_client.put(
        "/api/inngest", headers={"Host": "evil.example", "X-Inngest-Signature": forged}
    )
    assert response.status_code == 401
    assert "INNGEST_SERVE_ORIGIN" not in response.get_json()["error"]
    assert register.bodies == []


def test_hmac_key_drops_the_signkey_prefix_and_keeps_the_hex_as_text():
    from inngest._internal.transforms import remove_signing_key_prefix

    from prometei.web.executor import hmac_key

    for key in (TEST_SIGNING_KEY, FALLBACK_KEY, "signkey-prod-abc123", "no-prefix-key"):
        assert hmac_key(key) == remove_signing_key_prefix(key).encode()
    assert hmac_key("signkey-branch-" + "5d" * 32) == b"5d" * 32


# ---- the body: never read unsigned, bounded, whole ------------------------------------------


class CountingInput(io.BytesIO):
    """wsgi.input that counts the bytes anyone read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readinto(self, buffer) -> int:  # werkzeug's LimitedStream reads this way
        count = super().readinto(buffer)
        self.bytes_read += count
        return count

    def readline(self, size: int | None = -1) -> bytes:
        chunk = super().readline(size)
        self.bytes_read += len(chunk)
        return chunk


def test_an_unsigned_big_body_is_refused_before_it_is_read(app_client):
    body = b'{"event": {"data": "' + b"x" * (4 * 1024 * 1024) + b'"}}'
    stream = CountingInput(body)
    response = app_client.post(
        f"/api/inngest?fnId={APP_ID}-{FN}&stepId=step",
        input_stream=stream,
        headers={"Content-Type": "application/json"},
        environ_overrides={"CONTENT_LENGTH": str(len(body))},
    )
    assert response.status_code == 401
    assert stream.bytes_read == 0


def test_a_signed_body_over_the_limit_is_a_413_before_it_is_read(app_client):
    from prometei.web.executor import MAX_EXECUTOR_BODY

    signature = sign_empty()
    stream = CountingInput(b"{}")
    response = app_client.post(
        f"/api/inngest?fnId={APP_ID}-{FN}&stepId=step",
        input_stream=stream,
        headers={"Content-Type": "application/json", "X-Inngest-Signature": signature},
        environ_overrides={"CONTENT_LENGTH": str(MAX_EXECUTOR_BODY + 1)},
    )
    assert response.status_code == 413
    assert "4 MiB" in response.get_json()["error"]
    assert stream.bytes_read == 0


def test_the_limit_fits_the_largest_request_the_executor_sends():
    from prometei.web.executor import MAX_EXECUTOR_BODY

    assert MAX_EXECUTOR_BODY >= 4 * 1024 * 1024  # Inngest's MaxSDKRequestBodySize


def short_body_environ(declared: int) -> dict[str, Any]:
    # What gunicorn (and Vercel's runtime) hand over: a stream that simply ends, marked as
    # terminated, so werkzeug does not compare it with Content-Length by itself.
    return {"CONTENT_LENGTH": str(declared), "wsgi.input_terminated": True}


def test_a_truncated_executor_body_is_a_400(app_client, amo_lead):
    raw, signature = sign(first_call())
    cut = raw[: len(raw) // 2]
    response = app_client.post(
        f"/api/inngest?fnId={APP_ID}-{FN}&stepId=step",
        input_stream=io.BytesIO(cut),
        headers={"Content-Type": "application/json", "X-Inngest-Signature": signature},
        environ_overrides=short_body_environ(len(raw)),
    )
    assert response.status_code == 400
    message = response.get_json()["error"]
    assert f"ended after {len(cut)} of the {len(raw)} bytes" in message
    assert len(amo_lead.calls) == 0


WEBHOOK_BODY = (
    b"leads[status][0][id]=25399013&leads[status][0][status_id]=142"
    b"&leads[status][0][pipeline_id]=7012345&account[subdomain]=example&account[id]=29085955"
)


@pytest.fixture
def event_api(mock: responses.RequestsMock) -> responses.RequestsMock:
    from tests.conftest import EVENT_API

    mock.add(responses.POST, EVENT_API, json={"ids": ["x"], "status": 200})
    return mock


@pytest.mark.parametrize(
    "factory", ["create_webhook_app", "create_local_app", "create_inngest_app"]
)
def test_a_truncated_webhook_body_is_a_400_on_every_app(factory, event_api, set_env):
    from prometei.web import apps

    set_env(INNGEST_DEV=None)
    client = getattr(apps, factory)().test_client()
    path = "/api/inngest" if factory == "create_inngest_app" else "/api/webhook"
    declared = len(WEBHOOK_BODY) + 40  # the last fields never arrived
    response = client.post(
        f"{path}?token={TEST_SECRETS['AMOCRM_WEBHOOK_SECRET']}",
        input_stream=io.BytesIO(WEBHOOK_BODY),
        content_type="application/x-www-form-urlencoded",
        environ_overrides=short_body_environ(declared),
    )
    assert response.status_code == 400
    assert "truncated" in response.get_json()["error"]
    assert len(event_api.calls) == 0


@pytest.mark.parametrize("factory", ["create_oauth_app", "create_local_app"])
def test_a_truncated_body_on_the_connect_page_is_a_400(factory):
    from prometei.web import apps

    client = getattr(apps, factory)().test_client()
    response = client.get(
        "/api/oauth/callback",
        input_stream=io.BytesIO(b"abc"),
        environ_overrides=short_body_environ(100),
    )
    assert response.status_code == 400
    assert "truncated" in response.get_data(as_text=True)


def test_werkzeug_stream_cut_short_is_also_a_clear_400(app_client):
    raw, signature = sign(first_call())
    response = app_client.post(
        f"/api/inngest?fnId={APP_ID}-{FN}&stepId=step",
        input_stream=io.BytesIO(raw[:10]),
        headers={"Content-Type": "application/json", "X-Inngest-Signature": signature},
        environ_overrides={"CONTENT_LENGTH": str(len(raw))},
    )
    assert response.status_code == 400
    assert "truncated" in response.get_json()["error"]


# ---- where the serve origin comes from, and what doctor says -----------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"INNGEST_SERVE_ORIGIN": "prometei.example.test"}, "https://prometei.example.test"),
        (
            {"INNGEST_SERVE_ORIGIN": "https://Prometei.Example.test/"},
            "https://prometei.example.test",
        ),
        ({"INNGEST_SERVE_ORIGIN": "http://127.0.0.1:3000"}, "http://127.0.0.1:3000"),
        ({"VERCEL_PROJECT_PRODUCTION_URL": "p.example.test"}, None),  # not on Vercel
        (
            {
                "VERCEL": "1",
                "VERCEL_ENV": "production",
                "VERCEL_PROJECT_PRODUCTION_URL": "p.example.test",
            },
            "https://p.example.test",
        ),
        (
            {
                "VERCEL": "1",
                "VERCEL_ENV": "preview",
                "VERCEL_PROJECT_PRODUCTION_URL": "p.example.test",
            },
            None,
        ),
        (
            {"VERCEL": "1", "VERCEL_ENV": "preview", "VERCEL_URL": "p-1.vercel.app"},
            "https://p-1.vercel.app",
        ),
        (
            {
                "VERCEL": "1",
                "VERCEL_ENV": "production",
                "VERCEL_URL": "p-1.vercel.app",
                "INNGEST_SERVE_ORIGIN": "https://x.example.test",
            },
            "https://x.example.test",
        ),
    ],
)
def test_serve_origin_precedence(env, expected):
    from prometei.config import settings_from_mapping

    origin = settings_from_mapping(env).serve_origin
    assert (origin[0] if origin else None) == expected


@pytest.mark.parametrize(
    "value",
    [
        "https://p.example.test/api/inngest",
        "https://user:pw@p.example.test",
        "ftp://p.example.test",
        "https://p.example.test?x=1",
    ],
)
def test_a_serve_origin_with_more_than_scheme_and_host_is_a_config_error(value):
    from prometei.config import settings_from_mapping
    from prometei.errors import ConfigError

    with pytest.raises(ConfigError, match="INNGEST_SERVE_ORIGIN"):
        settings_from_mapping({"INNGEST_SERVE_ORIGIN": value})


def test_doctor_shows_the_serve_origin_and_its_source(project_env):
    from prometei.config import settings_from_mapping
    from prometei.doctor import check_inngest

    unset = check_inngest(settings_from_mapping(project_env))
    assert unset.ok and "serve origin not configured" in unset.detail
    assert "INNGEST_SERVE_ORIGIN" in unset.detail
    configured = check_inngest(
        settings_from_mapping({**project_env, "INNGEST_SERVE_ORIGIN": "https://p.example.test"})
    )
    assert (
        "serve origin https://p.example.test/api/inngest (from INNGEST_SERVE_ORIGIN)"
        in configured.detail
    )


@pytest.mark.parametrize(("size", "status"), [(64, 200), (65, 413), (10_000, 413)])
def test_a_body_without_content_length_is_read_to_the_limit_and_no_further(size, status):
    """A chunked upload has no length to check first: reading stops one byte past the limit,
    and that byte makes it a 413 (werkzeug alone would cut the body short without a word)."""
    import flask
    from werkzeug.test import EnvironBuilder

    from prometei.web.bodies import BodyRefused, read_body

    app = flask.Flask("bodies")
    stream = CountingInput(b"x" * size)
    environ = EnvironBuilder(method="POST", input_stream=stream).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True  # what a server that de-chunks sets
    with app.request_context(environ):
        try:
            answer = (200, len(read_body(flask.request, 64)))
        except BodyRefused as refusal:
            answer = (refusal.status, 0)
    assert answer[0] == status
    if status == 200:
        assert answer[1] == size
    assert stream.bytes_read <= 65
