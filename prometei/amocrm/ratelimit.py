"""Client-side limits for amoCRM requests, as amoCRM counts them.

amoCRM answers at most 7 requests per second per integration and punishes excess first with
429 and then with a 403 block of the whole account (reference amocrm.md §4.1). It counts a
request when it arrives, which is somewhere between the moment we send it and the moment its
answer is back; we cannot know exactly when. So `SlidingWindowLimiter` counts every request
as busy from the moment it is granted until one window (1 s) after its answer arrived. No
more than `limit` requests are busy at any moment, which gives:

    whatever amoCRM's arrival times are, no window of 1 s holds more than `limit` of them.

(Proof sketch: take `limit + 1` arrivals within less than a second and the last of them to be
granted; every other one arrived before that grant's time plus one second, so it was answered
less than a second before that grant, or later, and was still busy when it was granted.)
The price is the answer time: a limiter of 5/s with 150 ms answers grants about 5 / 1.15 =
4.3 requests per second. An even spacer (the old limiter) ran at the full rate but let 7
requests land inside one second at `rate=6` whenever one answer was slower than its neighbour.

`Brake` is the process-wide reaction to a 429: every limiter that shares it stops granting
until amoCRM's wait (Retry-After, else a default) is over, then runs at half its limit for a
cool-down period. One brake per process (`prometei.amocrm.budget`); clocks and sleeps are
injectable so tests run on a fake clock.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

WINDOW_S = 1.0
# After a 429 the limiters of the process run at half their limit for this long.
COOLDOWN_S = 60.0


class Brake:
    """A process-wide pause after a 429, shared by every limiter of the process."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.until = 0.0
        self.cooldown_until = 0.0
        self.engaged = 0  # how many 429s engaged it (for logs and tests)

    def engage(self, wait_s: float) -> float:
        """Stop every limiter for `wait_s` seconds from now (never shortening an earlier
        pause), then slow them down for `COOLDOWN_S`. Returns when the pause ends."""
        with self._lock:
            now = self._clock()
            self.until = max(self.until, now + max(wait_s, 0.0))
            self.cooldown_until = max(self.cooldown_until, self.until + COOLDOWN_S)
            self.engaged += 1
            return self.until

    def pause_left(self, now: float) -> float:
        return max(0.0, self.until - now)

    def cooling(self, now: float) -> bool:
        return now < self.cooldown_until


class SlidingWindowLimiter:
    """At most `limit` requests in any `window_s` window as the server sees them.

    Thread-safe; use `with limiter.slot(): send()` (or `acquire()` / `release(ticket)`).
    A request counts from its grant until `window_s` after `release`. `sleep`, when given,
    replaces the real wait (tests on a fake clock; single-threaded use only).
    """

    def __init__(
        self,
        limit: int,
        *,
        window_s: float = WINDOW_S,
        brake: Brake | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        name: str = "amocrm",
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be 1 or more requests per window")
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.limit = int(limit)
        self.window_s = float(window_s)
        self.brake = brake or Brake(clock=clock)
        self.name = name
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._busy: dict[int, float] = {}  # ticket -> end of its busy time (inf: in flight)
        self._tickets = itertools.count(1)
        self.granted = 0
        self.waited_s = 0.0

    @property
    def rate(self) -> float:
        """The limit per second (for messages and the throttle arithmetic)."""
        return self.limit / self.window_s

    def effective_limit(self, now: float) -> int:
        return max(1, self.limit // 2) if self.brake.cooling(now) else self.limit

    def acquire(self) -> int:
        """Block until a request may go; returns the ticket to `release` once answered."""
        with self._cond:
            while True:
                now = self._clock()
                wait = self._wait_needed(now)
                if wait is None:
                    ticket = next(self._tickets)
                    self._busy[ticket] = math.inf
                    self.granted += 1
                    return ticket
                self.waited_s += wait
                self._pause(wait)

    def release(self, ticket: int) -> None:
        """The answer (or the failure) of `ticket`'s request is in."""
        with self._cond:
            if ticket in self._busy:
                self._busy[ticket] = self._clock() + self.window_s
            self._cond.notify_all()

    @contextmanager
    def slot(self) -> Iterator[None]:
        ticket = self.acquire()
        try:
            yield
        finally:
            self.release(ticket)

    def in_flight(self) -> int:
        with self._cond:
            return sum(1 for end in self._busy.values() if end == math.inf)

    # ---- internals (called with the condition held) ---------------------------------------
    def _wait_needed(self, now: float) -> float | None:
        """None when a request may go now, else how long to wait before looking again."""
        for ticket, end in list(self._busy.items()):
            if end <= now:
                del self._busy[ticket]
        paused = self.brake.pause_left(now)
        if paused > 0:
            return paused
        if len(self._busy) < self.effective_limit(now):
            return None
        ending = [end for end in self._busy.values() if end != math.inf]
        if ending:
            return max(min(ending) - now, 1e-3)
        # Every slot is in flight: the earliest is free one window after an answer we have
        # not seen yet; `release` wakes us when one comes in.
        return self.window_s

    def _pause(self, seconds: float) -> None:
        if self._sleep is None:
            self._cond.wait(seconds)
            return
        self._cond.release()
        try:
            self._sleep(seconds)
        finally:
            self._cond.acquire()
