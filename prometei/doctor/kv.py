"""The kv row: Vercel KV answers PING and accepts a write with the configured token."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometei.config import Settings
from prometei.doctor.check import Check, fail, ok, skip
from prometei.errors import PrometeiError, UpstreamAuthError, UpstreamUnavailable

KV_PROBE_KEY = "prometei:doctor:probe"


def check_kv(settings: Settings, *, now: Callable[[], float] = time.time) -> Check:
    """PING, then a short-lived write (a read-only token passes PING but cannot store tokens)."""
    name = "kv"
    if settings.kv_rest_api_url is None or settings.kv_rest_api_token is None:
        return _kv_not_configured(settings)

    from prometei.store.kv import KVClient

    client = KVClient(settings.kv_rest_api_url, settings.kv_rest_api_token)
    url_fix = "check KV_REST_API_URL: it must be the store's REST URL https://<name>.upstash.io"
    try:
        pong = client.command("PING")
        if pong != "PONG":
            return fail(name, f"PING answered {str(pong)[:40]!r}, not PONG", url_fix)
        client.command("SET", KV_PROBE_KEY, str(int(now())), "EX", 60)
    except PrometeiError as exc:
        if isinstance(exc, UpstreamAuthError) and "not permitted" in exc.message:
            fix = "use the read-write KV_REST_API_TOKEN, not the read-only token"
        elif isinstance(exc, UpstreamAuthError):
            fix = (
                "copy KV_REST_API_TOKEN again from Vercel -> Storage -> your store "
                "(or the Upstash console), then run doctor again"
            )
        elif isinstance(exc, UpstreamUnavailable):
            fix = f"check network access to {client.host} and KV_REST_API_URL"
        else:
            fix = url_fix
        return fail(name, exc.message, fix)
    return ok(name, f"{client.host} answered PING and accepted a write")


def _kv_not_configured(settings: Settings) -> Check:
    if settings.on_vercel and not settings.uses_long_lived_token:
        return fail(
            "kv",
            "no KV store on Vercel: rotated OAuth tokens would be lost between instances",
            "connect a KV store (Vercel -> Storage -> Upstash for Redis) so KV_REST_API_URL "
            "and KV_REST_API_TOKEN are set, or use AMOCRM_ACCESS_TOKEN",
        )
    where = (
        "not needed with a long-lived token"
        if settings.uses_long_lived_token
        else f"tokens kept in the local file store {settings.prometei_state_dir}"
    )
    return skip("kv", f"not configured; {where}")
