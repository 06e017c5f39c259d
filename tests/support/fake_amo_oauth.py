"""A loopback stand-in for amoCRM's token endpoint with real rotation semantics.

`POST /oauth2/access_token` with `grant_type=refresh_token`: a live refresh token is spent and a
new pair is issued; a spent or unknown one gets amoCRM's 401 "Token has been revoked" problem
body (reference amocrm.md §2.5). Every request is counted. An optional delay widens the race
window so concurrent callers really overlap.

Faults (set the attributes; counters count down): `answer_delay_s` spends the token, then
answers late; `drip_s` spends it, then sends the answer a byte at a time; `lose_after_spend`
spends it, then cuts the connection (the pair exists only here: `lost_pairs`); `fail_500`
answers 500 without spending; `stall` holds requests before spending until `release_stalled()`
(then they are processed) or `cancel_stalled()` (then they answer 503, unspent).

The production code always builds `https://<account host>/...` URLs; `LoopbackAdapter` (a
`requests` transport adapter) reroutes exactly those to this server, so no production seam is
needed and other processes can reach it too.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from werkzeug.wrappers import Request, Response

from tests.support.loopback import serving

CLIENT_ID = "client-id-0000"
CLIENT_SECRET = "client-secret-SECRET-6666"
REDIRECT_URI = "https://prometei.example.test/api/oauth/callback"
EXPIRES_IN = 86400

REVOKED_BODY = {
    "hint": "Token has been revoked",
    "title": "Некорректный запрос",
    "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
    "status": 401,
    "detail": "В запросе отсутствует ряд параметров или параметры невалидны",  # noqa: RUF001
}


@dataclass
class FakeAmoOAuth:
    live_refresh: set[str] = field(default_factory=set)
    issued: list[tuple[str, str]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    delay_s: float = 0.0
    answer_delay_s: float = 0.0
    drip_s: float = 0.0
    lose_after_spend: int = 0
    fail_500: int = 0
    stall: bool = False
    stalled: int = 0
    lost_pairs: list[tuple[str, str]] = field(default_factory=list)
    processed: list[str] = field(default_factory=list)  # tokens that reached rotation logic
    url: str = ""
    _unstall: threading.Event = field(default_factory=threading.Event)
    _cancel: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def refresh_requests(self) -> int:
        return sum(1 for r in self.requests if r.get("grant_type") == "refresh_token")

    def requests_per_token(self) -> dict[str, int]:
        """How many refresh requests each refresh token got."""
        counts: dict[str, int] = {}
        for r in self.requests:
            if r.get("grant_type") == "refresh_token":
                counts[r["refresh_token"]] = counts.get(r["refresh_token"], 0) + 1
        return counts

    def processed_per_token(self) -> dict[str, int]:
        """How often each refresh token reached the rotation logic (spent, or refused as
        spent); a 500 or a stalled-then-dropped request does not count."""
        counts: dict[str, int] = {}
        for token in self.processed:
            counts[token] = counts.get(token, 0) + 1
        return counts

    def release_stalled(self) -> None:
        self.stall = False
        self._unstall.set()

    def cancel_stalled(self) -> None:
        self._cancel = True
        self.release_stalled()

    def secrets(self) -> list[str]:
        """Every token value this server has issued or accepted."""
        values = {CLIENT_SECRET}
        for access, refresh in self.issued:
            values.update((access, refresh))
        values.update(self.live_refresh)
        for request in self.requests:
            if request.get("refresh_token"):
                values.add(request["refresh_token"])
        return sorted(values)

    def app(self, environ: Any, start_response: Any) -> Any:
        return self._handle(Request(environ))(environ, start_response)

    def _handle(self, request: Request) -> Response:
        if request.method != "POST" or request.path != "/oauth2/access_token":
            return _json({"title": "Not found"}, 404)
        body = json.loads(request.get_data() or b"{}")
        with self._lock:
            self.requests.append(body)
        if body.get("client_id") != CLIENT_ID or body.get("client_secret") != CLIENT_SECRET:
            return _json({"title": "Некорректный клиент", "status": 401}, 401)
        if body.get("redirect_uri") != REDIRECT_URI or body.get("grant_type") != "refresh_token":
            return _json({"title": "Некорректный запрос", "status": 400}, 400)
        return self._refresh(request, body)

    def _refresh(self, request: Request, body: dict[str, Any]) -> Response:
        if self.stall:
            with self._lock:
                self.stalled += 1
            self._unstall.wait(timeout=120)
            if self._cancel:
                return _json({"title": "Service unavailable", "status": 503}, 503)
        if self.delay_s:
            time.sleep(self.delay_s)  # server-side latency, widens the race window
        with self._lock:
            if self.fail_500:
                self.fail_500 -= 1
                return _json({"title": "Internal error", "status": 500}, 500)
            token = body.get("refresh_token")
            self.processed.append(token)
            if token not in self.live_refresh:
                return _json(REVOKED_BODY, 401)
            self.live_refresh.discard(token)  # single use
            n = next(self._counter)
            access, refresh = f"access-{n}-SECRET", f"refresh-{n}-SECRET"
            self.live_refresh.add(refresh)
            self.issued.append((access, refresh))
            lose = self.lose_after_spend > 0
            if lose:
                self.lose_after_spend -= 1
                self.lost_pairs.append((access, refresh))
        answer = _json(
            {
                "token_type": "Bearer",
                "expires_in": EXPIRES_IN,
                "access_token": access,
                "refresh_token": refresh,
            },
            200,
        )
        if lose:
            sock = request.environ.get("werkzeug.socket")
            if isinstance(sock, socket.socket):
                sock.shutdown(socket.SHUT_RDWR)  # spent and issued, but nobody hears it
            return answer
        if self.answer_delay_s:
            time.sleep(self.answer_delay_s)  # the fault: spent now, answered late
        if self.drip_s:
            return _drip(answer, self.drip_s)
        return answer


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _drip(response: Response, every_s: float) -> Response:
    body = response.get_data()

    def trickle() -> Iterator[bytes]:
        for i in range(len(body)):
            time.sleep(every_s)  # the fault: an answer that trickles in
            yield body[i : i + 1]

    dripping = Response(trickle(), status=response.status_code, content_type="application/json")
    dripping.headers["Content-Length"] = str(len(body))
    return dripping


@contextmanager
def running_fake_amo(delay_s: float = 0.0) -> Iterator[FakeAmoOAuth]:
    fake = FakeAmoOAuth(delay_s=delay_s)
    with serving(fake.app, "fake-amo") as url:
        fake.url = url
        yield fake


class LoopbackAdapter(HTTPAdapter):
    """Sends `https://<host>/...` requests to a loopback server instead (tests only)."""

    def __init__(self, host: str, target: str) -> None:
        super().__init__()
        self._prefix = f"https://{host}"
        self._target = target

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        assert request.url is not None and request.url.startswith(self._prefix)
        request.url = self._target + request.url[len(self._prefix) :]
        return super().send(request, *args, **kwargs)


def loopback_session(host: str, target: str) -> requests.Session:
    from prometei.http import make_session

    session = make_session()
    session.mount(f"https://{host}", LoopbackAdapter(host, target))
    return session
