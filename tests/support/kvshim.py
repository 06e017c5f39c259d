"""A test-only Upstash REST server over fakeredis (with Lua), on 127.0.0.1.

The protocol (reference vercel-kv.md §B6) lives in `tests.support.upstash_rest`, shared with
the real-Redis shim; this class only says where commands run: an in-process fakeredis server.
It is a real HTTP server, so other processes can use it too (pass them `url` and `token`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import fakeredis
import redis

from tests.support.loopback import serving
from tests.support.upstash_rest import SHIM_TOKEN, UpstashRestServer, raw_client

__all__ = ["SHIM_TOKEN", "KVShim", "oauth_kv_env", "running_shim"]


@dataclass
class KVShim(UpstashRestServer):
    server: fakeredis.FakeServer = field(default_factory=fakeredis.FakeServer)
    _raw: redis.Redis | None = None

    @property
    def redis(self) -> fakeredis.FakeStrictRedis:
        """Direct access for assertions and setup (same data the HTTP side sees)."""
        return fakeredis.FakeStrictRedis(server=self.server, decode_responses=True)

    def backend(self) -> redis.Redis:
        if self._raw is None:
            self._raw = raw_client(fakeredis.FakeStrictRedis(server=self.server))
        return self._raw


@contextmanager
def running_shim(token: str = SHIM_TOKEN) -> Iterator[KVShim]:
    """Start a shim on an ephemeral loopback port in a thread; stop it afterwards."""
    shim = KVShim(token=token)
    with serving(shim.app, "kv-shim") as url:
        shim.url = url
        yield shim


def oauth_kv_env(shim: KVShim, client_secret: str) -> dict[str, str | None]:
    """OAuth mode with this shim as the KV store: the variables for the `set_env` fixture."""
    return {
        "AMOCRM_ACCESS_TOKEN": None,
        "AMOCRM_CLIENT_ID": "client-id-1",
        "AMOCRM_CLIENT_SECRET": client_secret,
        "AMOCRM_REDIRECT_URI": "https://prometei.example.test/api/oauth/callback",
        "KV_REST_API_URL": shim.url,
        "KV_REST_API_TOKEN": shim.token,
    }
