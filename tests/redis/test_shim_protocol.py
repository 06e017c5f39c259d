"""The real-Redis shim (tests/support/redis_shim.py) answers the reference's documented Upstash
REST examples exactly like the in-process fake (the contract in tests/support/upstash_contract),
and a command sent while redis-server restarts gets an answer the KV client retries."""

from __future__ import annotations

import pytest

from prometei.errors import UpstreamUnavailable
from prometei.store.kv import KVClient
from tests.support.redis_server import RedisServer
from tests.support.redis_shim import RedisRestShim, running_redis_shim
from tests.support.upstash_contract import UpstashContract, call
from tests.support.upstash_rest import BACKEND_DOWN_ERROR


class TestRedisRestShim(UpstashContract):
    """Every documented example, over a real redis-server (the `shim` fixture of conftest)."""


def test_while_redis_is_down_commands_get_a_retryable_loading_error(
    shim: RedisRestShim,
) -> None:
    stopped = RedisServer()  # never started: nothing listens on its port
    try:
        with running_redis_shim(stopped) as down:
            answer = call(down, ["GET", "k"])
            assert (answer.status_code, answer.json()) == (400, {"error": BACKEND_DOWN_ERROR})
            with pytest.raises(UpstreamUnavailable) as info:
                KVClient(down.url, down.token).command("GET", "k")
        assert info.value.retryable
    finally:
        stopped.cleanup()
    assert call(shim, ["PING"]).json() == {"result": "PONG"}  # the live one is unaffected
