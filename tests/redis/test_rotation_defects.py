"""The seven defects of issue 11, each against a real Redis behind the Upstash-REST shim.

Every test here failed on the code before the fix (dd8303a) and passes after it. They only use
what both versions offer (the provider's keyword arguments, the stores, `send`), so the same
file can be run against the old code. Invariants: docs/token-rotation.md.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from prometei.amocrm.oauth import OAuthClient
from prometei.config import settings_from_mapping
from prometei.errors import UpstreamUnavailable
from prometei.store.kv import KVClient, KVTokenStore
from tests.redis.conftest import (
    LOCK_KEY,
    kv_store,
    params,
    seed_expired,
    together,
    wait_until,
)
from tests.support import token_workers
from tests.support.fake_amo_oauth import loopback_session
from tests.support.redis_shim import lock_release, record_write, token_read
from tests.support.token_workers import HOST, OAUTH_ENV, kv_provider, outcome


def test_1_a_short_store_outage_after_a_refresh_never_ends_in_reconnect(shim, amo):
    """The store refuses the first 3 writes of the new pair. Nobody may be told to reconnect
    while that pair exists, and nobody may send the spent refresh token."""
    seed_expired(shim, amo)
    p = params(shim, amo)
    shim.inject("refuse", record_write, times=3)
    instances = [kv_provider(p, wait_timeout_s=20, poll_interval_s=0.05) for _ in range(5)]
    results = together([lambda i=i: outcome(i.access_token) for i in instances])

    assert [kind for kind, _, _ in results] == ["ok"] * 5, results
    assert {token for _, token, _ in results} == {"access-1-SECRET"}
    assert amo.refresh_requests == 1  # the spent token was never sent again
    assert kv_store(shim).read().refresh_token.get_secret_value() == "refresh-1-SECRET"


def test_2_an_answer_later_than_the_lease_gives_no_false_reconnect(shim, amo):
    """amoCRM spends the token at once but answers after the holder's lease would have run
    out: the lease must be kept alive, and the waiting instance must get the new pair."""
    seed_expired(shim, amo)
    amo.answer_delay_s = 3.0
    p = params(shim, amo)
    holder = kv_provider(p, lock_ttl_ms=1500, wait_timeout_s=20, poll_interval_s=0.05)
    waiter = kv_provider(p, lock_ttl_ms=1500, wait_timeout_s=20, poll_interval_s=0.05)

    def wait_then_ask() -> tuple[str, str, float]:
        wait_until(lambda: amo.refresh_requests >= 1)  # the holder's request is at amoCRM
        return outcome(waiter.access_token)

    results = together([lambda: outcome(holder.access_token), wait_then_ask])
    assert [kind for kind, _, _ in results] == ["ok", "ok"], results
    assert {token for _, token, _ in results} == {"access-1-SECRET"}
    assert amo.refresh_requests == 1


def test_3_every_outside_request_has_a_whole_request_deadline(shim, amo):
    """An answer that trickles in a byte at a time never exceeds a socket read timeout, but
    must not exceed the request's deadline (connect + read timeout) either."""
    shim.inject("drip", token_read, seconds=0.25)  # ~25-45 bytes: 6-11 s in all
    store = KVTokenStore(KVClient(shim.url, shim.token), timeout=(1.0, 3.0))
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as info:
        store.read()
    assert time.monotonic() - started < 4.0 + 1.5  # the deadline, not the drip's 6+ s
    assert "deadline" in info.value.message and "will retry" not in info.value.message

    amo.live_refresh.add("refresh-0-SECRET")
    amo.drip_s = 0.05  # ~150 bytes: 7+ s
    settings = settings_from_mapping(OAUTH_ENV)
    oauth = OAuthClient.from_settings(settings, session=loopback_session(HOST, amo.url))
    oauth._timeout = (1.0, 2.0)  # deadline 3 s
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        oauth.refresh("refresh-0-SECRET", HOST)
    assert time.monotonic() - started < 3.0 + 1.5


def test_4_one_failed_release_does_not_block_refreshes_for_a_lease(shim, amo):
    seed_expired(shim, amo)
    p = params(shim, amo)
    shim.inject("refuse", lock_release, times=1)
    first = kv_provider(p, wait_timeout_s=5, poll_interval_s=0.05)
    token = first.access_token()
    assert token == "access-1-SECRET"
    assert shim.redis.exists(LOCK_KEY) == 0  # the release was tried again
    assert ("refuse", "EVAL") in shim.fired

    second = kv_provider(p, wait_timeout_s=5, poll_interval_s=0.05)
    assert second.after_unauthorized(token) == "access-2-SECRET"  # the lock was free


def test_5_threads_of_one_instance_wait_no_longer_than_the_limit(shim, amo):
    """Another instance holds the lock for a long time; four threads of this instance need a
    token. Each gives up after the wait limit, not one limit after the other."""
    seed_expired(shim, amo)
    shim.redis.set(LOCK_KEY, "another-instance", px=60_000)
    provider = kv_provider(params(shim, amo), wait_timeout_s=1.5, poll_interval_s=0.05)
    results = together([lambda: outcome(provider.access_token)] * 4)

    assert [kind for kind, _, _ in results] == ["retryable"] * 4, results
    assert max(seconds for _, _, seconds in results) < 2 * 1.5
    assert amo.refresh_requests == 0


def test_6_a_refused_refresh_token_is_sent_once_not_by_every_caller(shim, amo):
    seed_expired(shim, amo, live=False)  # amoCRM already considers it spent
    p = params(shim, amo)
    instances = [kv_provider(p, wait_timeout_s=20, poll_interval_s=0.05) for _ in range(5)]
    results = together([lambda i=i: outcome(i.access_token) for i in instances])
    later = outcome(kv_provider(p).access_token)  # an instance that starts afterwards

    assert [kind for kind, _, _ in [*results, later]] == ["final"] * 6, results
    assert all("ReconnectRequired" in detail for _, detail, _ in [*results, later])
    assert amo.refresh_requests == 1


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connect there hangs until it times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # the handshake completes in the kernel
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for sock in [*fillers, listener]:
            sock.close()


def test_7_a_connect_timeout_is_reported_as_one(shim, black_hole):
    store = KVTokenStore(KVClient(f"http://127.0.0.1:{black_hole}", shim.token))
    with pytest.raises(UpstreamUnavailable) as info:
        store.read()
    message = info.value.message
    assert f"127.0.0.1:{black_hole}" in message
    assert "connect" in message and "1s" in message and "3s" not in message
    assert "will retry" not in message
    # ...and a store that works answers the same read (the shim over real Redis).
    assert kv_store(shim).read() is None


def test_a_killed_holder_costs_one_lease_not_minutes(shim, amo):
    """Invariant (d): a holder killed mid-refresh (before amoCRM processed its request) blocks
    the others for at most one lease, after which one of them refreshes."""
    seed_expired(shim, amo)
    recovery_s = token_workers.kill_holder_mid_refresh(params(shim, amo), amo, wait_timeout_s=20)
    assert recovery_s < 10  # the recovery target
    assert kv_store(shim).read().access_token.get_secret_value() == "access-1-SECRET"
    assert amo.requests_per_token() == {"refresh-0-SECRET": 2}
