"""The invariants of docs/token-rotation.md under load: 20 OS processes x 5 threads, one KV
store (real Redis behind the Upstash-REST shim), single-use refresh tokens, faults injected.

Every round, all 100 callers get a token and then report it to amoCRM as rejected (a 401), so
exactly one refresh is due per round. Before each round the test (one more party at the
barrier) injects that round's fault.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.redis.conftest import kv_store, params, seed_expired
from tests.support import token_workers
from tests.support.fake_amo_oauth import FakeAmoOAuth
from tests.support.redis_server import RedisServer
from tests.support.redis_shim import RedisRestShim, any_command, lock_release, record_write

PROCESSES = 20
THREADS = 5
WAIT_LIMIT_S = 20.0


def _restart_soon(backend: RedisServer) -> None:
    threading.Timer(0.1, backend.restart).start()


def faults(
    shim: RedisRestShim, amo: FakeAmoOAuth, backend: RedisServer
) -> list[Callable[[], None]]:
    def marker_put(command: list[Any]) -> bool:
        return command[0] == "EVAL" and "rotation" in command

    return [
        lambda: None,
        lambda: shim.inject("refuse", record_write, times=3),  # defect 1
        lambda: setattr(amo, "answer_delay_s", 2.0),  # defect 2 (spent, answered late)
        lambda: shim.inject("drop", record_write),  # the write landed, its answer did not
        lambda: shim.inject("refuse", lock_release),  # defect 4
        lambda: shim.inject("delay", any_command, times=30, seconds=0.5),
        lambda: setattr(amo, "fail_500", 1),
        lambda: _restart_soon(backend),
        lambda: setattr(amo, "drip_s", 0.005),  # a slow answer, inside the deadline
        lambda: shim.inject("drop", marker_put),
    ]


def run_rounds(
    shim: RedisRestShim,
    amo: FakeAmoOAuth,
    rounds: int,
    before_round: Callable[[int], None],
) -> list[tuple[int, int, str, str, str, float]]:
    provider = {"wait_timeout_s": WAIT_LIMIT_S, "poll_interval_s": 0.1}
    p = params(shim, amo, rounds=rounds, threads=THREADS, provider=provider)
    return token_workers.rotate_fleet(p, PROCESSES, before_round)


def test_twenty_processes_keep_every_invariant_under_faults(shim, amo, redis_backend):
    seed_expired(shim, amo)
    schedule = faults(shim, amo, redis_backend)

    def before_round(round_no: int) -> None:
        amo.answer_delay_s = amo.drip_s = 0.0
        shim.clear_faults()
        schedule[round_no % len(schedule)]()

    rounds = 2 * len(schedule)
    out = run_rounds(shim, amo, rounds, before_round)
    amo.answer_delay_s = amo.drip_s = 0.0

    assert len(out) >= rounds * PROCESSES * THREADS  # every access call reported
    kinds = Counter(kind for *_, kind, _, _ in out)
    finals = [r for r in out if r[3] == "final"]
    # (a) nobody is ever told to reconnect: a live pair always existed
    assert finals == [], finals[:5]
    # (b) every refresh token reached amoCRM's rotation once: no refusal to rediscover, no
    # double spend (a 500 leaves the token unspent, so it is sent again)
    per_token = amo.processed_per_token()
    assert max(per_token.values()) == 1, per_token
    assert "refresh-0-SECRET" in per_token
    assert amo.refresh_requests <= len(per_token) + 2  # + the two rounds with a 500
    # one rotation per round (plus the first: the seeded token had expired), at most
    assert len(amo.issued) <= rounds + 1
    # (d) every call ended within the wait limit plus one holder's bounded work
    slowest = max(seconds for *_, seconds in out)
    assert slowest < WAIT_LIMIT_S + 30, slowest
    # (e) no pair was lost: the store holds the one live refresh token
    stored = kv_store(shim).read()
    assert amo.live_refresh == {stored.refresh_token.get_secret_value()}
    # and the fleet mostly just worked: retryable errors only where a fault hit
    assert kinds["ok"] >= 0.9 * sum(kinds.values()), kinds
    print(
        f"\n{rounds} rounds x {PROCESSES * THREADS} callers: {dict(kinds)}; "
        f"{len(amo.issued)} rotations, {amo.refresh_requests} refresh requests, "
        f"slowest call {slowest:.2f}s"
    )


def test_twenty_processes_after_a_lost_answer_reconnect_only_when_nothing_is_left(shim, amo):
    """amoCRM rotates but the answer never arrives (the pair exists only at amoCRM). The token
    is probed once more, the refusal is shared, and only then does anyone hear "reconnect"."""
    seed_expired(shim, amo)

    def before_round(round_no: int) -> None:
        if round_no == 1:
            amo.lose_after_spend = 1

    out = run_rounds(shim, amo, 3, before_round)
    first_round = [r for r in out if r[1] == 0]
    assert {r[3] for r in first_round} == {"ok"}
    lost_token = amo.requests[-1]["refresh_token"]
    assert len(amo.lost_pairs) == 1
    assert amo.processed_per_token()[lost_token] == 2  # the lost request and one probe
    finals = [r for r in out if r[3] == "final"]
    assert finals and all("ReconnectRequired" in r[4] for r in finals)
    assert all(r[1] >= 1 for r in finals)  # never before the pair was lost
    assert amo.refresh_requests == len(amo.issued) + 1  # the probe is the only refusal
