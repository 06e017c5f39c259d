"""The amoCRM access token every API call uses, and its rotation.

`build_token_source(settings, store_factory)` returns:
- `StaticTokenSource` when AMOCRM_ACCESS_TOKEN (a long-lived token) is set: no store, no refresh;
- `OAuthTokenProvider` otherwise: the OAuth pair from the token store, refreshed ahead of expiry.

amoCRM refresh tokens are single-use and rotate on every refresh (reference amocrm.md §2.5), so
one refresh at a time across all threads, processes and Vercel instances, and every new pair is
stored before anyone uses it. The package is split along that seam:
- `sources`: the protocols other code uses, and the long-lived token source;
- `lease`: who may refresh now (the store's lease lock, renewed while held, released with
  retries) and how long everyone else waits (one limit, threads included);
- `rotation` (+ `markers`): what to do with what the store holds: when to refresh, what a
  refusal means, how a new pair is persisted, offered as pending and adopted;
- `provider`: `OAuthTokenProvider`, the glue and the cache.
The invariants and the numbers are in docs/token-rotation.md.
"""

from __future__ import annotations

from collections.abc import Callable

from prometei.amocrm.oauth import OAuthClient
from prometei.config import Settings
from prometei.store.base import TokenStore
from prometei.tokens.lease import LEASE_TTL_MS, WAIT_LIMIT_S
from prometei.tokens.provider import OAuthTokenProvider
from prometei.tokens.rotation import PERSIST_WINDOW_S
from prometei.tokens.sources import (
    CONNECT_LOCK_WAIT_S,
    RECONNECT,
    SERVICE,
    AccessTokenSource,
    ManagedTokenSource,
    RefreshInProgress,
    StaticTokenSource,
)

LOCK_TTL_MS = LEASE_TTL_MS  # the old name

__all__ = [
    "CONNECT_LOCK_WAIT_S",
    "LEASE_TTL_MS",
    "LOCK_TTL_MS",
    "PERSIST_WINDOW_S",
    "RECONNECT",
    "SERVICE",
    "WAIT_LIMIT_S",
    "AccessTokenSource",
    "ManagedTokenSource",
    "OAuthTokenProvider",
    "RefreshInProgress",
    "StaticTokenSource",
    "build_token_source",
]


def build_token_source(
    settings: Settings, store_factory: Callable[[], TokenStore]
) -> StaticTokenSource | OAuthTokenProvider:
    """Long-lived token when AMOCRM_ACCESS_TOKEN is set (the store is never touched), else
    the OAuth provider (ConfigError naming AMOCRM_CLIENT_ID/SECRET/REDIRECT_URI if missing)."""
    if settings.uses_long_lived_token:
        return StaticTokenSource(settings)
    return OAuthTokenProvider(settings, store_factory, OAuthClient.from_settings(settings))
