"""A test-only Upstash REST server over fakeredis (with Lua), on 127.0.0.1.

It speaks the shapes of reference vercel-kv.md §B6: `POST /` with a JSON array body and
`Authorization: Bearer <token>`; 200 `{"result": ...}`; 400 `{"error": "ERR ..."}` when a
command fails; 401 `{"error": "WRONGPASS ..."}` for a bad token. redis-py turns `OK` into
`True` and drops the `ERR ` prefix: both are mapped back. It is a real HTTP server, so other
processes can use it too (pass them `url` and `token`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import redis
from werkzeug.wrappers import Request, Response

from tests.support.loopback import serving

SHIM_TOKEN = "kv-shim-token-SECRET-5555"


def _to_wire(value: Any) -> Any:
    if value is True:
        return "OK"
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple):
        return [_to_wire(v) for v in value]
    return value


@dataclass
class KVShim:
    token: str = SHIM_TOKEN
    server: fakeredis.FakeServer = field(default_factory=fakeredis.FakeServer)
    commands: list[list[Any]] = field(default_factory=list)
    url: str = ""
    # Called with each command before it runs (a test's slow KV: advance a fake clock there).
    before_command: Callable[[list[Any]], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def redis(self) -> fakeredis.FakeStrictRedis:
        """Direct access for assertions and setup (same data the HTTP side sees)."""
        return fakeredis.FakeStrictRedis(server=self.server, decode_responses=True)

    def app(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        response = self._handle(request)
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:  # noqa: PLR0911 - one per Upstash answer
        if request.method != "POST" or request.path != "/":
            return _json({"error": "ERR only POST / is emulated"}, 405)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json({"error": "WRONGPASS invalid or missing auth token"}, 401)
        if request.mimetype != "application/json":
            return _json({"error": "ERR content type must be application/json"}, 400)
        try:
            command = json.loads(request.get_data())
        except ValueError:
            return _json({"error": "ERR failed to parse command"}, 400)
        if not isinstance(command, list) or not command:
            return _json({"error": "ERR command must be a non-empty array"}, 400)
        with self._lock:
            self.commands.append(command)
        if self.before_command is not None:
            self.before_command(command)
        client = self.redis
        try:
            result = client.execute_command(*[str(a) for a in command])
        except redis.ResponseError as exc:
            message = str(exc)
            if not message.split(" ", 1)[0].isupper():
                message = "ERR " + message
            return _json({"error": message}, 400)
        return _json({"result": _to_wire(result)}, 200)


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


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
