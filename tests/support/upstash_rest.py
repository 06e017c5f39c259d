"""Upstash's REST protocol in front of any redis-py client: the one translation both KV fakes use.

`UpstashRestServer` is a WSGI app; a subclass says where commands run (`backend()`):
`tests.support.kvshim.KVShim` over fakeredis in-process, `tests.support.redis_shim.RedisRestShim`
over a real `redis-server`. What it serves (reference vercel-kv.md §B6, TL;DR 12):
- auth by `Authorization: Bearer <token>` or `?_token=<token>`; 401 `WRONGPASS ...` otherwise;
- `POST /` with a JSON array body (body form); `GET|POST /cmd/arg/...` (path form: a POST body
  is one more argument, query parameters come after it); `/pipeline` (in order, not atomic) and
  `/multi-exec` (atomic) with an array of arrays, answered by an array of `{result|error}`;
- HEAD/GET/POST/PUT only; 405 for any other method;
- `{"result": ...}` with Redis' own reply shapes: "OK"/"PONG" strings, integers (EXPIRE's 1/0),
  nil as null, flat arrays (HGETALL is `[field, value, ...]`), bulk strings as UTF-8 text with
  U+FFFD for bad bytes, or base64 under `Upstash-Encoding: base64` (all but the literal "OK");
  `Upstash-Response-Format: resp2` answers raw RESP2;
- 400 `{"error": "ERR ..."}` for a failed or unsupported command;
- an `Upstash-Sync-Token` header on every answer (read-your-writes; see `_sync_token`).

redis-py's response callbacks are switched off on the backend client, so replies arrive as the
server sent them, not as Python conveniences (True for OK, dicts for HGETALL).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis
from redis._parsers.base import BaseParser
from werkzeug.wrappers import Request, Response

SHIM_TOKEN = "kv-shim-token-SECRET-5555"
Command = list[Any]
ALLOWED_METHODS = ("HEAD", "GET", "POST", "PUT")
BATCH_PATHS = ("/pipeline", "/multi-exec")
# Not available over REST (reference §B6 "Unsupported over REST"): blocking commands,
# optimistic locking, cluster, and connection commands other than PING/ECHO.
UNSUPPORTED = frozenset({
    "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP",
    "WATCH", "UNWATCH", "DISCARD", "MULTI", "EXEC",
    "CLUSTER", "ASKING", "READONLY", "READWRITE",
    "AUTH", "HELLO", "SELECT", "QUIT", "RESET", "CLIENT", "SWAPDB",
    "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
    "MONITOR",
})  # fmt: skip
# Documented as server-sent events (`/monitor`, `/subscribe/<channel>`); the product never
# streams, so this fake says so plainly instead of guessing the event format.
STREAMING_PATHS = ("monitor", "subscribe")
# ASSUMPTION (the reference names no 5xx): while the database behind the REST endpoint is down
# or restarting, a command cannot execute, which the reference answers with 400 and an error.
# Redis' own word for "just restarted, not ready" is LOADING, so that is the message.
BACKEND_DOWN_ERROR = "LOADING Redis is loading the dataset in memory"
# redis-py strips these prefixes off the message and encodes them as the exception class.
_PREFIX_OF: dict[type, str] = {
    cls: prefix for prefix, cls in BaseParser.EXCEPTION_CLASSES.items() if isinstance(cls, type)
}
# Redis' simple-string replies, which RESP2 sends as `+...` (redis-py cannot tell them apart
# from a bulk string with the same text; these are the ones our commands produce).
_SIMPLE_STRINGS = frozenset({b"OK", b"PONG", b"QUEUED"})


class RestError(Exception):
    """A request the REST layer refuses before any command runs: status plus message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Discarded(Exception):
    """The whole transaction was thrown away: a single `{"error"}` object answers it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Reply:
    """One command's answer: a raw redis value or an error message."""

    value: Any = None
    error: str | None = None


@dataclass
class UpstashRestServer:
    token: str = SHIM_TOKEN
    commands: list[Command] = field(default_factory=list)  # every command that was run
    sync_tokens_seen: list[str] = field(default_factory=list)  # Upstash-Sync-Token requests
    url: str = ""
    # Called with each command before it runs (a test's slow KV: advance a fake clock there).
    before_command: Callable[[Command], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sync_seq: int = 0

    def backend(self) -> redis.Redis:
        """A client whose response callbacks are off (see `raw_client`)."""
        raise NotImplementedError

    def app(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        response = self._handle(request)
        return response(environ, start_response)

    # ---- the request -----------------------------------------------------------------------
    def _handle(self, request: Request) -> Response:
        try:
            self._authorize(request)
            resp2 = _wants_resp2(request)
            path, commands = parse_commands(request)
        except RestError as exc:
            return json_response({"error": exc.message}, exc.status)
        self._note(request, commands)
        try:
            if path == "/multi-exec":
                replies = self._transaction(commands)
            else:
                replies = [self._run(command) for command in commands]
        except Discarded as exc:
            return self._answer({"error": exc.message}, 400)
        whole = replies[0] if path not in BATCH_PATHS else None
        if resp2:
            return self._answer_resp2(replies, whole)
        encode_b64 = request.headers.get("Upstash-Encoding", "").lower() == "base64"
        if whole is not None:
            status = 400 if whole.error is not None else 200
            return self._answer(_envelope(whole, encode_b64), status)
        return self._answer([_envelope(r, encode_b64) for r in replies], 200)

    def _note(self, request: Request, commands: list[Command]) -> None:
        seen = request.headers.get("Upstash-Sync-Token")
        with self._lock:
            if seen:
                # One node: every write is already visible, so there is nothing to wait for.
                self.sync_tokens_seen.append(seen)
            self.commands.extend(commands)

    def _authorize(self, request: Request) -> None:
        if request.method not in ALLOWED_METHODS:
            raise RestError(405, f"ERR method {request.method} is not allowed")
        header = request.headers.get("Authorization")
        given = header.removeprefix("Bearer ") if header else request.args.get("_token")
        if given != self.token:
            raise RestError(401, "WRONGPASS invalid or missing auth token")

    # ---- running commands ------------------------------------------------------------------
    def _run(self, command: Command) -> Reply:
        name = str(command[0]).upper()
        if name in UNSUPPORTED:
            return Reply(error=f"ERR command is not available over REST: '{name.lower()}'")
        if self.before_command is not None:
            self.before_command(command)
        try:
            return Reply(self.backend().execute_command(*command))
        except (redis.ConnectionError, redis.TimeoutError):
            return Reply(error=BACKEND_DOWN_ERROR)
        except redis.ResponseError as exc:
            return Reply(error=error_text(exc))

    def _transaction(self, commands: list[Command]) -> list[Reply]:
        unsupported = [c for c in commands if str(c[0]).upper() in UNSUPPORTED]
        if unsupported:
            raise Discarded(f"ERR {unsupported[0][0]} is not allowed in a transaction")
        pipe = self.backend().pipeline(transaction=True)
        for command in commands:
            pipe.execute_command(*command)
        try:
            results = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError):
            raise Discarded(BACKEND_DOWN_ERROR) from None
        except redis.ResponseError as exc:  # a syntax error: Redis discards the whole block
            reason = error_text(exc)
            raise Discarded(f"EXECABORT Transaction discarded because of: {reason}") from None
        return [
            Reply(error=error_text(r)) if isinstance(r, redis.ResponseError) else Reply(r)
            for r in results
        ]

    # ---- answers ---------------------------------------------------------------------------
    def _answer(self, body: Any, status: int) -> Response:
        response = json_response(body, status)
        response.headers["Upstash-Sync-Token"] = self._sync_token()
        return response

    def _answer_resp2(self, replies: list[Reply], whole: Reply | None) -> Response:
        items = [whole] if whole is not None else replies
        payload = b"".join(resp2(r) for r in items)
        status = 400 if whole is not None and whole.error is not None else 200
        response = Response(payload, status=status, content_type="text/plain")
        response.headers["Upstash-Sync-Token"] = self._sync_token()
        return response

    def _sync_token(self) -> str:
        """The replication position after this request: it only grows (opaque to clients,
        who echo the last one back as a request header)."""
        with self._lock:
            self._sync_seq += 1
            return f"sync-{self._sync_seq}"


def raw_client(client: redis.Redis) -> redis.Redis:
    """Switch off redis-py's response callbacks: replies come back as Redis sent them."""
    client.response_callbacks.clear()
    return client


# ---- parsing -------------------------------------------------------------------------------
def parse_commands(request: Request) -> tuple[str, list[Command]]:
    """(route, commands): `/` and a path-form command give one command, the batch paths many."""
    path = request.path.rstrip("/") or "/"
    if path in BATCH_PATHS:
        body = _json_body(request)
        if not isinstance(body, list) or not body:
            raise RestError(400, "ERR the body must be a non-empty array of commands")
        return path, [_checked(command) for command in body]
    if path == "/":
        if not request.get_data():
            raise RestError(400, 'ERR no command: POST a JSON array such as ["PING"]')
        return path, [_checked(_json_body(request))]
    return "path", [_path_command(request)]


def _json_body(request: Request) -> Any:
    # SRH (the emulator Upstash recommends) insists on this content type; stricter than
    # strictly needed, it keeps the product honest about sending JSON.
    if request.mimetype != "application/json":
        raise RestError(400, "ERR content type must be application/json")
    try:
        return json.loads(request.get_data())
    except ValueError:
        raise RestError(400, "ERR failed to parse the JSON body") from None


def _checked(command: Any) -> Command:
    if not isinstance(command, list) or not command:
        raise RestError(400, "ERR a command must be a non-empty array")
    for arg in command:
        if isinstance(arg, bool) or not isinstance(arg, str | int | float):
            raise RestError(400, f"ERR arguments must be strings or numbers, not {arg!r}")
    return command


def _path_command(request: Request) -> Command:
    """`/set/foo/bar?EX=100`: one argument per raw path segment (each percent-decoded, so
    `%2F` stays inside its segment), then a POST/PUT body, then the query parameters."""
    raw = str(request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or "")
    raw_path = raw.split("?", 1)[0] or request.path
    segments = [unquote(s) for s in raw_path.strip("/").split("/")]
    if segments[0].lower() in STREAMING_PATHS:
        raise RestError(
            501, f"ERR /{segments[0]} (server-sent events) is not implemented by this fake"
        )
    command: Command = list(segments)
    body = request.get_data()
    if request.method in ("POST", "PUT") and body:
        command.append(body.decode("utf-8", errors="replace"))
    for key, value in request.args.items(multi=True):
        if key != "_token":
            command.extend([key, value] if value != "" else [key])
    return command


def _wants_resp2(request: Request) -> bool:
    if request.headers.get("Upstash-Response-Format", "").lower() != "resp2":
        return False
    if request.headers.get("Upstash-Encoding", "").lower() == "base64":
        raise RestError(400, "ERR resp2 response format cannot be combined with base64")
    if request.path.rstrip("/") == "/multi-exec":
        raise RestError(400, "ERR resp2 response format is not supported for /multi-exec")
    return True


# ---- encoding ------------------------------------------------------------------------------
def error_text(exc: redis.ResponseError) -> str:
    """The error line as Redis sent it: redis-py strips `ERR ` (and turns NOSCRIPT & co. into
    exception classes); put the prefix back."""
    prefix = _PREFIX_OF.get(type(exc))
    message = str(exc)
    if prefix is not None:
        return f"{prefix} {message}"
    first = message.split(" ", 1)[0]
    return message if first.isalpha() and first.isupper() else f"ERR {message}"


def to_wire(value: Any, *, encode_b64: bool = False) -> Any:
    """A raw redis reply as Upstash's JSON: text (or base64) for bulk strings, nested lists."""
    if isinstance(value, bytes):
        if encode_b64 and value != b"OK":
            return base64.b64encode(value).decode("ascii")
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return to_wire(value.encode("utf-8"), encode_b64=encode_b64)
    if isinstance(value, dict):  # fakeredis answers HGETALL & co. as a dict; RESP2 is flat
        return [to_wire(x, encode_b64=encode_b64) for pair in value.items() for x in pair]
    if isinstance(value, list | tuple):
        return [to_wire(x, encode_b64=encode_b64) for x in value]
    return value


def _envelope(reply: Reply, encode_b64: bool) -> dict[str, Any]:
    if reply.error is not None:
        return {"error": reply.error}
    return {"result": to_wire(reply.value, encode_b64=encode_b64)}


def resp2(reply: Reply | Any) -> bytes:
    """RESP2 bytes for one reply (`Upstash-Response-Format: resp2`)."""
    if isinstance(reply, Reply):
        if reply.error is not None:
            return f"-{reply.error}\r\n".encode()
        reply = reply.value
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, int):
        return f":{reply}\r\n".encode()
    if isinstance(reply, str):
        reply = reply.encode("utf-8")
    if isinstance(reply, bytes):
        if reply in _SIMPLE_STRINGS:
            return b"+" + reply + b"\r\n"
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    if isinstance(reply, dict):
        reply = [x for pair in reply.items() for x in pair]
    items = list(reply)
    return b"*%d\r\n" % len(items) + b"".join(resp2(x) for x in items)


def json_response(body: Any, status: int) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
