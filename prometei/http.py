"""Shared `requests` plumbing: one session per outside API, explicit timeouts, clean errors.

Every client in the project builds its session here and sends through `send()`, which
- bounds the **whole request** (DNS, connect, TLS, sending, headers and the full body) by a
  wall-clock deadline, not only each socket read;
- turns `requests` exceptions into `UpstreamUnavailable` with a message that names the host and
  what went wrong (refused, DNS, TLS, connect timeout, read timeout, deadline), never the URL's
  path or query string (they may carry a secret), and never promises a retry: whether anything
  retries is decided at the function boundary, not here.

Why a helper thread: a socket timeout bounds one `recv`, so an answer that trickles in a byte
at a time, drip-fed headers, a slow DNS lookup or several addresses each taking the connect
timeout all add up past it. Streaming the body with a deadline check still lets the phases
before the body overrun, and a watchdog that closes the socket needs a handle `requests` only
exposes once the headers have arrived. So the request runs on a short-lived daemon thread and
the caller waits for it at most until the deadline; then it shuts the socket down (if there is
one yet) and raises. Cost: one thread start per request (~0.1 ms). The abandoned thread ends
by itself within one socket timeout.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from prometei import __version__
from prometei.errors import UpstreamUnavailable

# (connect, read) seconds, per socket operation. Each Inngest step call must finish well inside
# Vercel's maxDuration, and a stuck socket should become an error, not a hung function.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 20.0)
USER_AGENT = f"prometei/{__version__} (+amoCRM-to-Rukovoditel)"


class NotDelivered(UpstreamUnavailable):
    """The request provably never reached the server: connection refused, DNS failure,
    connect timeout or a failed TLS handshake. Safe to send again, even a single-use token."""


def make_session() -> requests.Session:
    """A session with our User-Agent and no automatic retries (Inngest owns retries)."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # Never pick up proxy or netrc credentials from the environment implicitly.
    session.trust_env = False
    return session


def request_deadline(timeout: tuple[float, float], deadline_s: float | None = None) -> float:
    """The wall-clock bound `send()` puts on a whole request: `deadline_s`, or by default the
    connect timeout plus the read timeout. Lease sizing (prometei.tokens) uses this too."""
    return float(deadline_s) if deadline_s is not None else float(timeout[0] + timeout[1])


def send(
    session: requests.Session,
    service: str,
    method: str,
    url: str,
    *,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    deadline_s: float | None = None,
    **kwargs: Any,
) -> requests.Response:
    """Send a request and read its whole body within `deadline_s` seconds of wall-clock time
    (default: connect + read timeout). Network failures, timeouts and a passed deadline become
    `UpstreamUnavailable` naming the host and the kind of failure. Redirects are not followed."""
    total = request_deadline(timeout, deadline_s)
    per_op = (min(timeout[0], total), min(timeout[1], total))
    call = _Call(session, method, url, per_op, kwargs)
    worker = threading.Thread(target=call.run, name=f"http-{service}", daemon=True)
    started = time.monotonic()
    worker.start()
    finished = call.done.wait(total)
    if not finished:
        call.abandon()
        raise UpstreamUnavailable(
            service,
            f"{_where(url)} did not complete its answer within {total:g}s "
            f"(whole-request deadline; {_phase(call)})",
        )
    if call.error is not None:
        raise _translate(call.error, service, url, per_op, time.monotonic() - started)
    assert call.response is not None
    return call.response


@dataclass
class _Call:
    """One request on a helper thread; the caller reads the outcome once `done` is set."""

    session: requests.Session
    method: str
    url: str
    timeout: tuple[float, float]
    kwargs: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    response: requests.Response | None = None
    error: BaseException | None = None
    headers_received: bool = False
    _streaming: requests.Response | None = None
    _abandoned: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        try:
            response = self.session.request(
                self.method,
                self.url,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
                **self.kwargs,
            )
            with self._lock:
                self.headers_received = True
                self._streaming = response
            if not self._abandoned:
                _ = response.content  # the whole body, inside the deadline
                self.response = response
        except BaseException as exc:  # handed to the caller's thread as is
            self.error = exc
        finally:
            self.done.set()
            if self._abandoned and self._streaming is not None:
                self._streaming.close()  # here, not in the caller: close() waits for reads

    def abandon(self) -> None:
        """The caller gave up: wake the helper thread if it is blocked on the socket. Never
        blocks the caller (closing a response another thread reads from would)."""
        with self._lock:
            self._abandoned = True
            response = self._streaming
        sock = _socket_of(response) if response is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # unblocks a recv in another thread


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket under a streaming response. urllib3 keeps it on the connection until
    http.client hands it to the response (a `Connection: close` answer); then only the
    response's file object holds it."""
    raw = response.raw
    fp = getattr(getattr(raw, "_fp", None), "fp", None)
    candidates = [
        getattr(getattr(raw, "connection", None), "sock", None),
        getattr(getattr(fp, "raw", None), "_sock", None),
    ]
    for candidate in candidates:
        if isinstance(candidate, socket.socket):
            return candidate
    return None


def _phase(call: _Call) -> str:
    return "the body was still arriving" if call.headers_received else "no response headers yet"


def _where(url: str) -> str:
    """`host` or `host:port` of `url`: never its path or query (they may carry secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc`, the urllib3 reasons wrapped in its args, and their causes, outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if current in seen or len(seen) > 12:
            continue
        seen.append(current)
        reason = getattr(current, "reason", None)
        for nxt in (reason, *current.args, current.__cause__, current.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    return seen


def _translate(
    exc: BaseException,
    service: str,
    url: str,
    per_op: tuple[float, float],
    elapsed: float,
) -> BaseException:
    """A `requests` failure as `UpstreamUnavailable` saying where and what; anything else
    (a programming error, a test's network guard) unchanged."""
    if not isinstance(exc, requests.RequestException):
        return exc
    where = _where(url)
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    not_sent = True
    if isinstance(exc, requests.ConnectTimeout):
        what = f"could not connect to {where} within {per_op[0]:g}s (connect timeout)"
    elif isinstance(exc, requests.ReadTimeout):
        not_sent = False  # the request went out; whether it was processed is unknown
        what = f"{where} accepted the request but sent nothing for {per_op[1]:g}s (read timeout)"
    elif isinstance(exc, requests.exceptions.SSLError) or any(
        isinstance(e, ssl.SSLError) for e in chain
    ):
        what = f"TLS handshake with {where} failed (certificate or protocol problem)"
    elif "NameResolutionError" in names or any(isinstance(e, socket.gaierror) for e in chain):
        what = f"cannot resolve {where} (DNS lookup failed)"
    elif any(isinstance(e, ConnectionRefusedError) for e in chain):
        what = f"connection to {where} refused (nothing listens there)"
    else:
        not_sent = False
        if any(isinstance(e, ConnectionResetError) for e in chain):
            what = f"{where} reset the connection after {elapsed:.1f}s"
        elif {"RemoteDisconnected", "IncompleteRead", "ProtocolError"} & names:
            what = f"{where} closed the connection before the answer was complete"
        elif isinstance(exc, requests.ConnectionError):
            what = f"connection to {where} failed ({type(exc.__cause__ or exc).__name__})"
        else:
            what = f"request to {where} failed ({type(exc).__name__})"
    return (NotDelivered if not_sent else UpstreamUnavailable)(service, what)


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    return None
