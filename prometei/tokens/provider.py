"""`OAuthTokenProvider`: the OAuth pair from the token store, cached per process, refreshed
single-flight. It only glues the two halves together: `lease` (who may refresh now, and how
long everyone else waits) and `rotation` (what to do with what the store holds)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometei.amocrm.oauth import OAuthClient
from prometei.config import Settings
from prometei.errors import ReconnectRequired, UpstreamUnavailable
from prometei.store.base import TokenRecord, TokenStore
from prometei.tokens.lease import (
    LEASE_TTL_MS,
    POLL_INTERVAL_S,
    WAIT_LIMIT_S,
    Deadline,
    InstanceGate,
    RefreshLease,
)
from prometei.tokens.markers import Refusal
from prometei.tokens.rotation import PERSIST_WINDOW_S, Refresh, Rotation, Stale, Use, Wait
from prometei.tokens.sources import (
    CONNECT_LOCK_WAIT_S,
    EXCHANGE_WRITE_PAUSE_S,
    RECONNECT,
    SERVICE,
    RefreshInProgress,
    secret_value,
)

log = logging.getLogger("prometei.tokens")


class OAuthTokenProvider:
    """OAuth pair from the token store, cached per process, refreshed single-flight.

    `clock`/`sleep` are injectable for tests. `margin_s`: refresh when the access token has
    less than this left. `lock_ttl_ms`: the refresh lease, renewed while its holder works (see
    `prometei.tokens.lease`). `wait_timeout_s`: the one limit on every wait (threads of this
    instance and callers waiting for another instance's pair alike); past it the call fails
    with a retryable error. `persist_window_s`: how long a holder keeps trying to store a pair
    amoCRM issued.
    """

    def __init__(
        self,
        settings: Settings,
        store_factory: Callable[[], TokenStore],
        oauth: OAuthClient,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        margin_s: float = 600.0,
        lock_ttl_ms: int = LEASE_TTL_MS,
        wait_timeout_s: float = WAIT_LIMIT_S,
        poll_interval_s: float = POLL_INTERVAL_S,
        persist_window_s: float = PERSIST_WINDOW_S,
    ) -> None:
        self._settings = settings
        self._store_factory = store_factory
        self._store: TokenStore | None = None
        self._clock = clock
        self._sleep = sleep
        self.margin_s = margin_s
        self.lock_ttl_ms = lock_ttl_ms
        self.wait_timeout_s = wait_timeout_s
        self.poll_interval_s = poll_interval_s
        self._gate = InstanceGate()
        # Late-bound so a test may swap `_clock`/`_sleep` after construction.
        self._lease = RefreshLease(
            ttl_ms=lock_ttl_ms, poll_interval_s=poll_interval_s, sleep=self._pause
        )
        self._rotation = Rotation(
            settings,
            oauth,
            clock=self._now,
            sleep=self._pause,
            persist_window_s=persist_window_s,
        )
        self._cache: TokenRecord | None = None

    def __repr__(self) -> str:
        return f"OAuthTokenProvider(host={self._settings.amocrm_host!r})"

    # ---- AccessTokenSource ------------------------------------------------------------------
    def access_token(self) -> str:
        cached = self._cache
        if cached is not None and self._fresh(cached):
            return secret_value(cached.access_token)  # warm path: no store round-trip
        record, _ = self._current(lambda r: r is None or not self._fresh(r), self._cached_fresh)
        return secret_value(record.access_token)

    def after_unauthorized(self, rejected: str) -> str | None:
        def fixed_by_another_thread() -> TokenRecord | None:
            cached = self._cache
            if cached is not None and secret_value(cached.access_token) != rejected:
                return cached if self._fresh(cached) else None
            return None

        record, _ = self._current(
            lambda r: r is None or secret_value(r.access_token) == rejected or not self._fresh(r),
            fixed_by_another_thread,
        )
        token = secret_value(record.access_token)
        return token if token != rejected else None

    def account_host(self) -> str:
        record = self._cache
        if record is None:
            record = self._get_store().read()
            if record is None:
                return self._settings.amocrm_host
            self._accept(record)
        return self._rotation.host_of(record)

    # ---- for the connect page, the keepalive cron and the CLI -------------------------------
    def status(self) -> dict[str, Any]:
        """Connection facts for pages and step outputs. Never contains a token."""
        store = self._get_store()
        info: dict[str, Any] = {
            "mode": "oauth",
            "connected": False,
            "host": self._settings.amocrm_host,
            "expires_at": None,
            "obtained_at": None,
            "refreshed_at": None,
            "store": store.kind,
            "store_description": store.describe(),
        }
        state = store.read_state()
        record = state.record
        if record is None:
            info["problem"] = f"no tokens stored yet; {RECONNECT}"
            return info
        info.update(record.public_view())
        info["expires_in_s"] = int(record.expires_at - self._clock())
        try:
            info["host"] = self._rotation.host_of(record)
            info["connected"] = True
        except ReconnectRequired as exc:
            info["problem"] = exc.message
        refusal = Refusal.parse(state.markers.get("refused"))
        if refusal is not None and refusal.version == state.version:
            info["problem"] = (
                "amoCRM refused the stored refresh token; the access token works until it "
                f"expires, then {RECONNECT}"
            )
        return info

    def exchange_and_store(
        self,
        exchange: Callable[[], TokenRecord],
        *,
        lock_wait_s: float = CONNECT_LOCK_WAIT_S,
        time_left: Callable[[], float] | None = None,
    ) -> TokenRecord:
        """The connect page's code exchange, all under the refresh lease.

        Takes the lease first (waiting at most `lock_wait_s`), then calls `exchange` (which
        spends the single-use code) and writes its pair, then releases. If the lease stays
        taken, raises `RefreshInProgress` and never calls `exchange`, so the code stays usable.
        Errors from `exchange` propagate unchanged. `time_left` (the caller's remaining
        seconds) bounds the release, which never outlasts it (see `Holding.release`)."""
        deadline = Deadline(self._clock, lock_wait_s)
        with self._gate.enter(deadline) as entered:
            store = self._get_store()
            holding = self._lease.acquire(store, deadline) if entered else None
            if holding is None:
                raise RefreshInProgress(
                    SERVICE,
                    "an amoCRM token refresh is in progress (the refresh lock is taken); the "
                    "authorization code was not used, try again in a minute",
                )
            try:
                record = exchange()
                self._rotation.check_exchanged(record)
                stored = self._write_exchanged(store, record)
            finally:
                holding.release(time_left)
            self._connected(stored)
        return stored

    def store_exchanged(self, record: TokenRecord) -> TokenRecord:
        """Save a pair from a code exchange that already happened (the code is spent, so the
        pair is stored even if the refresh lease stays taken: refreshers write with a version
        check and will adopt it). Prefer `exchange_and_store`. Returns the pair as stored."""
        self._rotation.check_exchanged(record)
        deadline = Deadline(self._clock, self.wait_timeout_s)
        with self._gate.enter(deadline):
            store = self._get_store()
            holding = self._lease.acquire(store, deadline)
            if holding is None:
                log.warning("refresh lock still held; storing the new pair without it")
            try:
                stored = self._write_exchanged(store, record)
            finally:
                if holding is not None:
                    holding.release()
            self._connected(stored)
        return stored

    def refresh_if_older_than(self, max_age_s: float) -> dict[str, Any]:
        """Keepalive: rotate the pair if it was issued more than `max_age_s` ago (or is near
        expiry), so the refresh token never reaches its 3-month limit. Plain JSON result."""

        def stale(r: TokenRecord | None) -> bool:
            return (
                r is None or not self._fresh(r) or self._clock() - r.last_rotated_at() >= max_age_s
            )

        record, refreshed = self._current(stale, lambda: None)
        return {
            "refreshed": refreshed,
            "expires_at": record.expires_at,
            "refreshed_at": record.refreshed_at,
            "version": record.version,
        }

    # ---- getting a good pair -----------------------------------------------------------------
    def _current(
        self, stale: Stale, from_cache: Callable[[], TokenRecord | None]
    ) -> tuple[TokenRecord, bool]:
        """A good pair and whether this call rotated it. Threads of this instance queue at the
        gate; everything (the gate, the lease, another instance's pair) is waited for at most
        `wait_timeout_s` in total."""
        deadline = Deadline(self._clock, self.wait_timeout_s)
        with self._gate.enter(deadline) as entered:
            cached = from_cache()
            if cached is not None:
                return cached, False
            if not entered:
                raise self._gave_up("another request of this instance is refreshing the token")
            return self._obtain(stale, deadline)

    def _obtain(self, stale: Stale, deadline: Deadline) -> tuple[TokenRecord, bool]:
        store = self._get_store()
        while True:
            step = self._rotation.assess(store, store.read_state(), stale)
            if isinstance(step, Refresh):
                holding = self._lease.try_acquire(store)
                if holding is None:
                    step = Wait("another instance holds the refresh lock")
                else:
                    try:
                        step = self._rotation.rotate(store, stale, holding)
                    finally:
                        holding.release()
            if isinstance(step, Use):
                self._accept(step.record)
                return step.record, step.ours
            assert isinstance(step, Wait)
            if deadline.passed():
                raise self._gave_up(step.reason)
            self._sleep(min(self.poll_interval_s, max(deadline.remaining(), 0.001)))

    def _write_exchanged(self, store: TokenStore, record: TokenRecord) -> TokenRecord:
        """Unconditional write of a fresh connection (it wins over anything older; refreshers
        write with a version check, so none can land on top of it). Tried twice: the code is
        spent, this pair is the connection."""
        fresh = record.model_copy(update={"moved_from": None})
        try:
            return store.write(fresh)
        except UpstreamUnavailable as exc:
            log.error("could not store the new amoCRM pair, trying once more: %s", exc.message)
            self._sleep(EXCHANGE_WRITE_PAUSE_S)
            return store.write(fresh)

    def _gave_up(self, reason: str) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            SERVICE,
            f"gave up after waiting {self.wait_timeout_s:g}s for the amoCRM token: {reason} "
            f"(a lock left by a crashed instance ends by itself within "
            f"{self.lock_ttl_ms / 1000:g}s)",
        )

    # ---- helpers ---------------------------------------------------------------------------
    def _now(self) -> float:
        return self._clock()

    def _pause(self, seconds: float) -> None:
        self._sleep(seconds)

    def _fresh(self, record: TokenRecord) -> bool:
        return not record.expires_within(self.margin_s, self._clock())

    def _cached_fresh(self) -> TokenRecord | None:
        cached = self._cache
        return cached if cached is not None and self._fresh(cached) else None

    def _accept(self, record: TokenRecord) -> None:
        self._rotation.host_of(record)
        self._cache = record

    def _connected(self, stored: TokenRecord) -> None:
        self._cache = stored
        log.info("amoCRM connected: token pair stored (version %s)", stored.version)

    def _get_store(self) -> TokenStore:
        if self._store is None:
            self._store = self._store_factory()
        return self._store
