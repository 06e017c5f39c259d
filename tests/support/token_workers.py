"""Process entry points for the cross-process token tests (multiprocessing 'spawn').

Each worker builds its own settings, store, OAuth client and provider, exactly like a separate
Vercel instance would, and talks HTTP to the KV shim and the fake amoCRM token endpoint.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from prometei.amocrm.oauth import OAuthClient
from prometei.config import settings_from_mapping
from prometei.errors import PrometeiError
from prometei.store.base import TokenRecord, TokenStore
from prometei.store.file import FileTokenStore
from prometei.store.kv import KVClient, KVTokenStore
from prometei.tokens import OAuthTokenProvider
from tests.support.fake_amo_oauth import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, loopback_session

HOST = "example.amocrm.ru"
OAUTH_ENV = {
    "AMOCRM_SUBDOMAIN": "example",
    "AMOCRM_CLIENT_ID": CLIENT_ID,
    "AMOCRM_CLIENT_SECRET": CLIENT_SECRET,
    "AMOCRM_REDIRECT_URI": REDIRECT_URI,
}


def build_store(params: dict[str, Any]) -> TokenStore:
    if params["store"] == "kv":
        return KVTokenStore(KVClient(params["kv_url"], params["kv_token"]))
    return FileTokenStore(params["state_dir"])


def build_provider(params: dict[str, Any], store: TokenStore, **kw: Any) -> OAuthTokenProvider:
    settings = settings_from_mapping(OAUTH_ENV)
    oauth = OAuthClient.from_settings(settings, session=loopback_session(HOST, params["amo_url"]))
    kw.setdefault("poll_interval_s", 0.02)
    kw.setdefault("lock_ttl_ms", 10_000)
    kw.setdefault("wait_timeout_s", 20.0)
    return OAuthTokenProvider(settings, lambda: store, oauth, **kw)


def need_token(params: dict[str, Any], barrier: Any, results: Any) -> None:
    """Wait for the others, then ask for a token once; report it (or the error)."""
    try:
        store = build_store(params)
        provider = build_provider(params, store)
        barrier.wait(timeout=30)
        results.put(("ok", os.getpid(), provider.access_token()))
    except BaseException as exc:
        results.put(("error", os.getpid(), f"{type(exc).__name__}: {exc}"))


class _DieBeforeWrite:
    """A store whose write kills the process: amoCRM has answered, nothing is saved."""

    def __init__(self, inner: TokenStore) -> None:
        self._inner = inner
        self.kind = inner.kind

    def describe(self) -> str:
        return self._inner.describe()

    def read(self) -> TokenRecord | None:
        return self._inner.read()

    def read_state(self) -> Any:
        return self._inner.read_state()

    def put_marker(self, name: str, value: str | None, **kw: Any) -> bool:
        return self._inner.put_marker(name, value, **kw)

    def write(self, record: TokenRecord) -> TokenRecord:
        os._exit(17)  # like a Vercel instance killed at its time limit

    def write_if_version(self, record: TokenRecord, expected_version: int) -> TokenRecord | None:
        os._exit(17)

    def acquire_lock(self, ttl_ms: int, owner: str | None = None) -> str | None:
        return self._inner.acquire_lock(ttl_ms, owner)

    def renew_lock(self, owner: str, ttl_ms: int) -> bool:
        return self._inner.renew_lock(owner, ttl_ms)

    def release_lock(self, owner: str) -> bool:
        return self._inner.release_lock(owner)


def refresh_then_die(params: dict[str, Any]) -> None:
    store = _DieBeforeWrite(build_store(params))
    provider = build_provider(params, store, lock_ttl_ms=params["lock_ttl_ms"])
    provider.access_token()  # never returns


def hold_file_lock(state_dir: str, ttl_ms: int, results: Any, release: Any) -> None:
    """Take the file store's refresh lease, report, wait to be told, release it."""
    store = FileTokenStore(state_dir)
    owner = store.acquire_lock(ttl_ms)
    results.put(owner is not None)
    release.wait(timeout=30)
    results.put(store.release_lock(owner) if owner else False)


def take_file_lock_and_die(state_dir: str, ttl_ms: int) -> None:
    store = FileTokenStore(state_dir)
    if store.acquire_lock(ttl_ms) is None:
        os._exit(3)
    os._exit(0)


def kv_provider(params: dict[str, Any], **kw: Any) -> OAuthTokenProvider:
    """An instance with production lease settings unless `kw` says otherwise (only keyword
    arguments every provider version takes, so old code can be tested the same way)."""
    settings = settings_from_mapping(OAUTH_ENV)
    oauth = OAuthClient.from_settings(settings, session=loopback_session(HOST, params["amo_url"]))
    store = KVTokenStore(KVClient(params["kv_url"], params["kv_token"]))
    return OAuthTokenProvider(settings, lambda: store, oauth, **kw)


def outcome(call: Any) -> tuple[str, str, float]:
    """(kind, token or error, seconds) of one call; kind is ok, retryable or final."""
    started = time.monotonic()
    try:
        value = call()
    except PrometeiError as exc:
        kind = "retryable" if exc.retryable else "final"
        return kind, f"{type(exc).__name__}: {exc.message}", time.monotonic() - started
    return "ok", str(value), time.monotonic() - started


def rotate_in_rounds(params: dict[str, Any], barrier: Any, results: Any) -> None:
    """One instance with `threads` threads. Every round all threads (of all instances) meet at
    `barrier` three times: the previous round is over (the test injects a fault), go: get a
    token, then all report that token to amoCRM as rejected (a 401): exactly one of them
    should refresh. Reports (pid, round, what, kind, detail, seconds) per call."""
    provider = kv_provider(params, **params.get("provider", {}))
    pid = os.getpid()

    def thread_main() -> None:
        for round_no in range(params["rounds"]):
            try:
                barrier.wait(timeout=300)  # the previous round is over
                barrier.wait(timeout=300)  # go
                kind, token, seconds = outcome(provider.access_token)
                results.put((pid, round_no, "access", kind, token, seconds))
                barrier.wait(timeout=300)  # everyone holds this round's token
            except threading.BrokenBarrierError:
                results.put((pid, round_no, "barrier", "final", "broken barrier", 0.0))
                return
            if kind == "ok":
                kind, detail, seconds = outcome(lambda t=token: provider.after_unauthorized(t))
                results.put((pid, round_no, "after401", kind, detail, seconds))

    threads = [threading.Thread(target=thread_main) for _ in range(params["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def need_token_once(params: dict[str, Any], results: Any) -> None:
    """A fresh instance asks for a token once and reports the outcome (for a holder that the
    test kills, the report never comes)."""
    provider = kv_provider(params, **params.get("provider", {}))
    results.put((os.getpid(), *outcome(provider.access_token)))


def rotate_fleet(
    params: dict[str, Any], processes: int, before_round: Any = None
) -> list[tuple[int, int, str, str, str, float]]:
    """Run `rotate_in_rounds` in `processes` spawned processes; the caller is one more party
    at every round's barrier and runs `before_round(round_no)` first (to inject a fault).
    Returns every call's report."""
    import multiprocessing
    import queue

    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(processes * params["threads"] + 1)
    results = spawn.Queue()
    procs = [
        spawn.Process(target=rotate_in_rounds, args=(params, barrier, results), daemon=True)
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    out: list[tuple[int, int, str, str, str, float]] = []
    done = threading.Event()

    def drain() -> None:  # a child cannot exit while its queued results are unread
        while not done.is_set() or not results.empty():
            try:
                out.append(results.get(timeout=0.2))
            except queue.Empty:
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        for round_no in range(params["rounds"]):
            barrier.wait(timeout=300)  # the previous round is over
            if before_round is not None:
                before_round(round_no)
            barrier.wait(timeout=300)  # go
            barrier.wait(timeout=300)  # everyone holds this round's token
        for proc in procs:
            proc.join(timeout=300)
            if proc.exitcode != 0:
                raise RuntimeError(f"a fleet process exited with {proc.exitcode}")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        done.set()
        reader.join(timeout=30)
    return out


def seed_expired_pair(store: TokenStore, fake: Any, *, live: bool = True) -> TokenRecord:
    """Store a pair whose access token expired a minute ago; its refresh token is live at the
    fake amoCRM unless `live=False` (then amoCRM has already spent it)."""
    from pydantic import SecretStr

    now = int(time.time())
    if live:
        fake.live_refresh.add("refresh-0-SECRET")
    return store.write(
        TokenRecord(
            access_token=SecretStr("access-0-SECRET"),
            refresh_token=SecretStr("refresh-0-SECRET"),
            expires_at=now - 60,
            obtained_at=now - 86_460,
            host=HOST,
        )
    )


def kill_holder_mid_refresh(params: dict[str, Any], fake: Any, **provider: Any) -> float:
    """A holder process sends the refresh, amoCRM stalls it, the holder is killed (SIGKILL) and
    amoCRM drops its request unprocessed. Returns the seconds from the kill until a new
    instance holds a token (that token is checked by the caller via the fake)."""
    import multiprocessing
    import signal

    spawn = multiprocessing.get_context("spawn")
    fake.stall = True
    results = spawn.Queue()
    holder = spawn.Process(target=need_token_once, args=(params, results), daemon=True)
    holder.start()
    deadline = time.monotonic() + 60
    while fake.stalled < 1:  # until the holder's request is at amoCRM, unprocessed
        if time.monotonic() > deadline:
            raise RuntimeError("the holder's refresh never reached the fake amoCRM")
        time.sleep(0.01)
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    killed = time.monotonic()
    holder.join(timeout=30)
    fake.cancel_stalled()
    kv_provider(params, **provider).access_token()
    return time.monotonic() - killed
