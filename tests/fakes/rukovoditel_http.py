"""`FakeRukovoditel` (tests.fakes.rukovoditel) over HTTP, with faults at the HTTP layer.

The model decides what api/rest.php answers; this wrapper only carries it over HTTP and adds
what a real deployment adds in front of PHP: a web server that answers 502/503/504 or its own
HTML 500 page, answers that arrive after the client gave up, a closed port. It also counts how
many writes (insert/update) are in flight at once (`peak_writes`), for the batch's
ERP_CONCURRENCY limit; `write_latency_s` makes each write take that long, so overlaps show.

    ruko = RukovoditelHTTP()
    server = LoopbackServer(ruko.wsgi, "fake-rukovoditel").start()
    CRM_API_URL = server.url + ruko.path
    ruko.fail("insert", BAD_GATEWAY, times=2)        # the next two inserts get a 502

The permanent shapes Rukovoditel itself sends (`error_200`, `error_500_json`, `EMPTY_500`) are
replies too, so any of them can be queued the same way.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from tests.fakes.rukovoditel import FakeRukovoditel, parse_params
from tests.fakes.web import HTML, FakeRequest, FakeService, Reply
from tests.fixtures.rukovoditel import NGINX_500, NGINX_502

REST_PATH = "/api/rest.php"
WRITE_ACTIONS = frozenset({"insert", "update"})

BAD_GATEWAY = Reply.html(NGINX_502, 502)
SERVICE_UNAVAILABLE = Reply.html(
    NGINX_502.replace("502 Bad Gateway", "503 Service Unavailable"), 503
)
GATEWAY_TIMEOUT = Reply.html(NGINX_502.replace("502 Bad Gateway", "504 Gateway Time-out"), 504)
# What nginx/Apache answer when PHP-FPM dies mid-request: not Rukovoditel's own shape.
HTML_500 = Reply.html(NGINX_500, 500)
# Rukovoditel 3.6 with a string error code (login_fail, access_denied...): PHP 8 dies first.
EMPTY_500 = Reply(500, "", {"Content-Type": HTML})


def error_200(message: str) -> Reply:
    """Servers up to 3.4: the error envelope with HTTP 200."""
    body = {"status": "error", "error_code": "error", "error_message": message}
    return Reply(200, json.dumps(body), {"Content-Type": HTML})


def error_500_json(message: str) -> Reply:
    """3.6: errors without a code, e.g. "field_9999 not exist in entity 25"."""
    body = {"status": "error", "error_code": 500, "error_message": message}
    return Reply(500, json.dumps(body), {"Content-Type": HTML})


class RukovoditelHTTP(FakeService):
    """api/rest.php at `path`, answered by a `FakeRukovoditel` model."""

    def __init__(
        self,
        model: FakeRukovoditel | None = None,
        *,
        path: str = REST_PATH,
        write_latency_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.path = path
        self.model = model or FakeRukovoditel(url=path)
        self.write_latency_s = write_latency_s
        self.in_flight_writes = 0
        self.peak_writes = 0
        # The model is not thread-safe; the web server is. One request at a time inside it.
        self._model_lock = threading.Lock()
        self.routes.add("POST", path, self._rest)

    # ---- set-up and reading -----------------------------------------------------------------
    def fail(
        self,
        action: str | None,
        reply: Reply | None = None,
        *,
        times: int = 1,
        delay_s: float = 0.0,
        after_effect: bool = False,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Queue an HTTP-level fault for the next `times` calls of `action` (None: any)."""

        def matches(request: FakeRequest) -> bool:
            params = _params(request)
            return (action is None or params.get("action") == action) and (
                match is None or match(params)
            )

        self.fail_next(
            reply, times=times, delay_s=delay_s, after_effect=after_effect, match=matches
        )

    def reset(self) -> None:
        """A fresh, empty model; no faults, no log, counters at zero."""
        super().reset()
        with self._model_lock:
            self.model = self.model.blank()
            self.in_flight_writes = self.peak_writes = 0

    def rows(self, entity_id: int) -> list[dict[str, str]]:
        with self._model_lock:
            return [dict(row) for row in self.model.rows.get(entity_id, [])]

    def actions(self, action: str) -> list[dict[str, Any]]:
        """Calls of `action` that reached the model (HTTP-level faults never do)."""
        with self._model_lock:
            return list(self.model.actions(action))

    # ---- answers ----------------------------------------------------------------------------
    def _rest(self, request: FakeRequest) -> Reply:
        is_write = _params(request).get("action") in WRITE_ACTIONS
        if is_write:
            with self._lock:
                self.in_flight_writes += 1
                self.peak_writes = max(self.peak_writes, self.in_flight_writes)
        try:
            if is_write and self.write_latency_s:
                self.stopping.wait(self.write_latency_s)
            with self._model_lock:
                status, headers, text = self.model.handle_body(
                    request.body, request.header("Content-Type")
                )
        finally:
            if is_write:
                with self._lock:
                    self.in_flight_writes -= 1
        return Reply(status, text, {"Content-Type": HTML, **headers})


def _params(request: FakeRequest) -> dict[str, Any]:
    try:
        params = parse_params(request.body, request.header("Content-Type"))
    except ValueError:
        return {}
    return params if isinstance(params, dict) else {}
