"""Contention on the amoCRM token, against a real Redis (Debian redis-server).

Everything talks HTTP on loopback: the Upstash-REST shim over a real `redis-server`
(tests/support/redis_shim.py) and a fake amoCRM token endpoint whose refresh tokens are
single-use (a second refresh with a spent token gets amoCRM's 401 "Token has been revoked"),
with 50 ms of server latency. Providers use the production settings (lease 8 s renewed every
2.7 s, poll every 0.25 s, wait limit 40 s).

- Rotations: PROCESSES OS processes x THREADS threads, one provider per process (an
  "instance"). Each round every caller gets a token, then reports it to amoCRM as rejected
  (a 401), so exactly one refresh is due per round. Figures: refresh requests per rotation
  (target 1), and every caller's wait (its `after_unauthorized` call) as p50/p99.
- Reference in the same run: the same rounds with every caller refreshing on its own (the
  TypeScript flow), counting the refusals amoCRM answers.
- Recovery after a killed holder: a holder process sends the refresh, amoCRM stalls, the
  holder is killed (SIGKILL) and amoCRM drops the request unprocessed; time from the kill to
  another instance's new token (target < 10 s).
- Recovery after a failed release: every release attempt of the holder is refused, so its
  lock stays behind; time from the holder's return to another instance's next rotation
  (target < 10 s).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench import Section, Table, median, percentile, verdict

PROCESSES = 10
THREADS = 5
SERVER_DELAY_S = 0.05
TARGET_RECOVERY_S = 10.0


def _seed(shim: Any, amo: Any) -> None:
    from prometei.store.kv import KVClient, KVTokenStore
    from tests.support.token_workers import seed_expired_pair

    seed_expired_pair(KVTokenStore(KVClient(shim.url, shim.token)), amo)


def _params(shim: Any, amo: Any, **extra: Any) -> dict[str, Any]:
    return {"kv_url": shim.url, "kv_token": shim.token, "amo_url": amo.url, **extra}


def rotations(backend: Any, rounds: int) -> dict[str, float]:
    from tests.support import token_workers
    from tests.support.fake_amo_oauth import running_fake_amo
    from tests.support.redis_shim import running_redis_shim

    backend.client().flushall()
    with running_redis_shim(backend) as shim, running_fake_amo(delay_s=SERVER_DELAY_S) as amo:
        _seed(shim, amo)
        p = _params(shim, amo, rounds=rounds, threads=THREADS)
        out = token_workers.rotate_fleet(p, PROCESSES)
        waits = sorted(r[5] for r in out if r[2] == "after401" and r[3] == "ok")
        failed = sum(1 for r in out if r[3] != "ok")
        return {
            "rotations": len(amo.issued),
            "requests": amo.refresh_requests,
            "p50": percentile(waits, 50),
            "p99": percentile(waits, 99),
            "failed": failed,
            "calls": len(out),
        }


def naive_rounds(rounds: int) -> dict[str, float]:
    """Reference: each caller refreshes with the refresh token it last saw (no store)."""
    from prometei.amocrm.oauth import OAuthClient
    from prometei.config import settings_from_mapping
    from prometei.errors import PrometeiError
    from tests.support.fake_amo_oauth import running_fake_amo
    from tests.support.token_workers import HOST, OAUTH_ENV, loopback_session

    callers = PROCESSES * THREADS
    with running_fake_amo(delay_s=SERVER_DELAY_S) as amo:
        amo.live_refresh.add("refresh-0-SECRET")
        settings = settings_from_mapping(OAUTH_ENV)
        known = ["refresh-0-SECRET"]
        refused = [0]
        lock = threading.Lock()
        for _ in range(rounds):
            barrier = threading.Barrier(callers)

            def call(token: str = known[-1], barrier: threading.Barrier = barrier) -> None:
                client = OAuthClient.from_settings(
                    settings, session=loopback_session(HOST, amo.url)
                )
                barrier.wait()
                try:
                    new = client.refresh(token, HOST)
                except PrometeiError:
                    with lock:
                        refused[0] += 1
                    return
                with lock:
                    known.append(new.refresh_token.get_secret_value())

            threads = [threading.Thread(target=call) for _ in range(callers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return {"requests": amo.refresh_requests, "refused": refused[0]}


def killed_holder(backend: Any) -> float:
    from tests.support import token_workers
    from tests.support.fake_amo_oauth import running_fake_amo
    from tests.support.redis_shim import running_redis_shim

    backend.client().flushall()
    with running_redis_shim(backend) as shim, running_fake_amo(delay_s=SERVER_DELAY_S) as amo:
        _seed(shim, amo)
        return token_workers.kill_holder_mid_refresh(_params(shim, amo), amo)


def failed_release(backend: Any) -> float:
    from tests.support import token_workers
    from tests.support.fake_amo_oauth import running_fake_amo
    from tests.support.redis_shim import lock_release, running_redis_shim

    backend.client().flushall()
    with running_redis_shim(backend) as shim, running_fake_amo(delay_s=SERVER_DELAY_S) as amo:
        _seed(shim, amo)
        p = _params(shim, amo)
        shim.inject("refuse", lock_release, times=10)  # every release attempt fails
        token = token_workers.kv_provider(p).access_token()
        returned = time.monotonic()
        shim.clear_faults()
        token_workers.kv_provider(p).after_unauthorized(token)
        return time.monotonic() - returned


def run(quick: bool = False) -> Section:
    import logging

    from tests.support.redis_server import INSTALL_HINT, RedisServer, redis_env_ok

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("prometei").setLevel(logging.CRITICAL)
    started = time.perf_counter()
    section = Section(
        key="contention", title="4. Contention on the token (real Redis)", method=__doc__ or ""
    )
    if not redis_env_ok():
        section.notes.append(f"Not measured: {INSTALL_HINT}.")
        return section
    repeats = 1 if quick else 3
    rounds = 5 if quick else 10
    backend = RedisServer().start()
    try:
        fleet = [rotations(backend, rounds) for _ in range(repeats)]
        naive = naive_rounds(rounds)
        kills = [killed_holder(backend) for _ in range(repeats)]
        releases = [failed_release(backend) for _ in range(repeats)]
    finally:
        backend.cleanup()

    callers = PROCESSES * THREADS
    table = Table(
        [
            "scenario",
            "refresh requests per rotation",
            "target 1",
            "refused by amoCRM",
            "callers failed",
            "waiter p50 ms",
            "waiter p99 ms",
        ],
        caption=(
            f"{PROCESSES} processes x {THREADS} threads, {rounds} rotations per run, "
            f"token endpoint latency {SERVER_DELAY_S * 1000:.0f} ms; median of "
            f"{repeats} run(s)"
        ),
    )
    per_rotation = median(f["requests"] / max(f["rotations"], 1) for f in fleet)
    table.add(
        "prometei: one store, single-flight",
        f"{per_rotation:.2f}",
        verdict(per_rotation == 1),
        int(median(f["requests"] - f["rotations"] for f in fleet)),
        int(median(f["failed"] for f in fleet)),
        median(f["p50"] for f in fleet) * 1000,
        median(f["p99"] for f in fleet) * 1000,
    )
    table.add(
        "reference: every caller refreshes (TypeScript flow)",
        f"{naive['requests'] / rounds:.2f}",
        "-",
        int(naive["refused"]),
        "-",
        "-",
        "-",
    )
    recovery = Table(
        ["lost holder", "recovery s (median)", "worst s", f"target < {TARGET_RECOVERY_S:g} s"],
        caption=f"time until another instance has a new token; {repeats} run(s)",
    )
    for label, values in (
        ("killed mid-refresh (SIGKILL)", kills),
        ("every release attempt refused", releases),
    ):
        recovery.add(label, median(values), max(values), verdict(max(values) < TARGET_RECOVERY_S))
    section.tables = [table, recovery]
    section.notes = [
        f"{callers} callers per round; a waiter's time is its `after_unauthorized` call, from "
        "the common start of the round to the new token. Refused requests in the reference "
        "are callers presenting an already spent refresh token.",
        "Recovery is bounded by the lease (8 s): nobody renews a dead holder's lease, and a "
        "lock whose release failed ends by itself when its lease does.",
        "Waiters poll the store every 0.25 s (the production setting), so a waiter's time is "
        "the refresh plus one or two poll intervals.",
    ]
    section.seconds = time.perf_counter() - started
    return section


if __name__ == "__main__":
    print(run(quick=True).text())
