"""The amoCRM access token every API call uses, and its rotation.

`build_token_source(settings, store_factory)` returns:
- `StaticTokenSource` when AMOCRM_ACCESS_TOKEN (a long-lived token) is set: no store, no refresh;
- `OAuthTokenProvider` otherwise: the OAuth pair from the token store, refreshed ahead of expiry.

amoCRM refresh tokens are single-use and rotate on every refresh (reference amocrm.md §2.5),
so at most one refresh may run at a time across all threads, processes and Vercel instances:
take the store's lease lock, re-read the store, refresh only if still needed, write the new
pair, release with compare-and-delete. Everyone else waits for the new pair. The whole story,
including what happens when an instance dies mid-refresh, is in docs/token-rotation.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import SecretStr

from prometei.amocrm.domains import is_account_host, is_configured_account
from prometei.amocrm.oauth import AccountMaybeMoved, OAuthClient, RefreshTokenRevoked
from prometei.config import Settings
from prometei.errors import ConfigError, InputError, ReconnectRequired, UpstreamUnavailable
from prometei.store.base import TokenRecord, TokenStore

log = logging.getLogger(__name__)

SERVICE = "amocrm-token"
RECONNECT = "open /api/oauth/callback and click Connect amoCRM"


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
    less than this left. `lock_ttl_ms`: the refresh lease (longer than a token request can
    take, shorter than a function's run time). `wait_timeout_s`: how long a caller that lost
    the race waits for the winner's pair before giving up with a retryable error.
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
        lock_ttl_ms: int = 30_000,
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
        # A rotated pair the store refused to take, and the refresh token it replaced.
        self._unsaved: TokenRecord | None = None
        self._unsaved_spent: str | None = None

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

    def store_exchanged(self, record: TokenRecord) -> TokenRecord:
        """Save a pair from a code exchange (the connect page). Returns it as stored."""
        subdomain = self._settings.require_subdomain()
        if not is_configured_account(record.host, subdomain, self._settings.amocrm_base_domain):
            raise InputError(
                f"tokens for {record.host} do not belong to the configured account "
                f"{self._settings.amocrm_host}; check AMOCRM_SUBDOMAIN and AMOCRM_BASE_DOMAIN"
            )
        with self._mutex:
            store = self._get_store()
            # Take the refresh lock so a refresh in flight cannot land on top of the new pair.
            owner = self._wait_for_lock(store)
            try:
                stored = store.write(record.model_copy(update={"moved_from": None}))
            finally:
                if owner is not None:
                    self._release(store, owner)
            self._cache = stored
            self._unsaved = self._unsaved_spent = None
        log.info("amoCRM connected: token pair stored (version %s)", stored.version)
        return stored

    def refresh_if_older_than(self, max_age_s: float) -> dict[str, Any]:
        """Keepalive: rotate the pair if it was issued more than `max_age_s` ago (or is near
        expiry), so the refresh token never reaches its 3-month limit. Plain JSON result."""

        def stale(r: TokenRecord | None) -> bool:
            return (
                r is None or not self._fresh(r) or self._clock() - r.last_rotated_at() >= max_age_s
            )

        with self._mutex:
            self._flush_unsaved()
            record = self._get_store().read()
            refreshed = False
            if record is not None and not stale(record):
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
        """The stored pair if it is good, else a refreshed one. Call with the mutex held."""
        self._flush_unsaved()
        record = self._get_store().read()
        if record is not None and not stale(record):
            self._accept(record)
            return record
        record, _ = self._single_flight(stale)
        return record

    def _single_flight(self, stale: Stale) -> tuple[TokenRecord, bool]:
        store = self._get_store()
        deadline = self._clock() + self.wait_timeout_s
        while True:
            owner = store.acquire_lock(self.lock_ttl_ms)
            if owner is not None:
                try:
                    return self._refresh_locked(store, stale)
                finally:
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
        if record is None:
            new = self._seed()
        elif not stale(record):
            self._accept(record)
            return record, False
        else:
            new, changed = self._rotate(store, record)
            if not changed:
                self._accept(new)
                return new, False
        stored = self._persist(store, new, None if record is None else _value(record.refresh_token))
        self._accept(stored)
        log.info(
            "amoCRM token pair refreshed (version %s, expires at %s)",
            stored.version,
            stored.expires_at,
        )
        return stored, True

    def _seed(self) -> TokenRecord:
        seed = self._settings.amocrm_refresh_token
        if seed is None:
            raise ReconnectRequired(
                f"amoCRM is not connected: the token store ({self._get_store().describe()}) "
                f"holds no tokens; {RECONNECT}"
            )
        log.info("token store is empty: seeding it once from AMOCRM_REFRESH_TOKEN")
        try:
            return self._oauth.refresh(seed, self._settings.amocrm_host)
        except RefreshTokenRevoked:
            raise ReconnectRequired(
                "AMOCRM_REFRESH_TOKEN was refused as already used or revoked (refresh tokens "
                f"are single-use); remove it and {RECONNECT}"
            ) from None

    def _rotate(self, store: TokenStore, record: TokenRecord) -> tuple[TokenRecord, bool]:
        """(record, True) for a new pair to persist; (record, False) for one already stored."""
        host = self._host_of(record)
        try:
            return self._carry(self._oauth.refresh(record.refresh_token, host), record), True
        except AccountMaybeMoved:
            moved = self._refresh_at_moved_host(record)
            if moved is None:
                raise
            return moved, True
        except RefreshTokenRevoked:
            pass
        # "Token has been revoked": most often someone else already rotated this pair (an
        # instance whose lease ran out, a reconnect). Look once more before giving up.
        log.warning("amoCRM refused the stored refresh token as spent; re-reading the store")
        again = store.read()
        if again is not None and _value(again.refresh_token) != _value(record.refresh_token):
            if self._fresh(again):
                return again, False
            try:
                new = self._oauth.refresh(again.refresh_token, self._host_of(again))
            except RefreshTokenRevoked:
                raise self._revoked_error() from None
            return self._carry(new, again), True
        moved = self._refresh_at_moved_host(record)
        if moved is not None:
            return moved, True
        raise self._revoked_error()

    def _refresh_at_moved_host(self, record: TokenRecord) -> TokenRecord | None:
        new_host = self._oauth.discover_moved_host(record.access_token, record.refresh_token)
        if new_host is None or new_host == record.host or not is_account_host(new_host):
            return None
        log.warning(
            "amoCRM reports the account moved from %s to %s; update AMOCRM_SUBDOMAIN and "
            "AMOCRM_BASE_DOMAIN",
            record.host,
            new_host,
        )
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

    def _revoked_error(self) -> ReconnectRequired:
        return ReconnectRequired(
            "amoCRM refused the stored refresh token as already used or revoked, and the store "
            f"holds no newer one; the connection must be renewed: {RECONNECT}"
        )

    def _persist(self, store: TokenStore, new: TokenRecord, spent: str | None) -> TokenRecord:
        """Write the rotated pair before anyone uses it. The old refresh token is already dead,
        so a failed write is retried, and if it keeps failing the pair stays in memory."""
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                return store.write(new)
            except Exception as exc:
                log.error(
                    "could not save the rotated amoCRM token pair (attempt %d/%d): %s",
                    attempt,
                    attempts,
                    type(exc).__name__,
                )
                if attempt < attempts:
                    self._sleep(self.poll_interval_s)
        self._unsaved, self._unsaved_spent = new, spent
        raise UpstreamUnavailable(
            SERVICE,
            "amoCRM issued a new token pair but the token store refused the write; this "
            "instance keeps it in memory and saves it on its next call (see "
            "docs/token-rotation.md)",
        )

    def _flush_unsaved(self) -> None:
        if self._unsaved is None:
            return
        store = self._get_store()
        current = store.read()
        if current is None or _value(current.refresh_token) == self._unsaved_spent:
            stored = store.write(self._unsaved)
            self._accept(stored)
            log.info("saved the rotated amoCRM pair held in memory (version %s)", stored.version)
        else:
            log.warning("dropping the unsaved amoCRM pair: the store was updated meanwhile")
        self._unsaved = self._unsaved_spent = None

    # ---- helpers ---------------------------------------------------------------------------
    def _fresh(self, record: TokenRecord) -> bool:
        return not record.expires_within(self.margin_s, self._clock())

    def _carry(self, new: TokenRecord, old: TokenRecord) -> TokenRecord:
        return new.model_copy(update={"obtained_at": old.obtained_at, "moved_from": old.moved_from})

    def _host_of(self, record: TokenRecord) -> str:
        configured = self._settings.amocrm_host
        if record.host == configured:
            return configured
        if record.moved_from == configured and is_account_host(record.host):
            return record.host
        raise ReconnectRequired(
            f"the stored amoCRM tokens belong to {record.host}, but this deployment serves "
            f"{configured} (AMOCRM_SUBDOMAIN / AMOCRM_BASE_DOMAIN); {RECONNECT}"
        )

    def _accept(self, record: TokenRecord) -> None:
        self._host_of(record)
        self._cache = record

    def _get_store(self) -> TokenStore:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def _wait_for_lock(self, store: TokenStore) -> str | None:
        deadline = self._clock() + self.wait_timeout_s
        while True:
            owner = store.acquire_lock(self.lock_ttl_ms)
            if owner is not None or self._clock() >= deadline:
                if owner is None:
                    log.warning("refresh lock still held; storing the new pair without it")
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
