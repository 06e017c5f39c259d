"""One amoCRM request budget for the whole integration: a fixed split of amoCRM's 7/s.

amoCRM allows 7 requests per second per integration, whoever sends them (reference
amocrm.md §4.1). Three kinds of callers share it, each with its own share (`Settings`):

    lane        who                                          share (default)
    runs        amocrm-webhook-handler runs: webhooks,       AMOCRM_BUDGET_RUNS (5)
                replay, the events backfill and reconcile
                send (lead, contact, company, write-backs)
    backfill    `python -m prometei backfill`'s listing      AMOCRM_BUDGET_BACKFILL (1)
    reconcile   the amocrm-reconcile cron (listing, webhook  AMOCRM_BUDGET_RECONCILE (1)
                check) and the operator's one-off commands
                (doctor, webhook register/status)

The shares add up to at most 7 (checked when the settings load). Each lane is enforced twice:
- in every process, by a `SlidingWindowLimiter` of the lane's share (exact as amoCRM counts,
  see `prometei.amocrm.ratelimit`), all sharing the process's one 429 `Brake`;
- across processes for the runs lane, by the handler's Inngest throttle: at most
  `share // requests_per_run` runs start per second, so a run that makes two requests (a
  contact read, a write-back note) counts as two.
The reconcile function runs with concurrency 1 and a backfill is meant to run alone, so a
listing lane's limiter is its whole share. Not covered (README "amoCRM's rate limit"): two
backfills at once; doctor and `webhook register/status` (reconcile lane, own process) during a
reconcile run; token refreshes; the failure-note handler's notes (they pass the runs limiter of
their instance, not the throttle); steps and retries across instances (the throttle bounds run
starts only).

Why a fixed split and not a token bucket in the store: a shared bucket would cost one or two
KV round-trips on every amoCRM request (and tie every amoCRM call to KV being up); the split
costs nothing per request. What it gives up is lending: a share that sits idle (the backfill
lane on most days) is not used by the others.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Literal

from prometei.amocrm.ratelimit import Brake, SlidingWindowLimiter

if TYPE_CHECKING:
    from prometei.config import Settings

Lane = Literal["runs", "backfill", "reconcile"]
LANES: tuple[Lane, ...] = ("runs", "backfill", "reconcile")

_lock = threading.Lock()
_brake = Brake()
_limiters: dict[Lane, SlidingWindowLimiter] = {}


def share(settings: Settings, lane: Lane) -> int:
    """Requests per second `lane` may make (its AMOCRM_BUDGET_* value)."""
    return {
        "runs": settings.amocrm_budget_runs,
        "backfill": settings.amocrm_budget_backfill,
        "reconcile": settings.amocrm_budget_reconcile,
    }[lane]


def limiter_for(settings: Settings, lane: Lane) -> SlidingWindowLimiter:
    """This process's limiter for `lane` (one per lane and process, shared by every client of
    the lane, so two clients in one process never add up to more than the share)."""
    limit = share(settings, lane)
    with _lock:
        current = _limiters.get(lane)
        if current is None or current.limit != limit:
            current = SlidingWindowLimiter(limit, brake=_brake, name=f"amocrm-{lane}")
            _limiters[lane] = current
        return current


def process_brake() -> Brake:
    return _brake


def runs_per_second(settings: Settings, requests_per_run: int) -> int:
    """How many handler runs may start per second so the runs lane holds: a run making
    `requests_per_run` amoCRM requests counts that many times (at least one run per second)."""
    return max(1, settings.amocrm_budget_runs // max(1, requests_per_run))


def describe(settings: Settings) -> str:
    """`runs 5 + backfill 1 + reconcile 1 = 7 of 7 requests/s`, for doctor and the CLI."""
    from prometei.config import AMOCRM_RATE_LIMIT

    parts = [f"{lane} {share(settings, lane)}" for lane in LANES]
    total = sum(share(settings, lane) for lane in LANES)
    return f"{' + '.join(parts)} = {total} of {AMOCRM_RATE_LIMIT} requests/s"


def reset_for_tests() -> None:
    """Forget the process's limiters and brake (tests that change the shares or the clock)."""
    global _brake
    with _lock:
        _limiters.clear()
        _brake = Brake()
