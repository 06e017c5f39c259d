"""The HTTP side every fake shares: requests and replies without a transport, a route table,
a request log with monotonic timestamps, and fault injection.

A fake is a `FakeService` subclass that adds routes in `__init__`:

    class FakeThing(FakeService):
        def __init__(self) -> None:
            super().__init__()
            self.routes.add("GET", r"/api/v4/things/(?P<thing_id>\\d+)", self._thing)

        def _thing(self, request: FakeRequest, thing_id: str) -> Reply:
            return Reply.json({"id": int(thing_id)})

`service.handle(request)` is the whole server (call it directly in unit tests); `service.wsgi`
serves the same thing over real HTTP (`tests.support.loopback.LoopbackServer`), and
`service.install(mock, base_url)` answers a `responses` mock's requests to `base_url` with it. Every request is
logged (`service.log`) before anything else happens, faults included, so a test can count the
requests a client made and when it made them (`peak_rate` counts them in sliding windows).

Faults (`service.fail_next(...)`) are taken in order by the first matching request: a canned
`Reply` (a 429 with Retry-After, a 503, an HTML page, a 204), a delay (an answer slower than the
client's timeout), or both; `after_effect=True` lets the real handler run first, so its effect
lands and only the answer is lost.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from werkzeug.wrappers import Request, Response

HTML = "text/html; charset=UTF-8"


@dataclass(frozen=True)
class FakeRequest:
    """One request, as a fake sees it. `at` is `time.monotonic()` on arrival."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    at: float = field(default_factory=time.monotonic)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @classmethod
    def from_wsgi(cls, environ: dict[str, Any]) -> FakeRequest:
        request = Request(environ)
        return cls(
            method=request.method,
            path=request.path,
            query=parse_qs(request.query_string.decode("latin-1"), keep_blank_values=True),
            headers={name.lower(): value for name, value in request.headers.items()},
            body=request.get_data(),
        )


@dataclass(frozen=True)
class Reply:
    status: int
    body: str | bytes = ""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls,
        data: Any,
        status: int = 200,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        body = json.dumps(data, ensure_ascii=False)
        return cls(status, body, {"Content-Type": content_type, **(headers or {})})

    @classmethod
    def html(cls, body: str, status: int, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, body, {"Content-Type": HTML, **(headers or {})})

    @classmethod
    def empty(cls, status: int) -> Reply:
        return cls(status, "", {})

    def text(self) -> str:
        return self.body.decode("utf-8") if isinstance(self.body, bytes) else self.body


@dataclass
class LoggedRequest:
    """An entry of `FakeService.log`. `status` is filled in once the answer is known."""

    method: str
    path: str
    query: dict[str, list[str]]
    at: float
    status: int | None = None
    answered_at: float | None = None


@dataclass
class Fault:
    reply: Reply | None = None  # None: the real answer (use with delay_s)
    delay_s: float = 0.0
    after_effect: bool = False
    match: Callable[[FakeRequest], bool] | None = None

    def matches(self, request: FakeRequest) -> bool:
        return self.match is None or self.match(request)


Handler = Callable[..., Reply]


class Routes:
    """`(methods, path regex) -> handler(request, **named groups)`; first match wins.

    `methods` is one method or several joined by "|" ("GET|PUT")."""

    def __init__(self) -> None:
        self._routes: list[tuple[frozenset[str], re.Pattern[str], Handler]] = []

    def add(self, methods: str, pattern: str, handler: Handler) -> None:
        wanted = frozenset(m.strip().upper() for m in methods.split("|"))
        self._routes.append((wanted, re.compile(f"^{pattern}$"), handler))

    def dispatch(self, request: FakeRequest) -> Reply:
        allowed = False
        for methods, pattern, handler in self._routes:
            found = pattern.match(request.path)
            if found is None:
                continue
            if request.method not in methods:
                allowed = True
                continue
            return handler(request, **found.groupdict())
        if allowed:
            return Reply.json({"title": "Method Not Allowed", "status": 405}, 405)
        return Reply.json({"title": "Not Found", "status": 404, "detail": request.path}, 404)


class FakeService:
    """Base of every HTTP fake: route table, request log, fault queue, WSGI adapter."""

    def __init__(self) -> None:
        self.routes = Routes()
        self.log: list[LoggedRequest] = []
        self.faults: list[Fault] = []
        self._lock = threading.RLock()
        # Set on shutdown, so a held (slow) answer does not keep a server thread waiting.
        self.stopping = threading.Event()

    # ---- set-up ---------------------------------------------------------------------------
    def fail_next(
        self,
        reply: Reply | None = None,
        *,
        times: int = 1,
        delay_s: float = 0.0,
        after_effect: bool = False,
        match: Callable[[FakeRequest], bool] | None = None,
    ) -> None:
        """Queue a fault for the next `times` requests that `match` (default: any request)."""
        if reply is None and not delay_s:
            raise ValueError("a fault needs a reply, a delay, or both")
        with self._lock:
            self.faults.extend(Fault(reply, delay_s, after_effect, match) for _ in range(times))

    def reset(self) -> None:
        """Forget the log and every queued fault (state of the model is the subclass's)."""
        with self._lock:
            self.log.clear()
            self.faults.clear()

    # ---- handling ---------------------------------------------------------------------------
    def handle(self, request: FakeRequest) -> Reply:
        entry = LoggedRequest(request.method, request.path, request.query, request.at)
        with self._lock:
            self.log.append(entry)
            fault = next((f for f in self.faults if f.matches(request)), None)
            if fault is not None:
                self.faults.remove(fault)
        if fault is None:
            reply = self.respond(request)
        else:
            real = self.respond(request) if fault.after_effect or fault.reply is None else None
            if fault.delay_s:
                self.stopping.wait(fault.delay_s)
            reply = fault.reply or real
            assert reply is not None
        entry.status = reply.status
        entry.answered_at = time.monotonic()
        return reply

    def respond(self, request: FakeRequest) -> Reply:
        """The real answer; subclasses wrap it (locks, counters) when they need to."""
        return self.routes.dispatch(request)

    def responses_callback(
        self, clock: Callable[[], float] = time.monotonic
    ) -> Callable[[Any], tuple[int, dict[str, str], bytes]]:
        """This fake as a `responses` callback (`add_callback(method, url_regex, cb)`), for
        unit tests that run clients on a fake `clock`: the request log gets its timestamps."""

        def callback(prepared: Any) -> tuple[int, dict[str, str], bytes]:
            parts = urlsplit(prepared.url or "")
            body = prepared.body or b""
            request = FakeRequest(
                method=str(prepared.method),
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={name.lower(): value for name, value in prepared.headers.items()},
                body=body.encode() if isinstance(body, str) else body,
                at=clock(),
            )
            reply = self.handle(request)
            raw = reply.body.encode() if isinstance(reply.body, str) else reply.body
            return reply.status, dict(reply.headers), raw

        return callback

    def install(
        self, mock: Any, base_url: str, clock: Callable[[], float] = time.monotonic
    ) -> FakeService:
        """Answer every request to `base_url` (any method) that `responses` intercepts."""
        pattern = re.compile(re.escape(base_url.rstrip("/")) + r"(/.*)?$")
        callback = self.responses_callback(clock)
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            mock.add_callback(method, pattern, callback=callback)
        return self

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        reply = self.handle(FakeRequest.from_wsgi(environ))
        response = Response(reply.body, status=reply.status, headers=reply.headers)
        if "Content-Type" not in reply.headers:
            del response.headers["Content-Type"]
        return response(environ, start_response)

    # ---- reading the log --------------------------------------------------------------------
    def requests(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        """Logged requests, optionally only one method and/or one exact path."""
        with self._lock:
            return [
                entry
                for entry in self.log
                if (method is None or entry.method == method)
                and (path is None or entry.path == path)
            ]

    def peak_rate(
        self, window_s: float = 1.0, where: Callable[[LoggedRequest], bool] | None = None
    ) -> int:
        """The most requests (that pass `where`) that arrived within any `window_s` window."""
        times = sorted(e.at for e in self.requests() if where is None or where(e))
        best = start = 0
        for end, at in enumerate(times):
            while at - times[start] >= window_s:
                start += 1
            best = max(best, end - start + 1)
        return best
