"""RateLimiter on a fake clock: spacing, the 1-second window bound, no real sleeps."""

from __future__ import annotations

import itertools
import threading

import pytest

from prometei.amocrm.ratelimit import DEFAULT_RATE, RateLimiter

EPS = 1e-9


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def max_in_window(stamps: list[float], width: float = 1.0) -> int:
    """Most timestamps inside any half-open window [t, t + width)."""
    best = 0
    for i, start in enumerate(stamps):
        count = sum(1 for t in stamps[i:] if t < start + width - EPS)
        best = max(best, count)
    return best


def test_default_rate_is_below_amocrm_limit() -> None:
    assert DEFAULT_RATE == 6.0
    assert RateLimiter().rate < 7


def test_thirty_calls_at_six_per_second_take_at_least_4_8_seconds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(6, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(30):
        limiter.acquire()
        stamps.append(clock())
    assert stamps[-1] - stamps[0] >= 29 / 6 - EPS  # ~4.83 s of fake time
    assert max_in_window(stamps) <= 6
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 1 / 6 - EPS


def test_first_call_does_not_wait_and_idle_time_is_not_banked() -> None:
    clock = FakeClock()
    limiter = RateLimiter(6, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    assert clock.sleeps == []
    clock.now += 60  # a long idle pause must not allow a burst afterwards
    stamps = []
    for _ in range(12):
        limiter.acquire()
        stamps.append(clock())
    assert max_in_window(stamps) <= 6
    assert stamps[-1] - stamps[0] >= 11 / 6 - EPS


def test_slow_caller_is_never_delayed() -> None:
    clock = FakeClock()
    limiter = RateLimiter(6, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire()
        clock.now += 0.5  # the work between calls is slower than the limit
    assert clock.sleeps == []


def test_acquire_returns_grant_time() -> None:
    clock = FakeClock(start=10.0)
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 10.0
    assert limiter.acquire() == pytest.approx(10.25)


def test_threads_share_one_budget() -> None:
    clock = FakeClock()
    lock = threading.Lock()
    stamps: list[float] = []
    limiter = RateLimiter(6, clock=clock, sleep=clock.sleep)

    def worker() -> None:
        for _ in range(5):
            granted = limiter.acquire()
            with lock:
                stamps.append(granted)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps.sort()
    assert len(stamps) == 20
    assert max_in_window(stamps) <= 6


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(rate)
