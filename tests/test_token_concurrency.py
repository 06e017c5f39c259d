"""Single-flight refresh under real contention: threads and processes, KV shim and file store.

Everything runs over real loopback HTTP: the KV shim (Upstash protocol over fakeredis with Lua)
and a fake amoCRM token endpoint that rotates refresh tokens single-use, so a second refresh
with the same token would show up as a second request and a "Token has been revoked" 401.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from prometei.errors import ReconnectRequired, UpstreamUnavailable
from prometei.store.base import TokenRecord, TokenStore
from prometei.store.file import FileTokenStore
from prometei.store.kv import KVClient, KVTokenStore
from tests.support import token_workers
from tests.support.fake_amo_oauth import FakeAmoOAuth, running_fake_amo
from tests.support.kvshim import KVShim, running_shim

HOST = token_workers.HOST
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def kv_shim() -> Iterator[KVShim]:
    with running_shim() as shim:
        yield shim


@pytest.fixture
def fake_amo() -> Iterator[FakeAmoOAuth]:
    # 150 ms of server latency keeps the lock held while every other caller piles up.
    with running_fake_amo(delay_s=0.15) as fake:
        yield fake


def seed_expired(store: TokenStore, fake: FakeAmoOAuth) -> TokenRecord:
    """Store a pair whose access token expired a minute ago; its refresh token is live."""
    return token_workers.seed_expired_pair(store, fake)


def kv_params(shim: KVShim, fake: FakeAmoOAuth) -> dict[str, Any]:
    return {"store": "kv", "kv_url": shim.url, "kv_token": shim.token, "amo_url": fake.url}


def kv_store(shim: KVShim) -> KVTokenStore:
    return KVTokenStore(KVClient(shim.url, shim.token))


def assert_one_rotation(fake: FakeAmoOAuth, store: TokenStore, tokens: list[str]) -> None:
    assert fake.refresh_requests == 1, fake.requests
    assert fake.issued == [("access-1-SECRET", "refresh-1-SECRET")]
    assert set(tokens) == {"access-1-SECRET"}
    stored = store.read()
    assert stored is not None
    assert stored.refresh_token.get_secret_value() == "refresh-1-SECRET"
    assert stored.version == 2  # the seed write, then exactly one refresh write


def test_20_threads_each_with_its_own_provider_refresh_once(kv_shim, fake_amo, caplog, capsys):
    """20 'instances' (own provider, own KV client) need a token at once: one refresh."""
    caplog.set_level(logging.DEBUG)
    seed_expired(kv_store(kv_shim), fake_amo)
    params = kv_params(kv_shim, fake_amo)
    barrier = threading.Barrier(20)

    def instance(_: int) -> str:
        store = kv_store(kv_shim)
        provider = token_workers.build_provider(params, store)
        barrier.wait(timeout=10)
        return provider.access_token()

    with ThreadPoolExecutor(max_workers=20) as pool:
        tokens = list(pool.map(instance, range(20)))

    assert len(tokens) == 20
    assert_one_rotation(fake_amo, kv_store(kv_shim), tokens)
    set_nx = [c for c in kv_shim.commands if c[0] == "SET" and "NX" in c]
    assert len(set_nx) >= 2, "losers must have tried the lock, not skipped it"
    assert kv_shim.redis.exists("prometei:amocrm:refresh-lock") == 0  # released
    out = capsys.readouterr()
    logged = caplog.text + out.out + out.err
    assert "token pair refreshed" in logged
    assert [s for s in [*fake_amo.secrets(), kv_shim.token] if s in logged] == []


def test_24_threads_sharing_one_provider_refresh_once(kv_shim, fake_amo):
    seed_expired(kv_store(kv_shim), fake_amo)
    provider = token_workers.build_provider(kv_params(kv_shim, fake_amo), kv_store(kv_shim))
    barrier = threading.Barrier(24)

    def caller(_: int) -> str:
        barrier.wait(timeout=10)
        return provider.access_token()

    with ThreadPoolExecutor(max_workers=24) as pool:
        tokens = list(pool.map(caller, range(24)))
    assert_one_rotation(fake_amo, kv_store(kv_shim), tokens)


def _run_processes(params: dict[str, Any], count: int) -> list[tuple[str, int, str]]:
    barrier = SPAWN.Barrier(count)
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=token_workers.need_token, args=(params, barrier, results))
        for _ in range(count)
    ]
    for proc in procs:
        proc.start()
    out = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return out


def test_three_processes_on_kv_refresh_once(kv_shim, fake_amo):
    seed_expired(kv_store(kv_shim), fake_amo)
    out = _run_processes(kv_params(kv_shim, fake_amo), 3)
    assert [status for status, _, _ in out] == ["ok"] * 3, out
    assert len({pid for _, pid, _ in out}) == 3
    assert_one_rotation(fake_amo, kv_store(kv_shim), [token for _, _, token in out])


def test_three_processes_on_the_file_store_refresh_once(tmp_path: Path, fake_amo):
    state_dir = tmp_path / "shared-state"
    seed_expired(FileTokenStore(state_dir), fake_amo)
    params = {"store": "file", "state_dir": str(state_dir), "amo_url": fake_amo.url}
    out = _run_processes(params, 3)
    assert [status for status, _, _ in out] == ["ok"] * 3, out
    assert_one_rotation(fake_amo, FileTokenStore(state_dir), [token for _, _, token in out])


def test_crash_after_amocrm_answered_before_the_store_write(kv_shim, fake_amo):
    """The known hazard (docs/token-rotation.md): the rotated pair dies with the process.

    What happens: amoCRM has spent refresh-0 and issued refresh-1; the store still holds
    refresh-0 and the dead holder's lease blocks everyone until it runs out. The next refresher
    probes once and gets "Token has been revoked"; the refusal is stored, and it becomes final
    (ReconnectRequired, nothing sent again) once the dead holder's write window is over. After
    the reconnect (a code exchange stored via store_exchanged) all is well.
    """
    store = kv_store(kv_shim)
    seed_expired(store, fake_amo)
    params = {**kv_params(kv_shim, fake_amo), "lock_ttl_ms": 1500}
    victim = SPAWN.Process(target=token_workers.refresh_then_die, args=(params,))
    victim.start()
    victim.join(timeout=60)

    assert victim.exitcode == 17  # died inside write(), after amoCRM answered
    assert fake_amo.refresh_requests == 1
    assert fake_amo.live_refresh == {"refresh-1-SECRET"}  # only the lost pair is alive
    stored = store.read()
    assert stored is not None and stored.refresh_token.get_secret_value() == "refresh-0-SECRET"
    assert kv_shim.redis.pttl("prometei:amocrm:refresh-lock") > 0  # the dead holder's lease

    survivor = token_workers.build_provider(params, store, wait_timeout_s=3)
    with pytest.raises(UpstreamUnavailable, match="may still store") as info:
        survivor.access_token()  # waits out the lease, probes once: "revoked"
    assert info.value.retryable  # the dead holder's write window is not over yet
    assert fake_amo.refresh_requests == 2
    assert kv_shim.redis.exists("prometei:amocrm:refresh-lock") == 0

    later = token_workers.build_provider(params, store, clock=lambda: time.time() + 600)
    with pytest.raises(ReconnectRequired) as info:
        later.access_token()  # every window is over: final, and nothing is sent again
    assert "/api/oauth/callback" in str(info.value) and "Connect amoCRM" in str(info.value)
    assert fake_amo.refresh_requests == 2

    # Recovery: the operator reconnects; the callback stores the new pair.
    now = int(time.time())
    fake_amo.live_refresh.add("refresh-new-SECRET")
    survivor.store_exchanged(
        TokenRecord(
            access_token=SecretStr("access-new-SECRET"),
            refresh_token=SecretStr("refresh-new-SECRET"),
            expires_at=now + 86_400,
            obtained_at=now,
            host=HOST,
        )
    )
    assert survivor.access_token() == "access-new-SECRET"


def test_file_lock_left_by_a_dead_process_expires(tmp_path: Path):
    state_dir = str(tmp_path / "s")
    dead = SPAWN.Process(target=token_workers.take_file_lock_and_die, args=(state_dir, 60_000))
    dead.start()
    dead.join(timeout=60)
    assert dead.exitcode == 0  # it held the lease when it died

    assert FileTokenStore(state_dir).acquire_lock(1000) is None  # still leased
    later = FileTokenStore(state_dir, clock=lambda: time.time() + 61)
    assert later.acquire_lock(1000) is not None  # the lease ran out: taken over


def test_on_kv_a_holder_whose_lease_ran_out_neither_overwrites_nor_unlocks_the_next(
    kv_shim, fake_amo
):
    """Over real Upstash REST + Lua: A's lease runs out between amoCRM's answer and A's write;
    B takes the lock and stores a newer pair (a reconnect). A's compare-version write loses,
    A uses B's pair, and A's compare-and-delete leaves B's lock alone."""
    seed_expired(kv_store(kv_shim), fake_amo)
    other = kv_store(kv_shim)
    now = int(time.time())
    newer = TokenRecord(
        access_token=SecretStr("access-newer-SECRET"),
        refresh_token=SecretStr("refresh-newer-SECRET"),
        expires_at=now + 86_400,
        obtained_at=now,
        host=HOST,
    )
    owners: list[str | None] = []

    class LateWriter(KVTokenStore):
        def write_if_version(self, record: TokenRecord, expected_version: int):
            if not owners:
                kv_shim.redis.delete(self.lock_key)  # A's lease expired meanwhile
                owners.append(other.acquire_lock(60_000))
                other.write(newer)
            return super().write_if_version(record, expected_version)

    store = LateWriter(KVClient(kv_shim.url, kv_shim.token))
    provider = token_workers.build_provider(kv_params(kv_shim, fake_amo), store)
    assert provider.access_token() == "access-newer-SECRET"
    assert fake_amo.refresh_requests == 1
    stored = kv_store(kv_shim).read()
    assert stored.refresh_token.get_secret_value() == "refresh-newer-SECRET"
    assert stored.version == 2
    assert owners[0] is not None
    assert kv_shim.redis.get(store.lock_key) == owners[0]  # B still holds its lock
