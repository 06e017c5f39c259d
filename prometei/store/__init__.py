"""Token store: Vercel KV over REST when configured, else a local file (the embedded default).

`build_store(settings)` picks one; `prometei.tokens` uses it through the `TokenStore` protocol.
`build_state_store(settings)` gives the small shared values that live in the same place
(`StateStore`: cursors, lead -> record ids, single-use nonces).
"""

from __future__ import annotations

from prometei.config import Settings
from prometei.errors import ConfigError
from prometei.store.base import StateStore, StoreCorrupt, TokenRecord, TokenStore

__all__ = [
    "StateStore",
    "StoreCorrupt",
    "TokenRecord",
    "TokenStore",
    "build_state_store",
    "build_store",
]


def build_store(settings: Settings) -> TokenStore:
    """The configured token store.

    KV when KV_REST_API_URL/KV_REST_API_TOKEN (or the UPSTASH_* pair) are set; otherwise the
    file store under PROMETEI_STATE_DIR, which is refused on Vercel unless a long-lived token
    makes the store unnecessary.
    """
    if settings.kv_rest_api_url and settings.kv_rest_api_token:
        from prometei.store.kv import KVClient, KVTokenStore

        return KVTokenStore(KVClient(settings.kv_rest_api_url, settings.kv_rest_api_token))
    if settings.on_vercel and not settings.uses_long_lived_token:
        raise ConfigError(
            "no token store on Vercel: its filesystem is neither shared between instances nor "
            "persistent, so rotated amoCRM refresh tokens would be lost. Connect a KV store "
            "(Vercel → Storage → Upstash for Redis) so KV_REST_API_URL and KV_REST_API_TOKEN "
            "are set, or set AMOCRM_ACCESS_TOKEN to a long-lived token"
        )
    from prometei.store.file import FileTokenStore

    return FileTokenStore(settings.prometei_state_dir)


def build_state_store(
    settings: Settings, *, timeout: tuple[float, float] | None = None
) -> StateStore:
    """Where shared state lives: KV when configured, else the local state folder. `timeout`
    (connect, read) bounds each KV command instead of the client's default.

    On Vercel without KV there is nowhere shared to keep it, so this raises `ConfigError`;
    callers that can live without state catch it and say what they lose.
    """
    if settings.kv_rest_api_url and settings.kv_rest_api_token:
        from prometei.store.kv import KVClient, KVStateStore

        client = KVClient(settings.kv_rest_api_url, settings.kv_rest_api_token)
        return KVStateStore(client, timeout=timeout)
    if settings.on_vercel:
        raise ConfigError(
            "no shared state store on Vercel: its filesystem is neither shared between "
            "instances nor persistent. Connect a KV store (Vercel → Storage → Upstash for Redis) "
            "so KV_REST_API_URL and KV_REST_API_TOKEN are set"
        )
    from prometei.store.file import FileStateStore

    return FileStateStore(settings.prometei_state_dir)
