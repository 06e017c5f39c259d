"""Lease mechanics: one refresher at a time, across threads, processes and instances.

Use `RefreshLease` to take the store's refresh lock (`try_acquire`, or `acquire` to wait for
it), then work inside the returned `Holding`: it renews the lease in a background thread while
the holder works and `release()` retries the compare-and-delete. `InstanceGate` is the
in-process side (threads of one instance queue there, for at most their wait limit), and
`Deadline` measures every wait on the provider's clock. No token policy lives here: what to
do under the lease is `prometei.tokens.rotation`.

The numbers, and why they are a bound (docs/token-rotation.md, "Choosing the numbers"):
- the lease lives LEASE_TTL_MS (8 s) from its last renewal, and is renewed every third of that;
  a renewal is one store command, bounded by the store's whole-request deadline (4 s), so a
  renewal sent on time lands before the lease it extends runs out (2.7 s + 4 s < 8 s);
- a holder that dies stops renewing: its lock is free at most 8 s later;
- a failed release is retried RELEASE_ATTEMPTS times; if every try fails, the lease still ends
  by itself within 8 s.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometei.errors import PrometeiError
from prometei.store.base import TokenStore
from prometei.store.kv import TOKEN_STORE_TIMEOUT

log = logging.getLogger("prometei.tokens")

LEASE_TTL_MS = 8_000
RENEWALS_PER_LEASE = 3
RELEASE_ATTEMPTS = 3
RELEASE_PAUSES_S = (0.1, 0.3)
# The one limit every waiter shares: threads queued inside an instance and callers polling for
# another instance's pair alike give up after this with a retryable error.
WAIT_LIMIT_S = 40.0
POLL_INTERVAL_S = 0.25


def store_deadline_s() -> float:
    """Whole-request deadline of one token-store command (connect + read timeout)."""
    return float(sum(TOKEN_STORE_TIMEOUT))


class Deadline:
    """A point in time on `clock`, for bounded waits."""

    def __init__(self, clock: Callable[[], float], seconds: float) -> None:
        self._clock = clock
        self.seconds = seconds
        self.at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    def passed(self) -> bool:
        return self._clock() >= self.at


class InstanceGate:
    """The in-process mutex in front of the store's lock, so one instance sends at most one
    caller into the store-wide dance at a time; waiting for it is bounded by the caller's
    deadline (a thread behind a slow one gives up like any other waiter)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def enter(self, deadline: Deadline) -> Iterator[bool]:
        """Yields True once inside, False when the deadline passed first."""
        entered = self._lock.acquire(timeout=max(deadline.remaining(), 0.0))
        try:
            yield entered
        finally:
            if entered:
                self._lock.release()


class Holding:
    """A lease we hold: renewed in the background until `release()`. `lost` turns True when a
    renewal found the lock in someone else's hands (it ran out: correctness never depends on
    the lease, only waiting does; see prometei.tokens.rotation)."""

    def __init__(
        self,
        store: TokenStore,
        owner: str,
        *,
        ttl_ms: int,
        sleep: Callable[[float], None],
    ) -> None:
        self.store = store
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.lost = False
        self._sleep = sleep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        # Real time on purpose: renewals must follow the store's clock, not a test's.
        interval = self.ttl_ms / 1000 / RENEWALS_PER_LEASE
        while not self._stop.wait(interval):
            try:
                renewed = self.store.renew_lock(self.owner, self.ttl_ms)
            except PrometeiError as exc:
                log.warning("could not renew the refresh lease (%s); trying again", exc.message)
                continue
            except Exception as exc:  # never let a renewal thread die silently
                log.warning("could not renew the refresh lease (%s)", type(exc).__name__)
                continue
            if not renewed:
                self.lost = True
                log.warning("the refresh lease ran out before it could be renewed")
                return

    def release(self, time_left: Callable[[], float] | None = None) -> None:
        """Stop renewing, then compare-and-delete, retried: a lock left behind blocks every
        other refresher until its lease ends. With `time_left` (seconds the caller may still
        spend), no wait and no attempt starts that could outlast it: the lease then ends by
        itself within its TTL (the connect page must answer inside its maxDuration)."""
        self._stop.set()
        join_s = store_deadline_s() + 1
        if time_left is not None:
            join_s = max(0.0, min(join_s, time_left() - store_deadline_s()))
        self._thread.join(timeout=join_s)
        for attempt in range(1, RELEASE_ATTEMPTS + 1):
            if time_left is not None and time_left() < store_deadline_s():
                log.warning(
                    "no time left to release the refresh lock; it ends by itself within %gs",
                    self.ttl_ms / 1000,
                )
                return
            try:
                released = self.store.release_lock(self.owner)
            except Exception as exc:
                reason = exc.message if isinstance(exc, PrometeiError) else type(exc).__name__
                log.warning(
                    "could not release the refresh lock (attempt %d/%d): %s",
                    attempt,
                    RELEASE_ATTEMPTS,
                    reason,
                )
                if attempt < RELEASE_ATTEMPTS:
                    self._sleep(RELEASE_PAUSES_S[min(attempt, len(RELEASE_PAUSES_S)) - 1])
                continue
            if not released and not self.lost:
                # Already gone: our lease ran out, or an earlier try landed and only its answer
                # was lost. Either way it is not ours to delete any more.
                log.info("the refresh lock was no longer ours at release")
            return
        log.warning(
            "the refresh lock could not be released; it ends by itself within %gs",
            self.ttl_ms / 1000,
        )


class RefreshLease:
    """Takes the store's refresh lock. `sleep` is the provider's (injectable)."""

    def __init__(
        self,
        *,
        ttl_ms: int,
        poll_interval_s: float,
        sleep: Callable[[float], None],
    ) -> None:
        self.ttl_ms = ttl_ms
        self.poll_interval_s = poll_interval_s
        self._sleep = sleep

    def try_acquire(self, store: TokenStore) -> Holding | None:
        """The lease if it is free now, else None. A store error is raised, after one retry
        with the same owner token (an acquire whose answer was lost may have landed: the
        owner-checked renewal tells)."""
        owner = secrets.token_hex(16)
        try:
            got = store.acquire_lock(self.ttl_ms, owner)
        except PrometeiError:
            got = store.acquire_lock(self.ttl_ms, owner)
            if got is None and store.renew_lock(owner, self.ttl_ms):
                got = owner
        if got is None:
            return None
        return Holding(store, got, ttl_ms=self.ttl_ms, sleep=self._sleep)

    def acquire(self, store: TokenStore, deadline: Deadline) -> Holding | None:
        """Poll for the lease until `deadline`; None if it stayed taken."""
        while True:
            holding = self.try_acquire(store)
            if holding is not None or deadline.passed():
                return holding
            self._sleep(min(self.poll_interval_s, max(deadline.remaining(), 0.001)))
