"""The amoCRM access token every API call uses, and its rotation.

`build_token_source(settings, store_factory)` returns:
- `StaticTokenSource` when AMOCRM_ACCESS_TOKEN (a long-lived token) is set: no store, no refresh;
- `OAuthTokenProvider` otherwise: the OAuth pair from the token store, refreshed ahead of expiry.

amoCRM refresh tokens are single-use and rotate on every refresh (reference amocrm.md §2.5),
so at most one refresh may run at a time across all threads, processes and Vercel instances:
take the store's lease lock, re-read the store, refresh only if still needed, write the new
pair with a compare-version write (so a holder whose lease ran out can never overwrite a newer
pair), release with compare-and-delete. Everyone else waits for the new pair. The connect page's
code exchange runs under the same lock. The whole story, including what happens when an
instance dies mid-refresh, is in docs/token-rotation.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import SecretStr

from prometei.amocrm.domains import is_account_host, is_configured_account, split_account_host
from prometei.amocrm.oauth import AccountMaybeMoved, OAuthClient, RefreshTokenRevoked
from prometei.config import Settings
from prometei.errors import (
    ConfigError,
    InputError,
    PrometeiError,
    ReconnectRequired,
    UpstreamUnavailable,
)
from prometei.store.base import TokenRecord, TokenStore

log = logging.getLogger(__name__)

SERVICE = "amocrm-token"
RECONNECT = "open /api/oauth/callback and click Connect amoCRM"

# The refresh lease. It must outlast everything a holder can do under the lock, each step bounded
# by its timeout (KV commands: TOKEN_STORE_TIMEOUT (1+3 s); token endpoint: TOKEN_TIMEOUT
# (3+10 s)). Worst case: read, flush of an unsaved pair (write + read), refresh, "revoked" read,
# moved-account lookup, refresh at the moved host, PERSIST_ATTEMPTS writes with 2 pauses and the
# lost-race read: 8 x 4 s + 3 x 13 s + 0.5 s = 71.5 s. 120 s leaves a wide margin and stays well
# below the Inngest function's maxDuration (300 s). docs/token-rotation.md has the table.
LOCK_TTL_MS = 120_000
PERSIST_ATTEMPTS = 3
# How long the connect page waits for the lock before answering "refresh in progress" without
# spending the code: lock wait + last acquire (4 s) + exchange (13 s) + write (4 s) must fit the
# callback's maxDuration (30 s, vercel.json).
CONNECT_LOCK_WAIT_S = 5.0


class RefreshInProgress(UpstreamUnavailable):
    """The refresh lock stayed taken: another instance is rotating the pair (or one that died
    holding it has not reached the end of its lease). Nothing was done; try again shortly."""


class AccessTokenSource(Protocol):
    """What the amoCRM API client needs: a token, a second chance after a 401, and a host."""

    def access_token(self) -> str:
        """A token valid for at least a few minutes."""
        ...

    def after_unauthorized(self, rejected: str) -> str | None:
        """Called once after amoCRM answered 401 to `rejected`: a different token to retry
        with, or None to give up."""
        ...

    def account_host(self) -> str:
        """The host to call (the configured account, or where it moved)."""
        ...


class ManagedTokenSource(AccessTokenSource, Protocol):
    """The extra operations the connect page, the keepalive cron and the CLI use."""

    def status(self) -> dict[str, Any]: ...

    def store_exchanged(self, record: TokenRecord) -> TokenRecord: ...

    def exchange_and_store(
        self, exchange: Callable[[], TokenRecord], *, lock_wait_s: float = ...
    ) -> TokenRecord: ...

    def refresh_if_older_than(self, max_age_s: float) -> dict[str, Any]: ...


def _value(secret: SecretStr) -> str:
    return secret.get_secret_value()


class StaticTokenSource:
    """A long-lived AMOCRM_ACCESS_TOKEN: nothing to refresh, nothing to store."""

    def __init__(self, settings: Settings) -> None:
        if settings.amocrm_access_token is None:
            raise ConfigError("AMOCRM_ACCESS_TOKEN is not set")
        self._token = settings.amocrm_access_token
        self._host = settings.amocrm_host

    def __repr__(self) -> str:
        return f"StaticTokenSource(host={self._host!r})"

    def access_token(self) -> str:
        return _value(self._token)

    def after_unauthorized(self, rejected: str) -> str | None:
        log.warning(
            "amoCRM refused the long-lived AMOCRM_ACCESS_TOKEN (expired or revoked); create a "
            "new one in the integration's settings, or unset it to use OAuth"
        )
        return None

    def account_host(self) -> str:
        return self._host

    def status(self) -> dict[str, Any]:
        return {
            "mode": "long-lived",
            "connected": True,
            "host": self._host,
            "expires_at": None,
            "obtained_at": None,
            "refreshed_at": None,
            "store": None,
            "store_description": "not used: AMOCRM_ACCESS_TOKEN is set",
        }

    def store_exchanged(self, record: TokenRecord) -> TokenRecord:
        return self._refuse_oauth()

    def exchange_and_store(
        self, exchange: Callable[[], TokenRecord], *, lock_wait_s: float = CONNECT_LOCK_WAIT_S
    ) -> TokenRecord:
        return self._refuse_oauth()

    def _refuse_oauth(self) -> TokenRecord:
        raise ConfigError(
            "AMOCRM_ACCESS_TOKEN is set, so OAuth tokens would never be used; unset it to "
            "connect through OAuth"
        )

    def refresh_if_older_than(self, max_age_s: float) -> dict[str, Any]:
        return {"refreshed": False, "expires_at": None, "reason": "long-lived token"}


Stale = Callable[[TokenRecord | None], bool]


class OAuthTokenProvider:
    """OAuth pair from the token store, cached per process, refreshed single-flight.

    `clock`/`sleep` are injectable for tests. `margin_s`: refresh when the access token has
    less than this left. `lock_ttl_ms`: the refresh lease (longer than everything a holder can
    do under it, see LOCK_TTL_MS; shorter than a function's run time). `wait_timeout_s`: how
    long a caller that lost the race waits for the winner's pair before giving up with a
    retryable error.
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
        lock_ttl_ms: int = LOCK_TTL_MS,
        wait_timeout_s: float = 40.0,
        poll_interval_s: float = 0.25,
    ) -> None:
        self._settings = settings
        self._store_factory = store_factory
        self._store: TokenStore | None = None
        self._oauth = oauth
        self._clock = clock
        self._sleep = sleep
        self.margin_s = margin_s
        self.lock_ttl_ms = lock_ttl_ms
        self.wait_timeout_s = wait_timeout_s
        self.poll_interval_s = poll_interval_s
        self._mutex = threading.Lock()
        self._cache: TokenRecord | None = None
        # A rotated pair the store refused to take, and the stored version it replaces.
        self._unsaved: tuple[TokenRecord, int] | None = None
        # When this instance took the refresh lock it holds now (clock time), else None.
        self._lease_started: float | None = None

    def __repr__(self) -> str:
        return f"OAuthTokenProvider(host={self._settings.amocrm_host!r})"

    # ---- AccessTokenSource ------------------------------------------------------------------
    def access_token(self) -> str:
        cached = self._cache
        if cached is not None and self._fresh(cached):
            return _value(cached.access_token)  # warm path: no store round-trip
        with self._mutex:
            cached = self._cache
            if cached is not None and self._fresh(cached):
                return _value(cached.access_token)
            record = self._current(lambda r: r is None or not self._fresh(r))
            return _value(record.access_token)

    def after_unauthorized(self, rejected: str) -> str | None:
        with self._mutex:
            cached = self._cache
            if (
                cached is not None
                and _value(cached.access_token) != rejected
                and self._fresh(cached)
            ):
                return _value(cached.access_token)  # another thread already fixed it
            record = self._current(
                lambda r: r is None or _value(r.access_token) == rejected or not self._fresh(r)
            )
            token = _value(record.access_token)
            return token if token != rejected else None

    def account_host(self) -> str:
        record = self._cache
        if record is None:
            with self._mutex:
                record = self._cache or self._get_store().read()
                if record is None:
                    return self._settings.amocrm_host
                self._accept(record)
        return self._host_of(record)

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
        record = store.read()
        if record is None:
            info["problem"] = f"no tokens stored yet; {RECONNECT}"
            return info
        info.update(record.public_view())
        info["expires_in_s"] = int(record.expires_at - self._clock())
        try:
            info["host"] = self._host_of(record)
            info["connected"] = True
        except ReconnectRequired as exc:
            info["problem"] = exc.message
        return info

    def exchange_and_store(
        self, exchange: Callable[[], TokenRecord], *, lock_wait_s: float = CONNECT_LOCK_WAIT_S
    ) -> TokenRecord:
        """The connect page's code exchange, all under the refresh lock.

        Takes the lock first (waiting at most `lock_wait_s`), then calls `exchange` (which spends
        the single-use code) and writes its pair, then releases with compare-and-delete. If the
        lock stays taken, raises `RefreshInProgress` and never calls `exchange`, so the code
        stays usable. Errors from `exchange` propagate unchanged."""
        with self._mutex:
            store = self._get_store()
            owner = self._wait_for_lock(store, lock_wait_s)
            if owner is None:
                raise RefreshInProgress(
                    SERVICE,
                    "an amoCRM token refresh is in progress (the refresh lock is taken); the "
                    "authorization code was not used, try again in a minute",
                )
            try:
                record = exchange()
                self._check_exchanged(record)
                # Unconditional: we hold the lock, and a refresher whose lease ran out writes
                # with a version check, so it cannot land on top of this pair.
                stored = store.write(record.model_copy(update={"moved_from": None}))
            finally:
                self._release(store, owner)
            self._connected(stored)
        return stored

    def store_exchanged(self, record: TokenRecord) -> TokenRecord:
        """Save a pair from a code exchange that already happened (the code is spent, so the
        pair is stored even if the refresh lock stays taken: refreshers write with a version
        check and will adopt it). Prefer `exchange_and_store`. Returns the pair as stored."""
        self._check_exchanged(record)
        with self._mutex:
            store = self._get_store()
            owner = self._wait_for_lock(store, self.wait_timeout_s)
            if owner is None:
                log.warning("refresh lock still held; storing the new pair without it")
            try:
                stored = store.write(record.model_copy(update={"moved_from": None}))
            finally:
                if owner is not None:
                    self._release(store, owner)
            self._connected(stored)
        return stored

    def refresh_if_older_than(self, max_age_s: float) -> dict[str, Any]:
        """Keepalive: rotate the pair if it was issued more than `max_age_s` ago (or is near
        expiry), so the refresh token never reaches its 3-month limit. Plain JSON result."""

        def stale(r: TokenRecord | None) -> bool:
            return (
                r is None or not self._fresh(r) or self._clock() - r.last_rotated_at() >= max_age_s
            )

        with self._mutex:
            record = self._get_store().read()
            refreshed = False
            if self._unsaved is None and record is not None and not stale(record):
                self._accept(record)
            else:
                record, refreshed = self._single_flight(stale)
        return {
            "refreshed": refreshed,
            "expires_at": record.expires_at,
            "refreshed_at": record.refreshed_at,
            "version": record.version,
        }

    # ---- the single-flight refresh -----------------------------------------------------------
    def _current(self, stale: Stale) -> TokenRecord:
        """The stored pair if it is good, else a refreshed one. Call with the mutex held.
        A pair held in memory after a failed write sends us to the lock, where it is saved."""
        record = self._get_store().read()
        if self._unsaved is None and record is not None and not stale(record):
            self._accept(record)
            return record
        record, _ = self._single_flight(stale)
        return record

    def _single_flight(self, stale: Stale) -> tuple[TokenRecord, bool]:
        store = self._get_store()
        deadline = self._clock() + self.wait_timeout_s
        while True:
            started = self._clock()  # before SET: the lease cannot have started earlier
            owner = store.acquire_lock(self.lock_ttl_ms)
            if owner is not None:
                self._lease_started = started
                try:
                    return self._refresh_locked(store, stale)
                finally:
                    self._lease_started = None
                    self._release(store, owner)
            # Someone else is refreshing: never refresh ourselves, wait for their pair.
            record = store.read()
            if record is not None and not stale(record):
                self._accept(record)
                return record, False
            if self._clock() >= deadline:
                raise UpstreamUnavailable(
                    SERVICE,
                    f"waited {self.wait_timeout_s:g}s for another instance to refresh the amoCRM "
                    f"token; will retry (a lock left by a crashed instance expires after "
                    f"{self.lock_ttl_ms / 1000:g}s)",
                )
            self._sleep(self.poll_interval_s)

    def _refresh_locked(self, store: TokenStore, stale: Stale) -> tuple[TokenRecord, bool]:
        record = store.read()  # re-read under the lock: the previous holder may have rotated
        if self._unsaved is not None:
            record = self._flush_locked(store, record)
        if record is None:
            new, replaces = self._seed(store)
        elif not stale(record):
            self._accept(record)
            return record, False
        else:
            new, replaces = self._rotate(store, record)
        if replaces is None:  # a pair someone else stored meanwhile
            self._accept(new)
            return new, False
        stored, ours = self._persist(store, new, replaces)
        self._accept(stored)
        if ours:
            log.info(
                "amoCRM token pair refreshed (version %s, expires at %s)",
                stored.version,
                stored.expires_at,
            )
        return stored, ours

    def _seed(self, store: TokenStore) -> tuple[TokenRecord, int | None]:
        seed = self._settings.amocrm_refresh_token
        if seed is None:
            raise ReconnectRequired(
                f"amoCRM is not connected: the token store ({self._get_store().describe()}) "
                f"holds no tokens; {RECONNECT}"
            )
        log.info("token store is empty: seeding it once from AMOCRM_REFRESH_TOKEN")
        self._ensure_lease()
        try:
            return self._oauth.refresh(seed, self._settings.amocrm_host), 0
        except RefreshTokenRevoked:
            pass
        again = store.read()
        if again is not None:  # seeded by an instance whose lease ran out, or a reconnect
            return again, None
        if self._lease_lost():
            raise self._lost_race_error()
        raise ReconnectRequired(
            "AMOCRM_REFRESH_TOKEN was refused as already used or revoked (refresh tokens "
            f"are single-use); remove it and {RECONNECT}"
        )

    def _rotate(self, store: TokenStore, record: TokenRecord) -> tuple[TokenRecord, int | None]:
        """(new pair, the stored version it replaces), or (a pair already stored, None)."""
        host = self._host_of(record)
        self._ensure_lease()
        new: TokenRecord | None
        try:
            new = self._oauth.refresh(record.refresh_token, host)
        except AccountMaybeMoved:
            moved = self._refresh_at_moved_host(record)
            if moved is None:
                raise
            return moved, record.version
        except RefreshTokenRevoked:
            new = None
        if new is not None:
            return self._carry(new, record), record.version
        # "Token has been revoked": most often someone else already rotated this pair (an
        # instance whose lease ran out, a reconnect). Look once more, prefer a newer pair.
        log.warning("amoCRM refused the stored refresh token as spent; re-reading the store")
        again = store.read()
        if again is not None and _value(again.refresh_token) != _value(record.refresh_token):
            if self._fresh(again):
                return again, None
            self._ensure_lease()
            try:
                new = self._oauth.refresh(again.refresh_token, self._host_of(again))
            except RefreshTokenRevoked:
                raise self._revoked_error() from None
            return self._carry(new, again), again.version
        if self._lease_lost():
            # We lost the race: whoever holds the lock now has (or is about to store) the pair.
            raise self._lost_race_error()
        moved = self._refresh_at_moved_host(record)
        if moved is not None:
            return moved, record.version
        raise self._revoked_error()

    def _refresh_at_moved_host(self, record: TokenRecord) -> TokenRecord | None:
        new_host = self._oauth.discover_moved_host(record.access_token, record.refresh_token)
        if new_host is None or new_host == record.host or not is_account_host(new_host):
            return None
        if not self._same_subdomain(new_host):
            # The API client only ever calls <AMOCRM_SUBDOMAIN>.<known domain>: refreshing there
            # would spend the pair on a host nothing can use. Leave the tokens where they are.
            raise ReconnectRequired(
                f"amoCRM reports that the account {record.host} moved to {new_host}, a "
                f"different subdomain; this deployment only serves "
                f"'{self._settings.require_subdomain()}' (AMOCRM_SUBDOMAIN), so the tokens were "
                "not sent there. If the account really moved to another subdomain, update "
                f"AMOCRM_SUBDOMAIN (and AMOCRM_BASE_DOMAIN), redeploy, then {RECONNECT}"
            )
        log.warning(
            "amoCRM reports the account moved from %s to %s; update AMOCRM_BASE_DOMAIN",
            record.host,
            new_host,
        )
        self._ensure_lease()
        try:
            new = self._oauth.refresh(record.refresh_token, new_host)
        except RefreshTokenRevoked:
            raise self._revoked_error() from None
        configured = self._settings.amocrm_host
        return new.model_copy(
            update={
                "obtained_at": record.obtained_at,
                "moved_from": None if new_host == configured else configured,
            }
        )

    def _revoked_error(self) -> PrometeiError:
        if self._lease_lost():
            return self._lost_race_error()
        return ReconnectRequired(
            "amoCRM refused the stored refresh token as already used or revoked, and the store "
            f"holds no newer one; the connection must be renewed: {RECONNECT}"
        )

    def _lost_race_error(self) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            SERVICE,
            "amoCRM refused the refresh token as already used after this instance's refresh "
            f"lease ({self.lock_ttl_ms / 1000:g}s) ran out: another instance took over and is "
            "storing the newer pair; will retry",
        )

    def _persist(
        self, store: TokenStore, new: TokenRecord, replaces: int
    ) -> tuple[TokenRecord, bool]:
        """Write the rotated pair before anyone uses it, only over the version it replaces.

        Returns (pair now stored, True when it is ours). If someone wrote meanwhile (our lease
        ran out, or a reconnect), their newer pair wins and is returned. The old refresh token
        is already dead, so a failed write is retried, and if it keeps failing the pair stays
        in memory (saved under the lock on the next call)."""
        for attempt in range(1, PERSIST_ATTEMPTS + 1):
            try:
                stored = store.write_if_version(new, replaces)
            except Exception as exc:
                log.error(
                    "could not save the rotated amoCRM token pair (attempt %d/%d): %s",
                    attempt,
                    PERSIST_ATTEMPTS,
                    type(exc).__name__,
                )
                if attempt < PERSIST_ATTEMPTS:
                    self._sleep(self.poll_interval_s)
                continue
            if stored is not None:
                return stored, True
            return self._after_lost_write(store, new)
        self._unsaved = (new, replaces)
        raise UpstreamUnavailable(
            SERVICE,
            "amoCRM issued a new token pair but the token store refused the write; this "
            "instance keeps it in memory and saves it on its next call (see "
            "docs/token-rotation.md)",
        )

    def _after_lost_write(self, store: TokenStore, new: TokenRecord) -> tuple[TokenRecord, bool]:
        """The compare-version write found a version other than the one we read."""
        current = store.read()
        if current is not None and _value(current.refresh_token) == _value(new.refresh_token):
            return current, True  # an earlier attempt of ours landed; only its answer was lost
        if current is None:
            # Someone emptied the store: keep our pair for the next call, which writes it if
            # the store is still empty then.
            self._unsaved = (new, 0)
            raise UpstreamUnavailable(
                SERVICE, "the token record vanished while a new pair was being saved; will retry"
            )
        log.warning(
            "a newer amoCRM token pair (version %s) was stored while this instance refreshed "
            "(its lease ran out, or amoCRM was reconnected); using it, discarding ours",
            current.version,
        )
        return current, False

    def _flush_locked(self, store: TokenStore, current: TokenRecord | None) -> TokenRecord | None:
        """Save the pair a failed write left in memory, if the store still holds the version it
        replaces. Call with the refresh lock held. Returns what the store holds afterwards."""
        assert self._unsaved is not None
        pending, replaces = self._unsaved
        found = current.version if current is not None else 0
        if found != replaces:
            log.warning("dropping the unsaved amoCRM pair: the store was updated meanwhile")
            self._unsaved = None
            return current
        stored = store.write_if_version(pending, replaces)  # a failure keeps it for next time
        self._unsaved = None
        if stored is None:
            log.warning("dropping the unsaved amoCRM pair: the store was updated meanwhile")
            return store.read()
        log.info("saved the rotated amoCRM pair held in memory (version %s)", stored.version)
        return stored

    # ---- helpers ---------------------------------------------------------------------------
    def _fresh(self, record: TokenRecord) -> bool:
        return not record.expires_within(self.margin_s, self._clock())

    def _carry(self, new: TokenRecord, old: TokenRecord) -> TokenRecord:
        return new.model_copy(update={"obtained_at": old.obtained_at, "moved_from": old.moved_from})

    def _same_subdomain(self, host: str) -> bool:
        """`host` is the configured account on any known domain (amocrm.ru/.com, kommo.com)."""
        parts = split_account_host(host)
        return parts is not None and parts[0] == self._settings.require_subdomain()

    def _host_of(self, record: TokenRecord) -> str:
        configured = self._settings.amocrm_host
        if record.host == configured:
            return configured
        if record.moved_from == configured and self._same_subdomain(record.host):
            return record.host
        raise ReconnectRequired(
            f"the stored amoCRM tokens belong to {record.host}, but this deployment serves "
            f"{configured} (AMOCRM_SUBDOMAIN / AMOCRM_BASE_DOMAIN); {RECONNECT}"
        )

    def _accept(self, record: TokenRecord) -> None:
        self._host_of(record)
        self._cache = record

    def _check_exchanged(self, record: TokenRecord) -> None:
        subdomain = self._settings.require_subdomain()
        if not is_configured_account(record.host, subdomain, self._settings.amocrm_base_domain):
            raise InputError(
                f"tokens for {record.host} do not belong to the configured account "
                f"{self._settings.amocrm_host}; check AMOCRM_SUBDOMAIN and AMOCRM_BASE_DOMAIN"
            )

    def _connected(self, stored: TokenRecord) -> None:
        self._cache = stored
        self._unsaved = None  # a reconnect supersedes a pair we failed to save
        log.info("amoCRM connected: token pair stored (version %s)", stored.version)

    def _get_store(self) -> TokenStore:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def _lease_lost(self) -> bool:
        """True once the lease we hold may have run out (measured from before its SET, so the
        store's lease ends no earlier than this says)."""
        started = self._lease_started
        return started is not None and self._clock() - started >= self.lock_ttl_ms / 1000

    def _ensure_lease(self) -> None:
        """Call before every request to amoCRM under the lock: never spend a refresh token
        after our lease may have passed to someone else."""
        if self._lease_lost():
            raise UpstreamUnavailable(
                SERVICE,
                f"the refresh lease ({self.lock_ttl_ms / 1000:g}s) ran out before amoCRM was "
                "asked; not refreshing without it; will retry",
            )

    def _wait_for_lock(self, store: TokenStore, wait_s: float) -> str | None:
        """The lock's owner token, or None if it stayed taken for `wait_s`."""
        deadline = self._clock() + wait_s
        while True:
            owner = store.acquire_lock(self.lock_ttl_ms)
            if owner is not None or self._clock() >= deadline:
                return owner
            self._sleep(self.poll_interval_s)

    def _release(self, store: TokenStore, owner: str) -> None:
        try:
            released = store.release_lock(owner)
        except Exception as exc:
            log.warning(
                "could not release the refresh lock (%s); it expires by itself in %ss",
                type(exc).__name__,
                self.lock_ttl_ms / 1000,
            )
            return
        if not released:
            log.warning(
                "the refresh lock's lease (%ss) ran out before release; another instance may "
                "have started a refresh meanwhile",
                self.lock_ttl_ms / 1000,
            )


def build_token_source(
    settings: Settings, store_factory: Callable[[], TokenStore]
) -> StaticTokenSource | OAuthTokenProvider:
    """Long-lived token when AMOCRM_ACCESS_TOKEN is set (the store is never touched), else
    the OAuth provider (ConfigError naming AMOCRM_CLIENT_ID/SECRET/REDIRECT_URI if missing)."""
    if settings.uses_long_lived_token:
        return StaticTokenSource(settings)
    return OAuthTokenProvider(settings, store_factory, OAuthClient.from_settings(settings))
