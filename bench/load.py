"""Intake under load: /api/webhook on a real WSGI server against a bare Flask route.

Three processes, all on 127.0.0.1: the server under test (werkzeug `make_server(threaded=True)`,
the same server type for both apps), a stub of the Inngest event API on another port
(answering `{"ids": [...], "status": 200}` like inn.gs; the intake points at it through
INNGEST_EVENT_API_BASE_URL), and the load generator (this process: one thread per concurrent
client, `http.client` connections, realistic amoCRM status-change bodies with a different lead
id each). Werkzeug's development server answers `Connection: close`, so every request opens a
new TCP connection, for both apps alike. The reference is the same server serving a bare Flask
route on the same path that returns 200 without reading the body. Runs alternate between the
two apps at each concurrency; each figure is the median over the repeated runs. A run stops at
its request count or its time cap, whichever comes first.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench import (
    DUMMY_WEBHOOK_SECRET,
    PYTHON,
    ROOT,
    Section,
    Table,
    clean_env,
    median,
    percentile,
    ratio,
    verdict,
)

WEBHOOK_PATH = "/api/webhook"
AMOCRM_WINDOW_S = 2.0
P99_TARGET = 1.5
RPS_TARGET = 0.6
CONCURRENCY = (1, 8, 32)
LABELS = {
    "bare": "bare Flask route (reference)",
    "bare-send": "bare route + one event POST",
    "webhook": "/api/webhook (intake)",
}


# ---- processes -----------------------------------------------------------------------------


class _QuietHandler:
    """Mixin: no access log lines (they would fill a pipe nobody reads)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def _bare_app() -> Any:
    import flask

    app = flask.Flask("bare")

    @app.post(WEBHOOK_PATH)
    def bare() -> flask.Response:
        return flask.Response(b"{}", status=200, mimetype="application/json")

    return app


def _send_app(stub_url: str) -> Any:
    """Reference 2: a bare route that reads the body and POSTs one event to the stub."""
    import flask
    import requests

    session = requests.Session()
    app = flask.Flask("bare-send")

    @app.post(WEBHOOK_PATH)
    def bare_send() -> flask.Response:
        flask.request.get_data()
        session.post(stub_url, json=[{"name": "bench/x", "data": {}}], timeout=(1.0, 1.2))
        return flask.Response(b"{}", status=200, mimetype="application/json")

    return app


def _serve(kind: str, ready_fd: int) -> None:
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Handler(_QuietHandler, WSGIRequestHandler):
        pass

    if kind == "bare":
        app = _bare_app()
    elif kind == "bare-send":
        app = _send_app(os.environ["INNGEST_EVENT_API_BASE_URL"] + "e/bench")
    else:
        from prometei.web.apps import create_webhook_app

        app = create_webhook_app()
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Handler)
    _ready(ready_fd, server.server_port)
    server.serve_forever()


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for the intake's requests.Session
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stall on keep-alive
    events = 0
    lock = threading.Lock()

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        events = json.loads(self.rfile.read(length) or b"[]")
        with _StubHandler.lock:
            start = _StubHandler.events
            _StubHandler.events += len(events)
        ids = [f"01STUB{start + n:020d}" for n in range(len(events))]
        self._answer({"ids": ids, "status": 200})

    def do_GET(self) -> None:
        self._answer({"events": _StubHandler.events})

    def _answer(self, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n"
        )
        self.wfile.write(head.encode() + raw)  # one segment


def _stub(ready_fd: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
    server.daemon_threads = True
    _ready(ready_fd, server.server_address[1])
    server.serve_forever()


def _ready(fd: int, port: int) -> None:
    os.write(fd, f"{port}\n".encode())
    os.close(fd)


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start(role: str, env: dict[str, str], timeout_s: float = 30.0) -> Process:
    """Start `python -m bench.load <role>` and wait for it to report its port on a pipe."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [PYTHON, "-m", "bench.load", role, str(write_fd)],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    os.close(write_fd)
    try:
        readable, _, _ = select.select([read_fd], [], [], timeout_s)
        data = os.read(read_fd, 64) if readable else b""
    finally:
        os.close(read_fd)
    if not data.strip():
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{role} server did not start (exit code {proc.poll()})")
    return Process(role, proc, int(data.strip()))


# ---- load generator ------------------------------------------------------------------------


def status_bodies(count: int) -> list[bytes]:
    """Realistic status-change bodies, each for a different lead (distinct event ids)."""
    from tests.fixtures.amocrm_bodies import STATUS_LEAD, encode, lines

    pairs = lines(STATUS_LEAD)
    bodies = []
    for n in range(count):
        lead_id = str(30_000_000 + n)
        stamp = str(1_712_056_800 + n)
        changed = [
            (key, lead_id if key.endswith("[id]") and key.startswith("leads") else value)
            for key, value in pairs
        ]
        changed = [
            (key, stamp if key.endswith(("[updated_at]", "[last_modified]")) else value)
            for key, value in changed
        ]
        bodies.append(encode(changed))
    return bodies


@dataclass
class RunResult:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    elapsed: float = 0.0

    @property
    def done(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.done / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        return percentile(sorted(self.latencies), q)


def load_run(
    port: int, concurrency: int, total: int, max_s: float, bodies: list[bytes]
) -> RunResult:
    result = RunResult()
    counter = itertools.count()
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)
    deadline = [0.0]
    path = f"{WEBHOOK_PATH}?token={DUMMY_WEBHOOK_SECRET}"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        errors = 0
        barrier.wait()
        while True:
            n = next(counter)
            if n >= total or time.perf_counter() > deadline[0]:
                break
            body = bodies[n % len(bodies)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[response.status] = statuses.get(response.status, 0) + 1
        conn.close()
        with lock:
            result.latencies.extend(latencies)
            result.errors += errors
            for status, count in statuses.items():
                result.statuses[status] = result.statuses.get(status, 0) + count

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + max_s
    start_time = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join(timeout=max_s + 30)
    result.elapsed = time.perf_counter() - start_time
    return result


def _check_webhook(port: int) -> dict[str, Any]:
    """One request by hand: the intake must accept the sample body (else the bench is moot)."""
    body = status_bodies(1)[0]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST",
        f"{WEBHOOK_PATH}?token={DUMMY_WEBHOOK_SECRET}",
        body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    response = conn.getresponse()
    payload = json.loads(response.read() or b"{}")
    conn.close()
    if response.status != 200 or payload.get("accepted") != 1:
        raise RuntimeError(f"intake refused the sample body: {response.status} {payload}")
    return dict(payload)


def _stub_events(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    events = int(json.loads(conn.getresponse().read())["events"])
    conn.close()
    return events


def run(quick: bool = False) -> Section:
    started = time.perf_counter()
    repeats = 1 if quick else 5
    per_run = {1: 150, 8: 400, 32: 800} if quick else {1: 400, 8: 1200, 32: 2400}
    max_s = 6.0 if quick else 10.0
    bodies = status_bodies(5000)

    stub = start("stub", clean_env())
    processes = [stub]
    try:
        env = clean_env(
            INNGEST_EVENT_API_BASE_URL=f"http://127.0.0.1:{stub.port}/",
            PROMETEI_LOG_LEVEL="INFO",
        )
        webhook = start("webhook", env)
        processes.append(webhook)
        bare = start("bare", env)
        processes.append(bare)
        bare_send = start("bare-send", env)
        processes.append(bare_send)
        _check_webhook(webhook.port)
        servers = (bare, bare_send, webhook)
        for server in servers:  # warm-up: imports, sessions, first connections
            load_run(server.port, 4, 100, max_s, bodies)
        events_before = _stub_events(stub.port)

        results: dict[tuple[str, int], list[RunResult]] = {}
        for concurrency in CONCURRENCY:
            for n in range(repeats):
                shift = n % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    results.setdefault((server.name, concurrency), []).append(
                        load_run(server.port, concurrency, per_run[concurrency], max_s, bodies)
                    )
        accepted = sum(
            r.statuses.get(200, 0)
            for (name, _), runs in results.items()
            if name == "webhook"
            for r in runs
        )
        events_sent = (
            _stub_events(stub.port)
            - events_before
            - sum(
                r.statuses.get(200, 0)
                for (name, _), runs in results.items()
                if name == "bare-send"
                for r in runs
            )
        )
    finally:
        for process in reversed(processes):
            process.stop()

    table = Table(
        [
            "concurrency",
            "app",
            "requests/run",
            "p50 ms",
            "p99 ms",
            "max ms",
            "req/s",
            "p99 vs bare",
            "req/s vs bare",
            "p99 vs bare+send",
            f"p99 ≤{P99_TARGET}x",
            f"req/s ≥{RPS_TARGET}x",
            "non-200 / errors",
            f"all ≤{AMOCRM_WINDOW_S:g} s",
        ],
        caption=f"median of {repeats} run(s) per cell; each run ≤ {max_s:g} s",
    )
    for concurrency in CONCURRENCY:
        bare_runs = results[("bare", concurrency)]
        bare_p99 = median(r.pct(99) for r in bare_runs)
        bare_rps = median(r.rps for r in bare_runs)
        send_p99 = median(r.pct(99) for r in results[("bare-send", concurrency)])
        for name in ("bare", "bare-send", "webhook"):
            runs = results[(name, concurrency)]
            p99 = median(r.pct(99) for r in runs)
            rps = median(r.rps for r in runs)
            worst = max(max(r.latencies, default=0.0) for r in runs)
            bad = sum(sum(c for s, c in r.statuses.items() if s != 200) for r in runs)
            errors = sum(r.errors for r in runs)
            subject = name == "webhook"
            table.add(
                concurrency,
                LABELS[name],
                round(median(r.done for r in runs)),
                median(r.pct(50) for r in runs) * 1000,
                p99 * 1000,
                worst * 1000,
                rps,
                ratio(p99, bare_p99) if name != "bare" else "1.00x",
                ratio(rps, bare_rps) if name != "bare" else "1.00x",
                ratio(p99, send_p99) if subject else "-",
                verdict(p99 / bare_p99 <= P99_TARGET) if subject else "-",
                verdict(rps / bare_rps >= RPS_TARGET) if subject else "-",
                f"{bad} / {errors}",
                verdict(worst <= AMOCRM_WINDOW_S and not errors),
            )
    notes = [
        f"Every intake request that answered 200 handed its event to the stub: {accepted} "
        f"accepted, {events_sent} events received by the stub"
        + (" (match)." if accepted == events_sent else " (**MISMATCH**)."),
        "bare + send is a second reference: a bare route that also POSTs one event to the "
        "stub with `requests`, i.e. the one thing the intake cannot skip; the gap between it "
        "and the bare route is the cost of handing the event over, the gap between the "
        "intake and it is parsing, checks and logging.",
        f"Machine: {os.cpu_count()} CPUs shared by the server, the stub and the load "
        "generator (all Python); the ratios matter more than the absolute figures.",
    ]
    return Section(
        key="load",
        title="2. Intake under load",
        method=__doc__ or "",
        tables=[table],
        notes=notes,
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str]) -> None:
    role = argv[0]
    if role in ("webhook", "bare", "bare-send"):
        _serve(role, int(argv[1]))
    elif role == "stub":
        _stub(int(argv[1]))
    else:
        print(run(quick="--quick" in argv).text())


if __name__ == "__main__":
    main(sys.argv[1:] or ["run", "--quick"])
