"""Process entry points for the cross-process token tests (multiprocessing 'spawn').

Each worker builds its own settings, store, OAuth client and provider, exactly like a separate
Vercel instance would, and talks HTTP to the KV shim and the fake amoCRM token endpoint.
"""

from __future__ import annotations

import os
from typing import Any

from prometei.amocrm.oauth import OAuthClient
from prometei.config import settings_from_mapping
from prometei.store.base import TokenRecord, TokenStore
from prometei.store.file import FileTokenStore
from prometei.store.kv import KVClient, KVTokenStore
from prometei.tokens import OAuthTokenProvider
from tests.support.fake_amo_oauth import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, loopback_session

HOST = "example.amocrm.ru"
OAUTH_ENV = {
    "AMOCRM_SUBDOMAIN": "example",
    "AMOCRM_CLIENT_ID": CLIENT_ID,
    "AMOCRM_CLIENT_SECRET": CLIENT_SECRET,
    "AMOCRM_REDIRECT_URI": REDIRECT_URI,
}


def build_store(params: dict[str, Any]) -> TokenStore:
    if params["store"] == "kv":
        return KVTokenStore(KVClient(params["kv_url"], params["kv_token"]))
    return FileTokenStore(params["state_dir"])


def build_provider(params: dict[str, Any], store: TokenStore, **kw: Any) -> OAuthTokenProvider:
    settings = settings_from_mapping(OAUTH_ENV)
    oauth = OAuthClient.from_settings(settings, session=loopback_session(HOST, params["amo_url"]))
    kw.setdefault("poll_interval_s", 0.02)
    kw.setdefault("lock_ttl_ms", 10_000)
    kw.setdefault("wait_timeout_s", 20.0)
    return OAuthTokenProvider(settings, lambda: store, oauth, **kw)


def need_token(params: dict[str, Any], barrier: Any, results: Any) -> None:
    """Wait for the others, then ask for a token once; report it (or the error)."""
    try:
        store = build_store(params)
        provider = build_provider(params, store)
        barrier.wait(timeout=30)
        results.put(("ok", os.getpid(), provider.access_token()))
    except BaseException as exc:
        results.put(("error", os.getpid(), f"{type(exc).__name__}: {exc}"))


class _DieBeforeWrite:
    """A store whose write kills the process: amoCRM has answered, nothing is saved."""

    def __init__(self, inner: TokenStore) -> None:
        self._inner = inner
        self.kind = inner.kind

    def describe(self) -> str:
        return self._inner.describe()

    def read(self) -> TokenRecord | None:
        return self._inner.read()

    def read_state(self) -> Any:
        return self._inner.read_state()

    def put_marker(self, name: str, value: str | None, **kw: Any) -> bool:
        return self._inner.put_marker(name, value, **kw)

    def write(self, record: TokenRecord) -> TokenRecord:
        os._exit(17)  # like a Vercel instance killed at its time limit

    def write_if_version(self, record: TokenRecord, expected_version: int) -> TokenRecord | None:
        os._exit(17)

    def acquire_lock(self, ttl_ms: int, owner: str | None = None) -> str | None:
        return self._inner.acquire_lock(ttl_ms, owner)

    def renew_lock(self, owner: str, ttl_ms: int) -> bool:
        return self._inner.renew_lock(owner, ttl_ms)

    def release_lock(self, owner: str) -> bool:
        return self._inner.release_lock(owner)


def refresh_then_die(params: dict[str, Any]) -> None:
    store = _DieBeforeWrite(build_store(params))
    provider = build_provider(params, store, lock_ttl_ms=params["lock_ttl_ms"])
    provider.access_token()  # never returns


def hold_file_lock(state_dir: str, ttl_ms: int, results: Any, release: Any) -> None:
    """Take the file store's refresh lease, report, wait to be told, release it."""
    store = FileTokenStore(state_dir)
    owner = store.acquire_lock(ttl_ms)
    results.put(owner is not None)
    release.wait(timeout=30)
    results.put(store.release_lock(owner) if owner else False)


def take_file_lock_and_die(state_dir: str, ttl_ms: int) -> None:
    store = FileTokenStore(state_dir)
    if store.acquire_lock(ttl_ms) is None:
        os._exit(3)
    os._exit(0)
