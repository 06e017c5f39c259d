"""The in-process KV fake (tests/support/kvshim.py) answers like the reference's Upstash REST
examples, and the product's own KV code works against it over loopback HTTP: doctor's kv row,
read-your-writes, a store that is restarting. The same contract runs against the real-Redis
shim in tests/redis/test_shim_protocol.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
import responses
from click.testing import CliRunner

from prometei.cli.doctor import doctor
from prometei.errors import UpstreamUnavailable
from prometei.store.kv import KVClient
from tests.support.kvshim import KVShim, running_shim
from tests.support.redis_server import free_port
from tests.support.upstash_contract import UpstashContract, call
from tests.support.upstash_rest import BACKEND_DOWN_ERROR


@pytest.fixture
def shim() -> Iterator[KVShim]:
    with running_shim() as running:
        yield running


class TestKVShim(UpstashContract):
    """Every documented example, over fakeredis."""


def test_doctor_kv_row_is_ok_against_the_shim_over_http(
    shim: KVShim, mock: responses.RequestsMock, set_env
) -> None:
    mock.add_passthru(shim.url)  # the KV store is real HTTP; every other system stays mocked
    set_env(KV_REST_API_URL=shim.url, KV_REST_API_TOKEN=shim.token)
    result = CliRunner().invoke(doctor, ["--json"])
    # stdout also carries the loopback server's JSON log lines; the report is the indented one.
    start = result.stdout.index('{\n  "ok"')
    document, _ = json.JSONDecoder().raw_decode(result.stdout, start)
    kv = next(check for check in document["checks"] if check["name"] == "kv")
    assert kv["status"] == "ok", kv
    assert [c[0] for c in shim.commands] == ["PING", "SET"]
    assert shim.redis.ttl("prometei:doctor:probe") in range(1, 61)
    assert shim.token not in result.stdout


def test_kv_client_echoes_the_shims_sync_token(shim: KVShim) -> None:
    client = KVClient(shim.url, shim.token)
    client.command("SET", "k", "v")
    issued = call(shim, ["PING"]).headers["Upstash-Sync-Token"]
    assert shim.sync_tokens_seen == []  # the first request had nothing to echo
    assert client.command("GET", "k") == "v"
    assert len(shim.sync_tokens_seen) == 1 and shim.sync_tokens_seen[0] != issued
    assert shim.sync_tokens_seen[0].startswith("sync-")


class _DownShim(KVShim):
    """A store whose database is unreachable (restarting): nothing listens on its port."""

    def backend(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=free_port(), retry=None)


def test_a_restarting_store_is_a_400_loading_error_the_client_retries() -> None:
    from tests.support.loopback import serving

    down = _DownShim()
    with serving(down.app, "kv-down") as url:
        down.url = url
        answer = call(down, ["GET", "k"])
        assert (answer.status_code, answer.json()) == (400, {"error": BACKEND_DOWN_ERROR})
        with pytest.raises(UpstreamUnavailable) as info:
            KVClient(url, down.token).command("GET", "k")
    assert info.value.retryable
    assert "LOADING" in str(info.value)
