"""An Upstash-REST server over a real `redis-server` (redis-py), with fault injection.

Same protocol as `tests.support.kvshim` (both serve `tests.support.upstash_rest`), with a real
Redis behind it, plus faults queued with `inject(kind, match, times, seconds)`:
- `refuse`: answer Upstash's quota error (HTTP 400 `ERR max requests limit exceeded`) without
  executing: a write the store refused;
- `delay`: wait `seconds`, then execute and answer;
- `drop`: execute, then cut the connection without an answer (the client cannot know it landed);
- `drip`: execute, then send the answer a byte every `seconds`.
While Redis is down (`RedisServer.restart()`), commands answer HTTP 400 `LOADING ...` (an
assumption, see `upstash_rest.BACKEND_DOWN_ERROR`: the reference documents no 5xx).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from werkzeug.wrappers import Request, Response

from tests.support.fake_amo_oauth import _drip
from tests.support.loopback import serving
from tests.support.redis_server import RedisServer
from tests.support.upstash_rest import (
    SHIM_TOKEN,
    RestError,
    UpstashRestServer,
    json_response,
    parse_commands,
    raw_client,
)

Command = list[Any]
QUOTA_ERROR = "ERR max requests limit exceeded. Limit: 1000, Usage: 1000"


def record_write(command: Command) -> bool:
    """The token pair's write (unconditional or compare-version): an EVAL that sets `record`."""
    return command[0] == "EVAL" and "'record'" in str(command[1])


def lock_release(command: Command) -> bool:
    return command[0] == "EVAL" and "'del'" in str(command[1]) and "refresh-lock" in str(command)


def token_read(command: Command) -> bool:
    return command[0] == "HMGET"


def any_command(command: Command) -> bool:
    return True


@dataclass
class Fault:
    kind: str
    match: Callable[[Command], bool]
    times: int
    seconds: float = 0.0


@dataclass
class RedisRestShim(UpstashRestServer):
    server: RedisServer | None = None
    faults: list[Fault] = field(default_factory=list)
    fired: list[tuple[str, str]] = field(default_factory=list)
    _client: redis.Redis | None = None
    _raw: redis.Redis | None = None

    @property
    def redis(self) -> redis.Redis:
        """Direct access for assertions and setup (decoded replies, redis-py conveniences)."""
        if self._client is None:
            assert self.server is not None
            self._client = self.server.client()
        return self._client

    def backend(self) -> redis.Redis:
        if self._raw is None:
            assert self.server is not None
            self._raw = raw_client(redis.Redis(host="127.0.0.1", port=self.server.port))
        return self._raw

    def close(self) -> None:
        for client in (self._client, self._raw):
            if client is not None:
                client.close()

    def inject(
        self,
        kind: str,
        match: Callable[[Command], bool] = any_command,
        *,
        times: int = 1,
        seconds: float = 0.0,
    ) -> None:
        assert kind in ("refuse", "delay", "drop", "drip")
        with self._lock:
            self.faults.append(Fault(kind, match, times, seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take_fault(self, command: Command) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times != 0 and fault.match(command):
                    fault.times -= 1
                    self.fired.append((fault.kind, str(command[0])))
                    return fault
        return None

    def _handle(self, request: Request) -> Response:
        try:
            _, commands = parse_commands(request)
        except RestError:
            commands = []  # the shared handler answers it
        fault = next((f for f in map(self._take_fault, commands) if f is not None), None)
        if fault is not None and fault.kind == "refuse":
            return json_response({"error": QUOTA_ERROR}, 400)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)  # the fault itself: a slow store
        response = super()._handle(request)
        if fault is not None and fault.kind == "drop":
            sock = request.environ.get("werkzeug.socket")
            if isinstance(sock, socket.socket):
                sock.shutdown(socket.SHUT_RDWR)  # executed, but the answer never arrives
            return response
        if fault is not None and fault.kind == "drip":
            return _drip(response, fault.seconds)
        return response


@contextmanager
def running_redis_shim(backend: RedisServer, token: str = SHIM_TOKEN) -> Iterator[RedisRestShim]:
    """Serve the shim on an ephemeral loopback port (threaded) in front of `backend`."""
    shim = RedisRestShim(token=token, server=backend)
    try:
        with serving(shim.app, "redis-rest-shim") as url:
            shim.url = url
            yield shim
    finally:
        shim.close()


def flush(backend: RedisServer) -> None:
    backend.client().flushall()
