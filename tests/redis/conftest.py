"""The Redis tier: the token store over a real Debian `redis-server`, behind the Upstash-REST
shim (`tests.support.redis_shim`), against the fake amoCRM token endpoint with single-use
refresh tokens. `make redis` installs redis-server when missing and runs this folder."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from prometei.store.base import TokenRecord
from prometei.store.kv import KVClient, KVTokenStore
from tests.support.fake_amo_oauth import FakeAmoOAuth, running_fake_amo
from tests.support.redis_server import RedisServer
from tests.support.redis_shim import RedisRestShim, running_redis_shim
from tests.support.token_workers import seed_expired_pair

SPAWN = multiprocessing.get_context("spawn")
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
LOCK_KEY = "prometei:amocrm:refresh-lock"


@pytest.fixture(scope="session")
def redis_backend() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def shim(redis_backend: RedisServer) -> Iterator[RedisRestShim]:
    redis_backend.client().flushall()
    with running_redis_shim(redis_backend) as running:
        yield running


@pytest.fixture
def amo() -> Iterator[FakeAmoOAuth]:
    with running_fake_amo(delay_s=0.05) as fake:
        yield fake


def kv_store(shim: RedisRestShim) -> KVTokenStore:
    return KVTokenStore(KVClient(shim.url, shim.token))


def params(shim: RedisRestShim, amo: FakeAmoOAuth, **extra: Any) -> dict[str, Any]:
    return {"kv_url": shim.url, "kv_token": shim.token, "amo_url": amo.url, **extra}


def seed_expired(shim: RedisRestShim, amo: FakeAmoOAuth, *, live: bool = True) -> TokenRecord:
    """Store a pair whose access token expired; its refresh token is live unless `live=False`
    (then amoCRM has already spent it)."""
    return seed_expired_pair(kv_store(shim), amo, live=live)


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll `condition` until it holds; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(0.01)


def together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call on its own thread, released at once; results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results
