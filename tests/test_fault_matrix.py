"""Fault matrix: amoCRM, the ERP, KV and the Inngest event API failing in every documented way.

Each row makes one outside system fail one way (timeouts, connection resets, 5xx, 429 with an
HTML body, 401, 403, malformed JSON, Rukovoditel's 200-with-error and HTML error shapes; see
reference amocrm.md §4, rukovoditel-live.md, vercel-kv.md §B6, inngest.md §3) and checks the
outcome: retried (and then synced), failed at once with a message saying what to fix, skipped,
or, for the intake, 503 so amoCRM redelivers (with the same event id). Every row also checks
that the ERP never holds a second record for the lead.

amoCRM/ERP/KV rows run the `amocrm-webhook-handler` over the signed executor protocol with
ERP_LEAD_ID_FIELD set (the configuration that makes retries safe); KV rows use OAuth mode with
the token pair in a fake Upstash REST store; event API rows drive the intake.

The table is printed at the end of the module. `FAULT_MATRIX_OUT=docs/fault-matrix.md
python -m pytest tests/test_fault_matrix.py` also writes it as Markdown (make bench does).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import requests
import responses
from pydantic import SecretStr

from prometei.store.base import TokenRecord
from prometei.store.kv import KVClient, KVTokenStore
from tests.conftest import AMO_BASE, ERP_URL, EVENT_API, TEST_SECRETS
from tests.fakes.rukovoditel import FakeRukovoditel
from tests.fixtures.amocrm_bodies import STATUS_LEAD, encode
from tests.support.executor import make_event, run_function

FN = "amocrm-webhook-handler"
LEAD_ID = 25399013
LEAD_URL = f"{AMO_BASE}/api/v4/leads/{LEAD_ID}"
TOKEN_URL = f"{AMO_BASE}/oauth2/access_token"
KV_URL = "https://kv.example.test"
KV_TOKEN = "kv-token-SECRET-7777"
LOOKUP_FIELD = "1041"
MAX_ATTEMPTS = 6  # retries=5 on the function
HTML = {"Content-Type": "text/html; charset=UTF-8"}
JSON = {"Content-Type": "application/json"}
HTML_429 = "<html><head><title>429 Too Many Requests</title></head><body>nginx</body></html>"
HTML_403 = "<html><body><h1>403 Forbidden</h1>nginx</body></html>"
HTML_500 = "<html><head><title>500 Internal Server Error</title></head><body>nginx</body></html>"

Reply = tuple[int, dict[str, str], str]
Fault = Reply | type[Exception]


# ---- fakes -----------------------------------------------------------------------------------


@dataclass
class FakeKV:
    """Upstash REST over fakeredis for `responses`, with queued faults (same shapes as the shim)."""

    server: fakeredis.FakeServer = field(default_factory=fakeredis.FakeServer)
    commands: list[list[Any]] = field(default_factory=list)
    faults: list[tuple[str | None, Fault]] = field(default_factory=list)

    def install(self, mock: responses.RequestsMock) -> FakeKV:
        mock.add_callback(responses.POST, re.compile(re.escape(KV_URL) + "/?"), self._handle)
        return self

    def fail_next(self, fault: Fault, *, command: str | None = None, times: int = 1) -> None:
        self.faults += [(command, fault)] * times

    def _handle(self, request: requests.PreparedRequest) -> Reply:
        command = json.loads(request.body or b"[]")
        self.commands.append(command)
        for queued in list(self.faults):
            wanted, fault = queued
            if wanted is None or wanted == str(command[0]).upper():
                self.faults.remove(queued)
                if isinstance(fault, type):
                    raise fault("injected fault")
                return fault
        if request.headers.get("Authorization") != f"Bearer {KV_TOKEN}":
            return 401, JSON, json.dumps({"error": "WRONGPASS invalid or missing auth token"})
        client = fakeredis.FakeStrictRedis(server=self.server, decode_responses=True)
        try:
            result = client.execute_command(*[str(a) for a in command])
        except redis.ResponseError as exc:
            return 400, JSON, json.dumps({"error": f"ERR {exc}"})
        return 200, JSON, json.dumps({"result": "OK" if result is True else result})


@dataclass
class Outcome:
    kind: str  # synced | retried | failed | skipped | 503
    detail: str
    calls: int  # executor calls (or intake requests)
    failing_calls: int  # requests the failing system received
    records: int
    duplicates: int
    message: str = ""
    refreshes: int = 0  # amoCRM token rotations (refresh requests answered 200)


@dataclass
class Ctx:
    mock: responses.RequestsMock
    erp: FakeRukovoditel
    kv: FakeKV


@dataclass(frozen=True)
class Row:
    system: str  # amoCRM | ERP | KV | event API
    failure: str
    # synced (no Inngest retry; a 401 may be fixed inside the step) | retried (Inngest retried
    # the step, then synced) | failed | skipped | 503 (intake: amoCRM redelivers)
    expect: str
    setup: Callable[[Ctx], None]
    words: tuple[str, ...] = ()
    oauth: bool = False
    expired: bool = False

    @property
    def id(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.system} {self.failure}".lower()).strip("-")


# ---- fault builders --------------------------------------------------------------------------


def amo_lead() -> dict[str, Any]:
    return {
        "id": LEAD_ID,
        "name": "Order #1042",
        "price": 15000,
        "status_id": 142,
        "pipeline_id": 7012345,
        "account_id": 29085955,
        "updated_at": 1712056800,
        "_embedded": {"contacts": [], "tags": []},
    }


def amo(*replies: Fault, then_ok: bool = True) -> Callable[[Ctx], None]:
    """amoCRM's lead endpoint answers `replies` in order, then (optionally) the lead."""

    def setup(ctx: Ctx) -> None:
        for reply in replies:
            if isinstance(reply, type):
                ctx.mock.get(LEAD_URL, body=reply("injected fault"))
            else:
                status, headers, body = reply
                ctx.mock.get(LEAD_URL, status=status, headers=headers, body=body)
        if then_ok:
            ctx.mock.get(LEAD_URL, json=amo_lead())

    return setup


def erp(
    fault: Fault, action: str = "insert", *, after_effect: bool = False, times: int = 1
) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        ctx.mock.get(LEAD_URL, json=amo_lead())
        ctx.erp.fail_next(action, fault, after_effect=after_effect, times=times)

    return setup


def kv(fault: Fault, command: str | None = None, *, times: int = 1) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        ctx.mock.get(LEAD_URL, json=amo_lead())
        ctx.kv.fail_next(fault, command=command, times=times)

    return setup


def token_endpoint(*replies: Reply) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        ctx.mock.get(LEAD_URL, json=amo_lead())
        for status, headers, body in replies:
            ctx.mock.post(TOKEN_URL, status=status, headers=headers, body=body)
        ctx.mock.post(TOKEN_URL, json=TOKEN_ANSWER)

    return setup


def event_api(fault: Fault) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        if isinstance(fault, type):
            ctx.mock.post(EVENT_API, body=fault("injected fault"))
        else:
            status, headers, body = fault
            ctx.mock.post(EVENT_API, status=status, headers=headers, body=body)
        ctx.mock.post(EVENT_API, json={"ids": ["01ACCEPTED"], "status": 200})

    return setup


TOKEN_ANSWER = {
    "token_type": "Bearer",
    "expires_in": 86400,
    "access_token": "access-new-SECRET",
    "refresh_token": "refresh-new-SECRET",
}
REVOKED = (
    401,
    {"Content-Type": "application/problem+json"},
    json.dumps({"hint": "Token has been revoked", "title": "Некорректный запрос", "status": 401}),
)
TIMEOUT = requests.exceptions.ReadTimeout
RESET = requests.exceptions.ConnectionError
DB_ERROR = "<app_db_error>1054 - Unknown column 'abc' in 'WHERE'</app_db_error>"
FATAL = (
    "<br />\n<b>Fatal error</b>:  Uncaught TypeError: http_response_code(): Argument #1 "
    "($response_code) must be of type int, string given in api.php:1718"
)
NOTICES_THEN_JSON = (
    "<br />\n<b>Deprecated</b>:  Using ${var} in strings is deprecated in "
    "Client.php on line 47<br />\n"
    '{"status":"success","data":{"id":"901"}}'
)

ROWS: list[Row] = [
    # amoCRM (GET the lead; reference amocrm.md §4.3)
    Row("amoCRM", "read timeout", "retried", amo(TIMEOUT)),
    Row("amoCRM", "connection reset", "retried", amo(RESET)),
    Row("amoCRM", "500", "retried", amo((500, JSON, '{"title":"Internal"}'))),
    Row("amoCRM", "502 (HTML)", "retried", amo((502, HTML, "<html>Bad Gateway</html>"))),
    Row("amoCRM", "504", "retried", amo((504, HTML, ""))),
    Row("amoCRM", "429 with an HTML body", "retried", amo((429, HTML, HTML_429))),
    Row(
        "amoCRM",
        "503 on every attempt",
        "failed",
        amo(*[(503, HTML, "")] * MAX_ATTEMPTS, then_ok=False),
        ("503",),
    ),
    Row(
        "amoCRM",
        "401, long-lived token",
        "failed",
        amo((401, JSON, '{"title":"Unauthorized","status":401}'), then_ok=False),
        ("401", "AMOCRM_ACCESS_TOKEN"),
    ),
    Row(
        "amoCRM",
        "401 once, OAuth (refresh once, retry in the step)",
        "synced",
        amo((401, JSON, '{"title":"Unauthorized","status":401}')),
        oauth=True,
    ),
    Row(
        "amoCRM",
        "401 twice, OAuth",
        "failed",
        amo(*[(401, JSON, '{"title":"Unauthorized","status":401}')] * 2, then_ok=False),
        ("401", "callback"),
        oauth=True,
    ),
    Row(
        "amoCRM",
        "402 not paid",
        "failed",
        amo((402, JSON, '{"title":"Payment Required"}'), then_ok=False),
        ("402",),
    ),
    Row(
        "amoCRM",
        "403 HTML block page",
        "failed",
        amo((403, HTML, HTML_403), then_ok=False),
        ("403", "blocked"),
    ),
    Row("amoCRM", "200 with malformed JSON", "retried", amo((200, JSON, '{"id": 25399013,'))),
    Row("amoCRM", "200 with an HTML page", "retried", amo((200, HTML, "<html>maintenance</html>"))),
    Row("amoCRM", "204 no content", "skipped", amo((204, JSON, ""), then_ok=False)),
    Row(
        "amoCRM",
        "404 not found",
        "skipped",
        amo((404, JSON, '{"title":"Not Found"}'), then_ok=False),
    ),
    Row(
        "amoCRM",
        "token endpoint 503 during refresh",
        "retried",
        token_endpoint((503, HTML, "<html>Service Unavailable</html>")),
        oauth=True,
        expired=True,
    ),
    Row(
        "amoCRM",
        "token endpoint 401 revoked",
        "failed",
        token_endpoint(*[REVOKED] * 3),
        ("revoked", "callback"),
        oauth=True,
        expired=True,
    ),
    # ERP (Rukovoditel; reference rukovoditel-live.md)
    Row("ERP", "read timeout, request lost", "retried", erp(TIMEOUT)),
    Row("ERP", "read timeout after the insert landed", "retried", erp(TIMEOUT, after_effect=True)),
    Row("ERP", "connection reset", "retried", erp(RESET)),
    Row("ERP", "connection reset on the lookup", "retried", erp(RESET, "select")),
    Row("ERP", "502", "retried", erp((502, HTML, "<html>Bad Gateway</html>"))),
    Row("ERP", "503", "retried", erp((503, HTML, "<html>Service Unavailable</html>"))),
    Row("ERP", "504", "retried", erp((504, HTML, ""))),
    Row("ERP", "500 with the web server's HTML page", "retried", erp((500, HTML, HTML_500))),
    Row("ERP", "429 with an HTML body", "retried", erp((429, HTML, HTML_429))),
    Row(
        "ERP",
        "503 on every attempt",
        "failed",
        erp((503, HTML, ""), times=MAX_ATTEMPTS * 2),
        ("503",),
    ),
    Row(
        "ERP",
        "500 JSON error (field not in entity)",
        "failed",
        erp(
            (
                500,
                HTML,
                '{"status":"error","error_code":500,'
                '"error_message":"field_1040 not exist in entity 70"}',
            )
        ),
        ("field_1040",),
    ),
    Row("ERP", "500 empty body (bad login)", "failed", erp((500, HTML, "")), ("CRM_API_USERNAME",)),
    Row(
        "ERP",
        "200 with status:error",
        "failed",
        erp(
            (200, HTML, '{"status":"error","error_code":"","error_message":"entity 70 not found"}')
        ),
        ("entity 70 not found",),
    ),
    Row("ERP", "200 with <app_db_error> HTML", "failed", erp((200, HTML, DB_ERROR)), ("1054",)),
    Row(
        "ERP",
        "200 with a PHP fatal error (display_errors=On)",
        "failed",
        erp((200, HTML, FATAL)),
        ("fatal",),
    ),
    Row(
        "ERP",
        "200 PHP notices before the JSON",
        "synced",
        erp((200, HTML, NOTICES_THEN_JSON), after_effect=True),
    ),
    # A cut-off body or a web server's own error page is not an answer of Rukovoditel: retry.
    Row("ERP", "200 with malformed JSON", "retried", erp((200, HTML, '{"status":"success",'))),
    Row(
        "ERP",
        "500 HTML page from the web server",
        "retried",
        erp((500, HTML, "<html><h1>500 Internal Server Error</h1></html>")),
    ),
    Row("ERP", "401 from a proxy (HTML)", "failed", erp((401, HTML, "<html>401</html>")), ("401",)),
    Row("ERP", "403 from a proxy (HTML)", "failed", erp((403, HTML, HTML_403)), ("403",)),
    # KV (the OAuth pair; reference vercel-kv.md §B6)
    Row("KV", "read timeout", "retried", kv(TIMEOUT), oauth=True),
    Row("KV", "connection reset", "retried", kv(RESET), oauth=True),
    Row("KV", "502", "retried", kv((502, HTML, "<html>Bad Gateway</html>")), oauth=True),
    Row("KV", "503", "retried", kv((503, JSON, '{"error":"service unavailable"}')), oauth=True),
    Row("KV", "429 with an HTML body", "retried", kv((429, HTML, HTML_429)), oauth=True),
    Row(
        "KV",
        "401 wrong token",
        "failed",
        kv((401, JSON, '{"error":"WRONGPASS invalid or missing auth token"}')),
        ("KV_REST_API_TOKEN",),
        oauth=True,
    ),
    Row("KV", "403 (HTML)", "failed", kv((403, HTML, HTML_403)), ("KV_REST_API_URL",), oauth=True),
    Row(
        "KV",
        "200 with malformed JSON",
        "failed",
        kv((200, JSON, '{"result": ')),
        ("KV_REST_API_URL",),
        oauth=True,
    ),
    Row(
        "KV",
        "NOPERM on every write (read-only token)",
        "failed",
        kv(
            (
                400,
                JSON,
                '{"error":"NOPERM this user has no permissions to run the \'set\' command"}',
            ),
            # A read-only token fails on the first write: the refresh lock's SET NX.
            "SET",
            times=50,
        ),
        ("read-only",),
        oauth=True,
        expired=True,
    ),
    Row(
        "KV",
        "503 on the lock during refresh",
        "synced",  # the lease's acquire is tried twice (its answer may have been lost)
        kv((503, HTML, ""), "SET"),
        oauth=True,
        expired=True,
    ),
    Row(
        "KV",
        "503 once on the token write after the refresh",
        "synced",
        kv((503, HTML, ""), "EVAL"),
        oauth=True,
        expired=True,
    ),
    Row(
        "KV",
        "503 on every token write of one call",
        "synced",  # the holder keeps writing a pair amoCRM issued for its persist window
        kv((503, HTML, ""), "EVAL", times=3),
        oauth=True,
        expired=True,
    ),
    # Inngest event API (the intake; reference inngest.md, DESIGN 3.2: 503 so amoCRM retries)
    Row("event API", "read timeout", "503", event_api(TIMEOUT), ("inngest",)),
    Row("event API", "connection reset", "503", event_api(RESET), ("inngest",)),
    Row("event API", "500", "503", event_api((500, JSON, '{"error":"internal"}')), ("500",)),
    Row(
        "event API",
        "502 (HTML)",
        "503",
        event_api((502, HTML, "<html>Bad Gateway</html>")),
        ("502",),
    ),
    Row("event API", "429 with an HTML body", "503", event_api((429, HTML, HTML_429)), ("429",)),
    Row(
        "event API",
        "401 wrong event key",
        "503",
        event_api((401, JSON, '{"error":"Event key not found"}')),
        ("INNGEST_EVENT_KEY",),
    ),
    Row("event API", "403", "503", event_api((403, HTML, HTML_403)), ("403",)),
    Row(
        "event API", "200 with malformed JSON", "503", event_api((200, JSON, '{"ids": [')), ("ids",)
    ),
    Row(
        "event API",
        "200 with an error body",
        "503",
        event_api((200, JSON, '{"error":"event name is invalid","status":400}')),
        ("invalid",),
    ),
]

MATRIX: list[tuple[Row, Outcome]] = []


# ---- runners ---------------------------------------------------------------------------------


@pytest.fixture
def ctx() -> Iterator[Ctx]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield Ctx(mock, FakeRukovoditel(ERP_URL).install(mock), FakeKV().install(mock))


def seed_tokens(*, expired: bool) -> None:
    now = int(time.time())
    KVTokenStore(KVClient(KV_URL, KV_TOKEN)).write(
        TokenRecord(
            access_token=SecretStr("access-old-SECRET"),
            refresh_token=SecretStr("refresh-old-SECRET"),
            expires_at=now - 60 if expired else now + 20 * 3600,
            obtained_at=now - 4 * 3600,
            host="example.amocrm.ru",
        )
    )


def records(erp_fake: FakeRukovoditel) -> tuple[int, int]:
    rows = erp_fake.rows.get(70, [])
    lead_rows = [r for r in rows if r.get(f"field_{LOOKUP_FIELD}") == str(LEAD_ID)]
    return len(rows), max(0, len(lead_rows) - 1) + max(0, len(rows) - len(lead_rows))


def run_lead(row: Row, ctx: Ctx, set_env: Any) -> Outcome:
    env: dict[str, str | None] = {"ERP_LEAD_ID_FIELD": LOOKUP_FIELD}
    if row.oauth:
        env.update(
            AMOCRM_ACCESS_TOKEN=None,
            AMOCRM_CLIENT_ID="client-id-0000",
            AMOCRM_CLIENT_SECRET="client-secret-SECRET-6666",
            AMOCRM_REDIRECT_URI="https://prometei.example.test/api/oauth/callback",
            KV_REST_API_URL=KV_URL,
            KV_REST_API_TOKEN=KV_TOKEN,
        )
    set_env(**env)
    if row.oauth:
        seed_tokens(expired=row.expired)
        ctx.kv.commands.clear()
    row.setup(ctx)
    if row.oauth and not any(getattr(r, "url", None) == TOKEN_URL for r in ctx.mock.registered()):
        ctx.mock.post(TOKEN_URL, json=TOKEN_ANSWER)  # a healthy token endpoint
    from prometei.web.apps import create_inngest_app

    run = run_function(
        create_inngest_app().test_client(),
        FN,
        make_event(
            "amocrm/lead.status", {"lead_id": LEAD_ID, "status_id": 142, "pipeline_id": 7012345}
        ),
        max_attempts=MAX_ATTEMPTS,
    )
    output = run.output if isinstance(run.output, dict) else {}
    errors = sum(1 for op in run.step_outputs if op.get("op") in ("StepError", "StepFailed"))
    retried = errors > 0 or any(status == 500 for status, _ in run.responses[:-1])
    if run.status == "Completed" and output.get("status") == "skipped":
        kind = "skipped"
    elif run.status == "Completed":
        kind = "retried" if retried else "synced"
    else:
        kind = "failed"
    failing = {
        "amoCRM": sum(1 for c in ctx.mock.calls if "amocrm.ru" in c.request.url),
        "ERP": len(ctx.erp.calls),
        "KV": len(ctx.kv.commands),
    }[row.system]
    total, duplicates = records(ctx.erp)
    message = str(output.get("message") or "")
    detail = f"{run.status.lower()} after {run.calls} call(s)"
    if kind == "failed":
        code = output.get("code")
        detail += " (non-retriable)" if code == "non_retriable_error" else " (retries exhausted)"
    refreshes = sum(  # rotations: token requests amoCRM answered with a new pair
        1
        for c in ctx.mock.calls
        if c.request.url == TOKEN_URL and getattr(c.response, "status_code", 0) == 200
    )
    return Outcome(kind, detail, run.calls, failing, total, duplicates, message, refreshes)


def run_intake(row: Row, ctx: Ctx) -> Outcome:
    from prometei.web.apps import create_webhook_app

    row.setup(ctx)
    client = create_webhook_app().test_client()
    url = f"/api/webhook?token={TEST_SECRETS['AMOCRM_WEBHOOK_SECRET']}"
    first = client.post(
        url, data=encode(STATUS_LEAD), content_type="application/x-www-form-urlencoded"
    )
    again = client.post(
        url, data=encode(STATUS_LEAD), content_type="application/x-www-form-urlencoded"
    )
    sent = [json.loads(c.request.body) for c in ctx.mock.calls if c.request.url == EVENT_API]
    ids = [[event["id"] for event in events] for events in sent]
    assert again.status_code == 200, again.get_json()
    # amoCRM's redelivery carries the same event id, so Inngest starts nothing twice.
    assert len(ids) == 2 and ids[0] == ids[1], ids
    payload = first.get_json() or {}
    kind = "503" if first.status_code == 503 else str(first.status_code)
    return Outcome(
        kind,
        f"{first.status_code}; redelivery 200 with the same event id",
        2,
        len(sent),
        0,
        0,
        str(payload.get("error", "")),
    )


@pytest.fixture(scope="module", autouse=True)
def matrix_report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not MATRIX:
        return
    table = render(MATRIX)
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line("")
        for line in table.splitlines():
            reporter.write_line(line)
    out = os.environ.get("FAULT_MATRIX_OUT")
    if out:
        Path(out).write_text(
            "# Fault matrix\n\n"
            "Generated by `FAULT_MATRIX_OUT=docs/fault-matrix.md .venv/bin/python -m pytest "
            "tests/test_fault_matrix.py -q` (also run by `make bench`). Each row makes one "
            "outside system fail one way and records what the pipeline did; every row also "
            "checks that the ERP holds no second record. amoCRM/ERP/KV rows run the lead "
            "handler with ERP_LEAD_ID_FIELD set (KV rows: OAuth mode, tokens in KV); event "
            "API rows drive /api/webhook and then redeliver the same webhook.\n\n" + table + "\n",
            encoding="utf-8",
        )


def render(matrix: list[tuple[Row, Outcome]]) -> str:
    lines = [
        "| system | failure | expected | observed | executor calls | requests to that system "
        "| token rotations | ERP records | duplicates | message (excerpt) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, o in sorted(matrix, key=lambda pair: ROWS.index(pair[0])):
        message = re.sub(r"\s+", " ", o.message)[:110].replace("|", "\\|")
        lines.append(
            f"| {row.system} | {row.failure} | {row.expect} | {o.kind}: {o.detail} | {o.calls} "
            f"| {o.failing_calls} | {o.refreshes} | {o.records} | {o.duplicates} | {message} |"
        )
    return "\n".join(lines)


# ---- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_fault(row: Row, ctx: Ctx, set_env: Any) -> None:
    outcome = run_intake(row, ctx) if row.system == "event API" else run_lead(row, ctx, set_env)
    MATRIX.append((row, outcome))

    assert outcome.kind == row.expect, (outcome, ctx.erp.calls)
    assert outcome.duplicates == 0, "a second ERP record for the same lead"
    # single-use refresh tokens: never a second refresh (it would present a spent token)
    assert outcome.refreshes <= 1, outcome
    for word in row.words:
        assert word.lower() in outcome.message.lower(), (word, outcome.message)
    if row.expect in ("retried", "synced"):
        assert outcome.records == 1
    if row.expect == "skipped":
        assert outcome.records == 0 and not ctx.erp.calls
    for secret in (*TEST_SECRETS.values(), KV_TOKEN, "refresh-old-SECRET", "access-new-SECRET"):
        assert secret not in outcome.message
