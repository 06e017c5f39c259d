"""The end-to-end harness: the real Inngest dev server, `python -m prometei serve`, and the
amoCRM and Rukovoditel fakes on loopback, wired together as a `Stack`.

    with Stack.started(workdir) as stack:        # or the `stack` fixture in conftest.py
        stack.amo.add_lead(25399013, name="Order #1042", price=15000)
        answer = stack.webhook(status_change_form(25399013))
        run = stack.api.wait_for_run(answer["inngest_ids"][0])
        assert run["status"] == "Completed"

Every process runs on free loopback ports, is polled until it answers (never slept for), and is
stopped by its own PID (its process group, so `npx` takes its child along). Results come from the
dev server's HTTP API (`DevServerAPI`): run status and output, never log lines.

The dev server binary: `INNGEST_CLI` (a path or a command line; CI sets it to
../shared/tools/inngest-dev/inngest-dev), else `inngest-cli` on PATH, else
`npx --yes inngest-cli@latest`. When none starts, the tier fails and says how to get one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests

from tests.conftest import PROJECT_ENV_PREFIXES
from tests.fakes.amocrm import FakeAmoCRM
from tests.fakes.rukovoditel import FakeRukovoditel
from tests.fakes.rukovoditel_http import REST_PATH, RukovoditelHTTP
from tests.fakes.web import FakeRequest, FakeService, Reply
from tests.support.loopback import LoopbackServer

T = TypeVar("T")

# The environment as the tier was launched. Taken at import, before any fixture runs: the unit
# tier's autouse `project_env` fixture removes every INNGEST_* variable during each test.
LAUNCH_ENV: dict[str, str] = dict(os.environ)

REPO = Path(__file__).resolve().parents[2]
APP_SLUG_PREFIX = "prometei-ingest-"
FINAL_STATUSES = frozenset({"Completed", "Failed", "Cancelled"})
EVENT_KEY = "e2e"  # the dev server takes any key
DEV_SERVER_HELP = (
    "no Inngest dev server could be started. Set INNGEST_CLI to its binary or command line "
    "(this repository's CI uses ../shared/tools/inngest-dev/inngest-dev), put `inngest-cli` "
    "on PATH, or install Node.js so that `npx --yes inngest-cli@latest dev` works"
)

# Test credentials: nothing here is real; the fakes accept exactly these.
ACCESS_TOKEN = "e2e-long-lived-token-SECRET"
WEBHOOK_SECRET = "e2e-webhook-secret-SECRET"
ERP_KEY = "e2e-erp-key-SECRET"
ERP_PASSWORD = "e2e-erp-password-SECRET"
SUBDOMAIN = "example"
ACCOUNT_ID = 29085955
ERP_ENTITY = 70
LEAD_ID_FIELD = 1041


class HarnessError(AssertionError):
    """Something the tier needs could not start; the message says what and how to fix it."""


# ---- small tools ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(
    check: Callable[[], T], *, timeout: float, what: str | Callable[[], str], interval: float = 0.05
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g}s waiting for {detail}")
        time.sleep(interval)


def clean_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """The launch environment without any project variable, plus `extra`."""
    base = {
        key: value
        for key, value in LAUNCH_ENV.items()
        if not key.startswith(PROJECT_ENV_PREFIXES) and not key.startswith("VERCEL")
    }
    return {**base, "PYTHONPATH": str(REPO), **extra}


class ChildProcess:
    """A program in its own process group, output in a log file, stopped by its PID."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = cwd / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - argv built by the harness
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: stop() reaches its children too
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# ---- the dev server ---------------------------------------------------------------------------
def dev_server_command(environ: Mapping[str, str] = LAUNCH_ENV) -> tuple[list[str], float]:
    """(argv prefix, seconds to wait for readiness): INNGEST_CLI, inngest-cli, or npx."""
    configured = environ.get("INNGEST_CLI", "").strip()
    if configured:
        return shlex.split(configured), 60.0
    if found := shutil.which("inngest-cli"):
        return [found], 60.0
    if found := shutil.which("npx"):
        # The first run downloads the CLI and its binary.
        return [found, "--yes", "inngest-cli@latest"], 300.0
    raise HarnessError(DEV_SERVER_HELP)


class DevServer:
    """`inngest dev` on free ports (HTTP API and all three connect listeners)."""

    def __init__(self, workdir: Path, app_url: str, *, port: int | None = None) -> None:
        self.workdir = workdir
        self.app_url = app_url
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = DevServerAPI(self.url)
        self.child: ChildProcess | None = None

    def start(self) -> DevServer:
        command, patience = dev_server_command()
        argv = [
            *command,
            "dev",
            "--no-discovery",
            "--no-poll",  # we sync explicitly (Stack.sync), so no surprise re-syncs mid-test
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--connect-gateway-port",
            str(free_port()),
            "--connect-gateway-grpc-port",
            str(free_port()),
            "--connect-executor-grpc-port",
            str(free_port()),
            "-u",
            self.app_url,
            "--retry-interval",
            "1",  # linear 1 s between attempts instead of ~30 s backoff
            "--tick",
            "50",
        ]
        try:
            self.child = ChildProcess("inngest-dev", argv, env=clean_environ({}), cwd=self.workdir)
            self.child.start()
        except OSError as exc:
            raise HarnessError(f"{DEV_SERVER_HELP} ({shlex.join(command)}: {exc})") from None
        child = self.child

        def ready() -> bool:
            if not child.alive():
                raise HarnessError(
                    f"{DEV_SERVER_HELP}. `{shlex.join(command)} dev` exited "
                    f"with code {child.process.returncode if child.process else '?'}:\n"
                    + child.tail()
                )
            return self.api.answers()

        wait_until(
            ready,
            timeout=patience,
            what=lambda: f"the Inngest dev server at {self.url}; {DEV_SERVER_HELP}\n{child.tail()}",
            interval=0.1,
        )
        return self

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


class DevServerAPI:
    """The dev server's HTTP API: events in, runs out (README of tools/inngest-dev)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.trust_env = False
        self._fresh = itertools.count()

    def _get(self, path: str) -> Any:
        # The dev server caches every /v1 answer for 15 s by its URL (see `cached_until`): a
        # poll that asked before a run existed would keep getting "no runs". A query parameter
        # of our own makes each URL new.
        sep = "&" if "?" in path else "?"
        response = self.session.get(f"{self.url}{path}{sep}_poll={next(self._fresh)}", timeout=10)
        response.raise_for_status()
        return response.json()

    def _graphql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        response = self.session.post(
            f"{self.url}/v0/gql", json={"query": query, "variables": variables or {}}, timeout=10
        )
        response.raise_for_status()
        answer = response.json()
        if answer.get("errors"):
            raise AssertionError(f"dev server GraphQL error: {answer['errors']}")
        return answer["data"]

    def answers(self) -> bool:
        try:
            return self.session.get(self.url + "/dev", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    # ---- apps and functions -------------------------------------------------------------------
    def functions(self) -> dict[str, dict[str, Any]]:
        """Registered functions by slug without the app prefix (`amocrm-webhook-handler`)."""
        listed = self._get("/dev").get("functions") or []
        return {f["slug"].removeprefix(APP_SLUG_PREFIX): f for f in listed}

    # ---- events --------------------------------------------------------------------------------
    def send(self, events: dict[str, Any] | list[dict[str, Any]]) -> list[str]:
        """POST events to the event API; Inngest's ids (ULIDs), one per event."""
        response = self.session.post(f"{self.url}/e/{EVENT_KEY}", json=events, timeout=10)
        response.raise_for_status()
        ids: list[str] = response.json()["ids"]
        return ids

    def event(self, ulid: str, *, timeout: float = 10.0) -> dict[str, Any]:
        """The stored event (the event API answers before the event is stored)."""
        data: dict[str, Any] = wait_until(
            lambda: self._get(f"/v1/events/{ulid}").get("data"),
            timeout=timeout,
            what=f"event {ulid} to be stored",
        )
        return data

    def ulids_of(self, name: str, event_id: str, *, timeout: float = 10.0) -> list[str]:
        """Inngest's ids of the stored events called `name` whose own `id` is `event_id`
        (waits until there is at least one)."""

        def stored() -> list[str]:
            listed = self._get("/v1/events?" + urlencode({"name": name, "limit": 100}))["data"]
            return [e["internal_id"] for e in listed if e.get("id") == event_id]

        return wait_until(stored, timeout=timeout, what=f"event {event_id!r} to be stored")

    # ---- runs ------------------------------------------------------------------------------------
    def event_runs(self, ulid: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self._get(f"/v1/events/{ulid}/runs").get("data") or []
        return runs

    def run(self, run_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self._get(f"/v1/runs/{run_id}")["data"]
        return data

    def ended_run(self, run_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """Run `run_id` from the REST API once it shows the run ended, with its output. The
        GraphQL run list can report a run as ended a moment before `/v1/runs/<id>` does."""

        def ended() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run.get("status") in FINAL_STATUSES and "output" in run else None

        return wait_until(ended, timeout=timeout, what=f"run {run_id} to show as ended")

    def wait_for_run(self, ulid: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """The one run event `ulid` started, once it has ended (Completed/Failed/Cancelled)."""

        def ended() -> dict[str, Any] | None:
            runs = self.event_runs(ulid)
            assert len(runs) <= 1, f"event {ulid} started {len(runs)} runs"
            if not runs or runs[0].get("status") not in FINAL_STATUSES:
                return None
            run = self.run(runs[0]["run_id"])
            return run if run.get("status") in FINAL_STATUSES and "output" in run else None

        return wait_until(
            ended,
            timeout=timeout,
            what=lambda: f"the run of event {ulid} to end (now: {self.event_runs(ulid)})",
        )

    def step_outputs(self, run_id: str) -> list[tuple[str, str]]:
        """(step name, stored output or error as JSON text) for every span of run `run_id`
        that has one, failed attempts included: the step state Inngest keeps for the run.
        The run's own output is listed as "Run"; an attempt under its step's name."""
        span = "name outputID"
        trace = self._graphql(
            f"query($id: String!) {{ runTrace(runID: $id) {{ {span} childrenSpans {{ {span} "
            f"childrenSpans {{ {span} }} }} }} }}",
            {"id": run_id},
        )["runTrace"]
        found: list[tuple[str, str]] = []

        def collect(node: dict[str, Any], label: str) -> None:
            if node.get("outputID"):
                stored = self._graphql(
                    "query($id: String!) { runTraceSpanOutputByID(outputID: $id) "
                    "{ data error { name message stack } } }",
                    {"id": node["outputID"]},
                )["runTraceSpanOutputByID"]
                found.append((label, stored["data"] or json.dumps(stored["error"])))
            for child in node.get("childrenSpans") or []:
                collect(child, child["name"] if node is trace else label)

        collect(trace, "Run")
        return found

    def invoke(self, slug: str, data: dict[str, Any] | None = None) -> None:
        """Start a function by hand, as the dev server's Invoke button does (crons too)."""
        answer = self._graphql(
            "mutation($slug: String!, $data: Map) "
            "{ invokeFunction(functionSlug: $slug, data: $data) }",
            {"slug": APP_SLUG_PREFIX + slug, "data": data or {}},
        )
        assert answer["invokeFunction"] is True, answer

    def invoke_and_wait(self, slug: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Start function `slug` by hand and return its run (REST shape) once it has ended."""
        since = rfc3339_now()
        self.invoke(slug)
        [ref] = wait_until(
            lambda: [
                r
                for r in self.function_runs(slug, since)
                if r["status"] in ("COMPLETED", "FAILED", "CANCELLED")
            ],
            timeout=timeout,
            what=f"the invoked {slug} run to end",
        )
        return self.ended_run(ref["id"])

    def function_runs(self, slug: str, since: str) -> list[dict[str, Any]]:
        """Runs of function `slug` queued since `since` (RFC 3339): `{id, status}`."""
        function_id = self.functions()[slug]["id"]
        # By id: pages overlap where runs share a queued-at time.
        runs: dict[str, dict[str, Any]] = {}
        after: str | None = None
        while True:  # the dev server answers at most 40 runs a page, whatever `first` says
            data = self._graphql(
                "query($from: Time!, $ids: [UUID!], $after: String) { runs(first: 40, "
                "after: $after, orderBy: [{field: QUEUED_AT, direction: ASC}], "
                "filter: {from: $from, functionIDs: $ids}) { edges { node { id status } } "
                "pageInfo { hasNextPage endCursor } } }",
                {"from": since, "ids": [function_id], "after": after},
            )["runs"]
            runs.update((edge["node"]["id"], edge["node"]) for edge in data["edges"])
            if not data["pageInfo"]["hasNextPage"] or not data["edges"]:
                return list(runs.values())
            after = data["pageInfo"]["endCursor"]


# ---- the app and the recording proxy in front of /api/inngest ------------------------------
@dataclass(frozen=True)
class ExecutorCall:
    """One call the executor made to /api/inngest (through `ExecutorProxy`)."""

    method: str
    fn_slug: str
    run_id: str
    attempt: int | None
    status: int
    op: str | None  # the first opcode of a 206 answer: StepRun, StepError, StepFailed...
    at: float


class ExecutorProxy(FakeService):
    """Forwards every request to the app and records each executor call (run id, status).

    The dev server is pointed at the proxy, so the app is synced with the proxy's URL and every
    step call passes here: calls per run are counted exactly, not read from logs.
    """

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.calls: list[ExecutorCall] = []
        self.in_flight = 0
        self.peak_in_flight = 0  # the most executor calls the app was serving at once
        self.session = requests.Session()
        self.session.trust_env = False
        self.routes.add("GET|PUT|POST", r"/api/inngest", self._forward)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.calls.clear()
            self.peak_in_flight = 0

    def calls_of(self, run_id: str) -> list[ExecutorCall]:
        with self._lock:
            return [call for call in self.calls if call.run_id == run_id]

    def _forward(self, request: FakeRequest) -> Reply:
        query = urlencode([(k, v) for k, values in request.query.items() for v in values])
        headers = {
            name: value
            for name, value in request.headers.items()
            if name not in ("content-length", "connection", "transfer-encoding")
        }
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            response = self.session.request(
                request.method,
                f"{self.target}{request.path}" + (f"?{query}" if query else ""),
                headers=headers,  # Host included: the app must advertise the proxy's address
                data=request.body,
                timeout=(5, 300),
                allow_redirects=False,
            )
        finally:
            with self._lock:
                self.in_flight -= 1
        if request.method == "POST" and request.arg("fnId"):
            ctx = _json_or_empty(request.body).get("ctx") or {}
            call = ExecutorCall(
                method=request.method,
                fn_slug=(request.arg("fnId") or "").removeprefix(APP_SLUG_PREFIX),
                run_id=str(ctx.get("run_id", "")),
                attempt=ctx.get("attempt"),
                status=response.status_code,
                op=_first_op(response) if response.status_code == 206 else None,
                at=request.at,
            )
            with self._lock:
                self.calls.append(call)
        dropped = ("content-length", "connection", "transfer-encoding", "content-encoding")
        kept = {k: v for k, v in response.headers.items() if k.lower() not in dropped}
        return Reply(response.status_code, response.content, kept)


def _first_op(response: requests.Response) -> str | None:
    try:
        ops = response.json()
    except ValueError:
        return None
    return ops[0].get("op") if isinstance(ops, list) and ops and isinstance(ops[0], dict) else None


def _json_or_empty(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class PrometeiServer:
    """`python -m prometei serve --port <free>` with exactly the given environment."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.child = ChildProcess(
            "prometei-serve",
            [sys.executable, "-m", "prometei", "serve", "--port", str(self.port)],
            env=clean_environ(env),
            cwd=workdir,  # no stray .env from the repository or the developer
        )

    def start(self) -> PrometeiServer:
        self.child.start()

        def ready() -> bool:
            if not self.child.alive():
                raise HarnessError(f"`python -m prometei serve` exited:\n{self.child.tail()}")
            try:
                requests.get(f"{self.url}/api/webhook", timeout=1)
            except requests.RequestException:
                return False
            return True

        wait_until(ready, timeout=30, what=f"prometei serve at {self.url}", interval=0.05)
        return self

    def stop(self) -> None:
        self.child.stop()


# ---- the whole stack --------------------------------------------------------------------------
@dataclass
class Stack:
    """Dev server + app (+ recording proxy) + amoCRM and Rukovoditel fakes, on loopback."""

    workdir: Path
    amo: FakeAmoCRM
    erp: RukovoditelHTTP
    amo_server: LoopbackServer
    erp_server: LoopbackServer
    env: dict[str, str] = field(default_factory=dict)
    app: PrometeiServer | None = None
    proxy: ExecutorProxy | None = None
    proxy_server: LoopbackServer | None = None
    dev: DevServer | None = None

    @classmethod
    @contextlib.contextmanager
    def started(
        cls,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        amo: FakeAmoCRM | None = None,
        erp: RukovoditelHTTP | None = None,
    ) -> Iterator[Stack]:
        """Start everything (fakes first), yield the stack, stop everything (by PID)."""
        amo = amo or FakeAmoCRM(
            subdomain=SUBDOMAIN, account_id=ACCOUNT_ID, access_tokens=(ACCESS_TOKEN,)
        )
        # The fake checks the credentials the product sends (rukovoditel-live.md #37-#41).
        erp = erp or RukovoditelHTTP(
            FakeRukovoditel(REST_PATH, key=ERP_KEY, username="api", password=ERP_PASSWORD)
        )
        stack = cls(
            workdir=workdir,
            amo=amo,
            erp=erp,
            amo_server=LoopbackServer(amo.wsgi, "fake-amocrm"),
            erp_server=LoopbackServer(erp.wsgi, "fake-rukovoditel"),
        )
        try:
            stack._start(dict(env or {}))
            yield stack
        finally:
            stack.stop()

    @property
    def api(self) -> DevServerAPI:
        assert self.dev is not None
        return self.dev.api

    @property
    def app_url(self) -> str:
        assert self.app is not None
        return self.app.url

    @property
    def erp_url(self) -> str:
        return self.erp_server.url + self.erp.path

    def _start(self, overrides: dict[str, str]) -> None:
        self.amo_server.start()
        self.erp_server.start()
        dev_port = free_port()
        self.env = {
            "INNGEST_DEV": f"http://127.0.0.1:{dev_port}",
            "AMOCRM_SUBDOMAIN": SUBDOMAIN,
            "AMOCRM_ACCOUNT_ID": str(ACCOUNT_ID),
            "AMOCRM_ACCESS_TOKEN": ACCESS_TOKEN,
            "AMOCRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "AMOCRM_API_BASE_URL": self.amo_server.url,
            "CRM_API_URL": self.erp_url,
            "CRM_API_KEY": ERP_KEY,
            "CRM_API_USERNAME": "api",
            "CRM_API_PASSWORD": ERP_PASSWORD,
            "ERP_ENTITY_ID": str(ERP_ENTITY),
            "ERP_LEAD_ID_FIELD": str(LEAD_ID_FIELD),
            "ERP_CONCURRENCY": "4",
            "PROMETEI_STATE_DIR": str(self.workdir / "state"),
            "PROMETEI_LOG_FORMAT": "json",
            # No surprise reconcile runs mid-test; tests of it set a schedule and invoke it.
            "AMOCRM_RECONCILE_CRON": "off",
            **overrides,
        }
        self.env = {k: v for k, v in self.env.items() if v != ""}  # "" unsets a default
        self.app = PrometeiServer(self.workdir, self.env).start()
        self.proxy = ExecutorProxy(self.app.url)
        self.proxy_server = LoopbackServer(self.proxy.wsgi, "executor-proxy").start()
        self.dev = DevServer(
            self.workdir, f"{self.proxy_server.url}/api/inngest", port=dev_port
        ).start()
        self.sync()

    def sync(self) -> dict[str, dict[str, Any]]:
        """Register the app with the dev server now (as its sync would), wait for the functions."""
        assert self.proxy_server is not None
        response = requests.put(f"{self.proxy_server.url}/api/inngest", timeout=30)
        assert response.status_code == 200, response.text
        return wait_until(
            lambda: (functions := self.api.functions()) and len(functions) >= 4 and functions,
            timeout=30,
            what="the app's functions to be registered with the dev server",
        )

    def stop(self) -> None:
        self.amo.stopping.set()
        self.erp.stopping.set()
        for part in (self.dev, self.app):
            if part is not None:
                part.stop()
        for server in (self.proxy_server, self.amo_server, self.erp_server):
            if server is not None:
                server.stop()

    def reset(self) -> None:
        """Empty fakes and logs between tests (the dev server keeps its history)."""
        self.amo.reset()
        self.erp.reset()
        if self.proxy is not None:
            self.proxy.reset()

    # ---- talking to the app -------------------------------------------------------------------
    def webhook(
        self, form: str, *, path: str = "/api/webhook", token: bool = True, status: int = 200
    ) -> dict[str, Any]:
        """POST an amoCRM webhook form (`key=value` lines), with the secret unless `token` is
        False; the JSON answer, once its status is `status`."""
        from tests.fixtures.amocrm_bodies import encode

        query = f"?token={WEBHOOK_SECRET}" if token else ""
        response = requests.post(
            f"{self.app_url}{path}{query}",
            data=encode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=10,
        )
        assert response.status_code == status, f"{response.status_code}: {response.text}"
        answer: dict[str, Any] = response.json()
        return answer

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`python -m prometei <args>` with the stack's environment."""
        return subprocess.run(  # noqa: S603 - argv built by the harness
            [sys.executable, "-m", "prometei", *args],
            env=clean_environ(self.env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def proxy_calls(self, run_id: str) -> list[ExecutorCall]:
        """The calls the executor made to /api/inngest for run `run_id`, in order."""
        assert self.proxy is not None
        return self.proxy.calls_of(run_id)

    def executor_calls(self, run_id: str) -> int:
        return len(self.proxy_calls(run_id))

    def wait_for_failed_attempt(self, ulid: str, *, timeout: float = 30) -> str:
        """The run id of event `ulid`'s run, once one of its step attempts has failed."""

        def failed() -> str | None:
            runs = self.api.event_runs(ulid)
            if not runs:
                return None
            run_id = str(runs[0]["run_id"])
            return run_id if any(c.op == "StepError" for c in self.proxy_calls(run_id)) else None

        return wait_until(failed, timeout=timeout, what=f"a failed step attempt of event {ulid}")

    def records(self) -> list[dict[str, str]]:
        return self.erp.rows(ERP_ENTITY)

    def records_of_lead(self, lead_id: int) -> list[dict[str, str]]:
        return [row for row in self.records() if row.get(f"field_{LEAD_ID_FIELD}") == str(lead_id)]


def status_change_form(
    lead_id: int, *, status_id: int = 142, pipeline_id: int = 7012345, updated_at: int = 1712056800
) -> str:
    """The README's webhook: lead `lead_id` moved to `status_id` (amoCRM's form, decoded)."""
    return "\n".join(
        [
            f"leads[status][0][id]={lead_id}",
            f"leads[status][0][status_id]={status_id}",
            f"leads[status][0][pipeline_id]={pipeline_id}",
            "leads[status][0][old_status_id]=32392156",
            f"leads[status][0][updated_at]={updated_at}",
            f"account[subdomain]={SUBDOMAIN}",
            f"account[id]={ACCOUNT_ID}",
        ]
    )


def rfc3339_now() -> str:
    """Now, for `DevServerAPI.function_runs(since=...)` (same clock: the dev server is local)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
