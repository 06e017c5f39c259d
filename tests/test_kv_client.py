"""KV client against exact Upstash REST shapes (responses), and the KV token store over the shim."""

from __future__ import annotations

import json

import pytest
import requests
import responses
from pydantic import SecretStr

from prometei.config import settings_from_mapping
from prometei.errors import (
    ConfigError,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from prometei.store import build_store
from prometei.store.base import StoreCorrupt, TokenRecord
from prometei.store.file import FileTokenStore
from prometei.store.kv import KVClient, KVTokenStore
from tests.support.kvshim import running_shim

URL = "https://example-kv.upstash.io"
TOKEN = "kv-rest-token-SECRET-7777"


@pytest.fixture
def kv() -> KVClient:
    return KVClient(URL, TOKEN)


def record(**overrides) -> TokenRecord:
    values = {
        "access_token": SecretStr("acc-SECRET-a"),
        "refresh_token": SecretStr("ref-SECRET-r"),
        "expires_at": 2_000_000_000,
        "obtained_at": 1_900_000_000,
        "host": "example.amocrm.ru",
    }
    values.update(overrides)
    return TokenRecord(**values)


@responses.activate
def test_command_posts_a_json_array_with_bearer_auth(kv):
    responses.post(URL, json={"result": "OK"})
    assert kv.command("SET", "k", "v", "NX", "PX", 30000) == "OK"
    sent = responses.calls[0].request
    assert sent.url.rstrip("/") == URL
    assert json.loads(sent.body) == ["SET", "k", "v", "NX", "PX", 30000]
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Content-Type"] == "application/json"


@responses.activate
def test_set_nx_on_a_held_key_returns_none_and_the_store_reports_no_lock(kv):
    # Upstash: "if the condition prevents the write, the reply is null".
    responses.post(URL, json={"result": None})
    assert kv.command("SET", "lock", "x", "NX", "PX", 1000) is None
    assert KVTokenStore(kv).acquire_lock(1000) is None


@responses.activate
def test_release_is_compare_and_delete_by_eval(kv):
    responses.post(URL, json={"result": 1})
    responses.post(URL, json={"result": 0})
    store = KVTokenStore(kv)
    assert store.release_lock("owner-a") is True
    assert store.release_lock("owner-a") is False
    command = json.loads(responses.calls[0].request.body)
    assert command[0] == "EVAL" and command[2:] == [1, "prometei:amocrm:refresh-lock", "owner-a"]
    assert "redis.call('get', KEYS[1]) == ARGV[1]" in command[1]


@responses.activate
def test_401_names_both_token_variables_and_never_the_token(kv):
    responses.post(URL, status=401, json={"error": "WRONGPASS invalid or missing auth token"})
    with pytest.raises(UpstreamAuthError) as info:
        kv.command("GET", "k")
    message = str(info.value)
    assert "KV_REST_API_TOKEN" in message and "UPSTASH_REDIS_REST_TOKEN" in message
    assert TOKEN not in message and TOKEN not in repr(kv)
    assert info.value.status == 401 and not info.value.retryable


@responses.activate
def test_error_envelope_is_rejected_with_the_redis_message(kv):
    responses.post(URL, status=400, json={"error": "ERR value is not an integer or out of range"})
    with pytest.raises(UpstreamRejected, match="INCR failed: ERR value is not an integer"):
        kv.command("INCR", "k")


@responses.activate
def test_readonly_token_write_is_an_auth_error(kv):
    responses.post(URL, status=400, json={"error": "NOPERM this user has no permissions"})
    with pytest.raises(UpstreamAuthError, match="read-only"):
        kv.command("SET", "k", "v")


@pytest.mark.parametrize("status", [429, 500, 502, 503])
@responses.activate
def test_overload_and_server_errors_are_retryable(kv, status):
    responses.post(URL, status=status, body="upstream trouble")
    with pytest.raises(UpstreamUnavailable) as info:
        kv.command("GET", "k")
    assert info.value.retryable and info.value.status == status


@responses.activate
def test_timeout_is_retryable(kv):
    responses.post(URL, body=requests.ReadTimeout("slow"))
    with pytest.raises(UpstreamUnavailable, match="timeout"):
        kv.command("GET", "k")


@responses.activate
def test_html_answer_is_a_protocol_error_pointing_at_the_url(kv):
    responses.post(URL, status=404, body="<html>not here</html>", content_type="text/html")
    with pytest.raises(UpstreamProtocolError, match="KV_REST_API_URL"):
        kv.command("GET", "k")


@responses.activate
def test_sync_token_is_echoed_for_read_your_writes(kv):
    responses.post(URL, json={"result": "OK"}, headers={"Upstash-Sync-Token": "sync-1"})
    responses.post(URL, json={"result": "v"})
    kv.command("SET", "k", "v")
    kv.command("GET", "k")
    assert "Upstash-Sync-Token" not in responses.calls[0].request.headers
    assert responses.calls[1].request.headers["Upstash-Sync-Token"] == "sync-1"


# ---- the KV token store against real Redis semantics (shim over fakeredis) -------------------
def test_kv_store_roundtrip_versions_and_lock_semantics():
    with running_shim() as shim:
        store = KVTokenStore(KVClient(shim.url, shim.token))
        assert store.read() is None
        first = store.write(record())
        second = store.write(record(access_token=SecretStr("acc-SECRET-b")))
        assert (first.version, second.version) == (1, 2)
        back = store.read()
        assert back == second
        assert back.access_token.get_secret_value() == "acc-SECRET-b"

        owner = store.acquire_lock(5000)
        assert owner is not None
        assert store.acquire_lock(5000) is None  # SET NX → null
        assert 0 < shim.redis.pttl(store.lock_key) <= 5000
        assert store.release_lock("somebody-else") is False
        assert shim.redis.get(store.lock_key) == owner
        assert store.release_lock(owner) is True
        assert store.acquire_lock(5000) is not None


def test_kv_store_over_the_shim_with_a_wrong_token_is_an_auth_error():
    with running_shim() as shim:
        store = KVTokenStore(KVClient(shim.url, "wrong-token"))
        with pytest.raises(UpstreamAuthError):
            store.read()


def test_kv_store_reports_a_corrupt_record_without_its_content():
    with running_shim() as shim:
        shim.redis.hset("prometei:amocrm:tokens", mapping={"record": "{oops", "version": "3"})
        with pytest.raises(StoreCorrupt, match="/api/oauth/callback"):
            KVTokenStore(KVClient(shim.url, shim.token)).read()


def test_record_repr_and_dump_hide_tokens():
    rec = record()
    for text in (repr(rec), str(rec), str(rec.model_dump()), str(rec.public_view())):
        assert "acc-SECRET-a" not in text and "ref-SECRET-r" not in text


# ---- build_store ---------------------------------------------------------------------------
def test_build_store_picks_kv_for_either_env_family(tmp_path):
    for names in (
        ("KV_REST_API_URL", "KV_REST_API_TOKEN"),
        ("UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"),
    ):
        settings = settings_from_mapping({names[0]: URL, names[1]: TOKEN})
        store = build_store(settings)
        assert isinstance(store, KVTokenStore) and store.kind == "kv"
        assert "example-kv.upstash.io" in store.describe() and TOKEN not in store.describe()


def test_build_store_defaults_to_the_file_store(tmp_path):
    store = build_store(settings_from_mapping({"PROMETEI_STATE_DIR": str(tmp_path)}))
    assert isinstance(store, FileTokenStore) and store.directory == tmp_path


def test_build_store_refuses_the_file_store_on_vercel():
    settings = settings_from_mapping({"VERCEL": "1", "AMOCRM_SUBDOMAIN": "example"})
    with pytest.raises(ConfigError) as info:
        build_store(settings)
    assert "KV_REST_API_URL" in str(info.value) and "KV_REST_API_TOKEN" in str(info.value)
    assert "persistent" in str(info.value)
    # A long-lived token needs no store, so nothing to refuse.
    ok = settings_from_mapping({"VERCEL": "1", "AMOCRM_ACCESS_TOKEN": "x" * 20})
    assert build_store(ok).kind == "file"
    with_kv = settings_from_mapping(
        {"VERCEL": "1", "KV_REST_API_URL": URL, "KV_REST_API_TOKEN": TOKEN}
    )
    assert build_store(with_kv).kind == "kv"


# ---- review fixes ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "named"),
    [
        ("ERR max daily request limit exceeded. Limit: 10000, Usage: 10000.", "quota"),
        ("ERR max requests limit exceeded", "quota"),
        # Command errors by the protocol (400) that clear by themselves: a restarting store.
        ("LOADING Redis is loading the dataset in memory", "restarting"),
        ("BUSY Redis is busy running a script. You can only call SCRIPT KILL.", "restarting"),
        ("TRYAGAIN Multiple keys request during rehashing of slot", "restarting"),
    ],
)
@responses.activate
def test_errors_that_clear_by_themselves_are_retryable_and_say_why(kv, error, named):
    responses.post(URL, status=400, json={"error": error})
    with pytest.raises(UpstreamUnavailable) as info:
        kv.command("EVAL", "return 1", 0)
    assert info.value.retryable
    assert named in str(info.value) and error[:25] in str(info.value)


@responses.activate
def test_request_size_limit_stays_a_rejection(kv):
    # Not a quota that clears by itself: the same request would fail again.
    responses.post(URL, status=400, json={"error": "ERR max request size exceeded"})
    with pytest.raises(UpstreamRejected):
        kv.command("SET", "k", "v")


@responses.activate
def test_token_store_commands_use_the_short_lock_time_timeouts(kv):
    responses.post(URL, json={"result": [None, None, None, None, None]})
    responses.post(URL, json={"result": 1})
    store = KVTokenStore(kv)
    store.read()
    store.acquire_lock(1000)
    assert [c.request.req_kwargs["timeout"] for c in responses.calls] == [(1.0, 3.0)] * 2


def test_kv_write_if_version_is_a_compare_version_write():
    with running_shim() as shim:
        store = KVTokenStore(KVClient(shim.url, shim.token))
        assert store.write_if_version(record(), 1) is None  # nothing stored: version is 0
        assert shim.redis.exists(store.tokens_key) == 0
        first = store.write_if_version(record(), 0)
        assert first is not None and first.version == 1
        newer = store.write(record(access_token=SecretStr("acc-SECRET-newer")))
        assert newer.version == 2
        # A late writer that read version 1 must not overwrite the newer pair.
        late = store.write_if_version(record(access_token=SecretStr("acc-SECRET-late")), 1)
        assert late is None
        assert store.read() == newer
        current = store.write_if_version(record(access_token=SecretStr("acc-SECRET-c")), 2)
        assert current is not None and current.version == 3
        assert store.read().access_token.get_secret_value() == "acc-SECRET-c"


@responses.activate
def test_a_wrong_type_error_stays_a_rejection(kv):
    responses.post(URL, status=400, json={"error": "WRONGTYPE Operation against a key"})
    with pytest.raises(UpstreamRejected):
        kv.command("HMGET", "k", "f")
