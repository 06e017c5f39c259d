"""What the rest of the project sees of amoCRM tokens: the two protocols, and the long-lived
token source that needs no store. The OAuth provider lives in `prometei.tokens.provider`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import SecretStr

from prometei.config import Settings
from prometei.errors import ConfigError, UpstreamUnavailable
from prometei.store.base import TokenRecord

log = logging.getLogger("prometei.tokens")

SERVICE = "amocrm-token"
RECONNECT = "open /api/oauth/callback and click Connect amoCRM"
# How long the connect page waits for the refresh lock before answering "refresh in progress"
# without spending the code. The page's whole time budget (maxDuration 30 s) is kept by
# `prometei.web.connect_budget`, which sends the code only while the exchange and both write
# attempts still fit (docs/token-rotation.md, "Connect page").
CONNECT_LOCK_WAIT_S = 4.0
# The pause between the two write attempts of a freshly exchanged pair.
EXCHANGE_WRITE_PAUSE_S = 0.2
EXCHANGE_WRITE_ATTEMPTS = 2


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
        self,
        exchange: Callable[[], TokenRecord],
        *,
        lock_wait_s: float = ...,
        time_left: Callable[[], float] | None = ...,
    ) -> TokenRecord: ...

    def refresh_if_older_than(self, max_age_s: float) -> dict[str, Any]: ...


def secret_value(secret: SecretStr) -> str:
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
        return secret_value(self._token)

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
        self,
        exchange: Callable[[], TokenRecord],
        *,
        lock_wait_s: float = CONNECT_LOCK_WAIT_S,
        time_left: Callable[[], float] | None = None,
    ) -> TokenRecord:
        return self._refuse_oauth()

    def _refuse_oauth(self) -> TokenRecord:
        raise ConfigError(
            "AMOCRM_ACCESS_TOKEN is set, so OAuth tokens would never be used; unset it to "
            "connect through OAuth"
        )

    def refresh_if_older_than(self, max_age_s: float) -> dict[str, Any]:
        return {"refreshed": False, "expires_at": None, "reason": "long-lived token"}
