"""Our logging under Vercel's own Python runtime, running the bundles `vercel build` produced.

The runtime installs a root logging handler that forwards records to Vercel's log view, and
forwards stdout too. What must hold there: each record arrives once, as our JSON line; the
SDK's unsigned-probe refusals never arrive at level error; configured secrets never arrive.
What README states about the runtime's own access line is checked here too.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BASE_ENV, TEST_SECRETS
from tests.deploy.runtime_host import LogLine, RuntimeHost
from tests.deploy.vercel_build import BuildResult

ACCESS_LINE = re.compile(r'^\S+ - - \[[^\]]+\] "(\S+) (\S+) HTTP/1\.[01]" (\d{3}) ')
WRONG_TOKEN = "wrong-token-in-the-url-0123"
CLOUD_ENV = {
    **BASE_ENV,
    "VERCEL": "1",
    "VERCEL_ENV": "production",
    "VERCEL_PROJECT_PRODUCTION_URL": "prometei.example.com",
    "INNGEST_SERVE_ORIGIN": "https://prometei.example.com",
}


@pytest.fixture
def start(build: BuildResult, python: str, tmp_path: Path) -> Iterator:
    hosts: list[RuntimeHost] = []

    def start_function(route: str, env: dict[str, str]) -> RuntimeHost:
        workdir = tmp_path / f"fn{len(hosts)}"
        workdir.mkdir()
        host = RuntimeHost(build, build.functions[route], workdir, python)
        hosts.append(host)
        host.start(env)
        return host

    yield start_function
    for host in hosts:
        host.stop()


def _split(lines: list[LogLine]) -> tuple[list[LogLine], list[dict]]:
    """(the runtime's access lines, our records parsed); fails on any other kind of line."""
    access, records = [], []
    for line in lines:
        assert line.level is None, f"a record went through the runtime's own handler: {line}"
        for text in filter(None, line.text.split("\n")):
            if ACCESS_LINE.match(text):
                access.append(line)
            else:
                records.append(json.loads(text))  # one JSON object per line, nothing else
    return access, records


def _no_secret_in(lines: list[LogLine]) -> None:
    text = "\n".join(line.text for line in lines)
    for name, value in TEST_SECRETS.items():
        assert value not in text, name


def test_webhook_refusal_is_logged_once_as_our_json_line(start) -> None:
    host = start("api/webhook", CLOUD_ENV)
    status, _, request_id = host.request(
        "POST",
        f"/api/webhook?token={WRONG_TOKEN}",
        body=b"leads%5Bstatus%5D%5B0%5D%5Bid%5D=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert status == 401
    access, records = _split(host.logs(request_id))
    assert len(records) >= 1
    assert all(set(record) >= {"ts", "level", "logger", "message"} for record in records)
    assert len({json.dumps(record) for record in records}) == len(records)
    # README: Vercel's runtime writes an access line per request, query string included.
    assert len(access) == 1
    assert f"/api/webhook?token={WRONG_TOKEN}" in access[0].text
    _no_secret_in(host.logs())


def test_cold_start_configuration_error_is_one_line(start) -> None:
    # INNGEST_DEV on Vercel is refused at import; the app answers 503 and logs why, once.
    host = start("api/webhook", dict(CLOUD_ENV, INNGEST_DEV="1"))
    status, body, _ = host.request("GET", "/api/webhook")
    assert status == 503
    assert b"INNGEST_DEV" in body
    _, records = _split(host.logs(0))
    problems = [record for record in records if "INNGEST_DEV" in record["message"]]
    assert [record["level"] for record in problems] == ["error"]
    _no_secret_in(host.logs())


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-inngest-signature": f"t={int(time.time())}&s={'0' * 64}"},
    ],
    ids=["unsigned", "bad-signature"],
)
def test_executor_probe_refusals_never_reach_the_log_at_level_error(start, headers) -> None:
    host = start("api/inngest", CLOUD_ENV)
    status, _, request_id = host.request(
        "POST",
        "/api/inngest?fnId=prometei-amocrm-webhook-handler&stepId=step",
        body=b'{"event": {}, "events": [], "steps": {}, "ctx": {}}',
        headers={"content-type": "application/json", **headers},
    )
    assert status == 401
    _, records = _split(host.logs(request_id))
    assert [r for r in records if r["level"] == "error"] == []
    assert [r for r in records if "unauthorized" in r["message"].lower()] == []
    _no_secret_in(host.logs())
