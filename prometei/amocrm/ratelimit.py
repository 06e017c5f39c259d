"""A client-side request spacer for amoCRM.

amoCRM allows 7 requests per second per integration (50 per account, shared by every
integration) and answers abuse first with 429 and then with a 403 block of the whole account.
So we stay below the limit on our side instead of learning it from 429s: requests are spaced
evenly, `1/rate` seconds apart, which never bursts after an idle pause and therefore keeps
every 1-second window at or below `rate` requests, whichever second amoCRM counts in.

The limiter is per process (one Vercel instance, one CLI run); clock and sleep are injectable
so tests run on a fake clock and never sleep for real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_RATE = 6.0  # below amoCRM's 7/s per integration, leaving room for clock skew


class RateLimiter:
    """At most `rate` acquisitions per second, evenly spaced. Thread-safe."""

    def __init__(
        self,
        rate: float = DEFAULT_RATE,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (requests per second)")
        self.rate = rate
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_at: float | None = None

    def acquire(self) -> float:
        """Block until the next request may go; return the time (on our clock) it was granted."""
        with self._lock:
            now = self._clock()
            ready = self._next_at
            if ready is not None and now < ready:
                self._sleep(ready - now)
                # A sleep may come back an instant early (float rounding, coarse timers):
                # never grant before `ready`, or two grants could drift closer than allowed.
                now = max(self._clock(), ready)
            self._next_at = now + self.interval
            return now
