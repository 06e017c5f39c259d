"""`replay` and `backfill` against the paging fake amoCRM and a mock of the event API.

The backfill's rate limiter runs on a fake clock: the fake's request log records the fake time
of every amoCRM request, so the rate bound is measured where requests land and nothing sleeps.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import responses
from click.testing import CliRunner, Result

from prometei.cli import leads
from prometei.cli.leads import backfill, default_state_file, replay
from tests.conftest import AMO_BASE, EVENT_API, TEST_SECRETS
from tests.support.amo_listing import BASE_TIME, WiredAmo, fake_amo

LEADS_URL = re.compile(re.escape(AMO_BASE) + r"/api/v4/leads(\?.*)?$")
PIPELINE = 7012345
SINCE_2025 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())


@pytest.fixture(autouse=True)
def _restore_root_level():
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def assert_no_secrets(result: Result) -> None:
    for text in (result.output, result.stdout, result.stderr):
        for secret in TEST_SECRETS.values():
            assert secret not in text


def run(command, *args: str) -> Result:
    result = CliRunner().invoke(command, list(args))
    assert_no_secrets(result)
    return result


@pytest.fixture
def amo(mock, monkeypatch) -> Iterator[WiredAmo]:
    """The paging fake amoCRM; the backfill's limiter runs on its fake clock."""
    with fake_amo(mock) as wired:
        monkeypatch.setattr(leads, "clock", wired.clock.now)
        monkeypatch.setattr(leads, "sleep", wired.clock.sleep)
        yield wired


class Inngest:
    """The event API; the `fail_on`-th call (1-based) answers 500, the `interrupt_on`-th
    one is cut off by Ctrl-C."""

    def __init__(self, fail_on: int | None = None, interrupt_on: int | None = None) -> None:
        self.batches: list[list[dict]] = []
        self.calls = 0
        self.fail_on = fail_on
        self.interrupt_on = interrupt_on

    def __call__(self, request):
        self.calls += 1
        if self.calls == self.interrupt_on:
            raise KeyboardInterrupt  # Ctrl-C while the request is in flight
        if self.calls == self.fail_on:
            return 500, {}, "upstream trouble"
        events = json.loads(request.body)
        self.batches.append(events)
        return 200, {}, json.dumps({"ids": [f"01J{i}" for i in range(len(events))], "status": 200})

    @property
    def event_ids(self) -> list[str]:
        return [event["id"] for batch in self.batches for event in batch]

    @property
    def lead_ids(self) -> list[int]:
        return [event["data"]["lead_id"] for batch in self.batches for event in batch]


def wire(mock, amo: WiredAmo, total: int, inngest: Inngest | None = None) -> Inngest:
    amo.add_leads(total, pipeline_id=PIPELINE, status_id=142)
    events = inngest or Inngest()
    mock.add_callback(responses.POST, EVENT_API, callback=events)
    return events


def state_files(env) -> list[Path]:
    return sorted(Path(env["PROMETEI_STATE_DIR"]).glob("backfill-*.json"))


def list_queries(amo: WiredAmo) -> list[dict[str, list[str]]]:
    return [entry.query for entry in amo.amo.requests("GET", "/api/v4/leads")]


# ---- backfill ---------------------------------------------------------------------------------


def test_backfill_lists_every_lead_with_the_filters_and_counts_them(mock, amo, project_env):
    inngest = wire(mock, amo, total=5)
    amo.amo.leads[3].status_id = 999  # listed (the pipeline is asked for), filtered here
    result = run(
        backfill,
        "--pipeline-id", str(PIPELINE),
        "--status-id", "142",
        "--status-id", "143",
        "--updated-since", "2025-01-01",
        "--page-size", "2",
        "--batch-size", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    first = list_queries(amo)[0]
    assert first["filter[pipeline_id]"] == [str(PIPELINE)]
    assert first["filter[updated_at][from]"] == [str(SINCE_2025 - 1)]
    assert first["order[updated_at]"] == ["asc"] and first["limit"] == ["2"]
    assert inngest.event_ids == [f"sync-{i}-{BASE_TIME + i - 1}" for i in (1, 2, 4, 5)]
    assert all(len(b) <= 2 for b in inngest.batches)
    assert {e["name"] for b in inngest.batches for e in b} == {"amocrm/lead.sync"}
    assert inngest.batches[0][0]["data"] == {"lead_id": 1, "source": "backfill"}
    requests = len(list_queries(amo))
    assert (
        f"done: 5 lead(s) listed = 4 sent + 1 filtered out + 0 failed; {requests} amoCRM "
        "request(s)" in result.stdout
    )
    [record] = state_files(project_env)
    state = json.loads(record.read_text())
    assert state["finished_at"] and state["counts"]["listed"] == 5
    assert record.name in result.stdout


@pytest.mark.parametrize(
    ("budget", "rate", "expected"), [(None, None, 1), ("3", "2", 2), ("3", None, 3)]
)
def test_backfill_stays_within_its_share_measured_at_the_fake(
    mock, amo, set_env, budget, rate, expected
):
    if budget:
        set_env(AMOCRM_BUDGET_BACKFILL=budget, AMOCRM_BUDGET_RUNS="3")
    wire(mock, amo, total=12)
    result = run(backfill, "--page-size", "1", *(("--rate", rate) if rate else ()))
    assert result.exit_code == 0, result.output
    assert len(list_queries(amo)) >= 12
    # Any one-second window at the fake, wherever it starts, holds at most the share.
    assert amo.amo.peak_rate(1.0) == expected
    assert amo.clock.slept, "the limiter never waited: the bound was not exercised"


def test_backfill_rate_above_its_share_is_refused_before_any_request(mock, amo):
    inngest = wire(mock, amo, total=3)
    result = run(backfill, "--rate", "2")
    assert result.exit_code == 2
    assert "AMOCRM_BUDGET_BACKFILL=1" in result.stderr
    assert list_queries(amo) == [] and inngest.calls == 0


def test_backfill_dry_run_lists_and_sends_nothing(mock, amo, project_env):
    inngest = wire(mock, amo, total=5)
    result = run(backfill, "--pipeline-id", str(PIPELINE), "--page-size", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert inngest.calls == 0
    assert "dry run: 5 lead(s) listed = 5 to sync + 0 filtered out" in result.stdout
    assert "nothing was sent" in result.stdout
    assert state_files(project_env) == []


def test_backfill_resumes_with_another_page_size_and_skips_nothing(mock, amo, project_env):
    inngest = wire(mock, amo, total=9, inngest=Inngest(fail_on=2))
    args = ("--pipeline-id", str(PIPELINE), "--batch-size", "2")

    first = run(backfill, *args, "--page-size", "4")
    assert first.exit_code == 1
    assert "progress is saved in" in first.stderr
    assert "run the same command again to continue from there" in first.stderr
    assert re.search(r"\d+ lead\(s\) listed = 2 sent \+ 0 filtered out \+ \d+ failed", first.stderr)
    [state_file] = state_files(project_env)
    assert json.loads(state_file.read_text())["committed"]["sent"] == 2

    second = run(backfill, *args, "--page-size", "250")  # the README's advice after a 504
    assert second.exit_code == 0, second.output
    assert "resumed from saved progress" in second.stdout
    assert sorted(inngest.lead_ids) == list(range(1, 10))  # each once, none skipped
    assert "9 lead(s) listed = 9 sent + 0 filtered out + 0 failed" in second.stdout


def test_backfill_restart_ignores_saved_progress(mock, amo, project_env):
    inngest = wire(mock, amo, total=3, inngest=Inngest(fail_on=2))
    assert run(backfill, "--batch-size", "1").exit_code == 1
    result = run(backfill, "--batch-size", "1", "--restart")
    assert result.exit_code == 0, result.output
    assert inngest.lead_ids == [1, 1, 2, 3]


def test_backfill_interrupted_keeps_progress(mock, amo, project_env):
    wire(mock, amo, total=4, inngest=Inngest(interrupt_on=3))
    result = run(backfill, "--batch-size", "1")
    assert result.exit_code == 1
    assert "interrupted" in result.stderr
    [state_file] = state_files(project_env)
    assert json.loads(state_file.read_text())["committed"]["sent"] == 2


def test_backfill_prints_plain_progress_lines_without_a_terminal(mock, amo, monkeypatch):
    monkeypatch.setattr(leads, "PROGRESS_EVERY_S", 0.0)
    wire(mock, amo, total=6)
    result = run(backfill, "--page-size", "3", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("backfill: ")]
    assert len(lines) >= 3 and "\r" not in result.stderr
    assert lines[-1].startswith("backfill: 6 listed, 6 sent, 0 filtered, 0 failed;")
    assert "leads updated up to 2025-01-01 02:53:25 UTC" in lines[-1]


def test_backfill_stops_on_an_amocrm_auth_failure(mock, amo):
    amo.amo.access_tokens.clear()
    result = run(backfill)
    assert result.exit_code == 1
    assert "(401)" in result.stderr
    assert "0 lead(s) listed = 0 sent" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--status-id", "142"),  # a stage needs its pipeline
        ("--rate", "8"),
        ("--rate", "0"),
        ("--rate", "2.5"),
        ("--updated-since", "01.01.2025"),
        ("--page-size", "251"),
    ],
)
def test_backfill_bad_options_exit_2_before_any_request(mock, amo, args):
    inngest = wire(mock, amo, total=1)
    result = run(backfill, *args)
    assert result.exit_code == 2
    assert list_queries(amo) == [] and inngest.calls == 0


def test_backfill_without_a_token_configuration_exits_2_before_any_request(mock, amo, set_env):
    inngest = wire(mock, amo, total=1)
    set_env(AMOCRM_ACCESS_TOKEN=None)
    result = run(backfill)
    assert result.exit_code == 2
    assert "AMOCRM_CLIENT_ID" in result.stderr
    assert "backfill:" not in result.output
    assert list_queries(amo) == [] and inngest.calls == 0


def test_default_state_file_is_per_filter_under_the_state_dir(tmp_path):
    a = default_state_file(tmp_path, PIPELINE, [142], None)
    b = default_state_file(tmp_path, PIPELINE, [143], None)
    assert a.parent == tmp_path and a.name.startswith("backfill-")
    assert a != b
    assert a == default_state_file(tmp_path, PIPELINE, [142], None)


# ---- replay -----------------------------------------------------------------------------------


@pytest.fixture
def inngest(mock) -> Inngest:
    events = Inngest()
    mock.add_callback(responses.POST, EVENT_API, callback=events)
    return events


def test_replay_sends_one_sync_event_per_lead_with_keyed_ids(inngest):
    result = run(replay, "25399013", "25400001", "25399013", "--key", "after-outage")
    assert result.exit_code == 0, result.output
    [batch] = inngest.batches
    assert batch == [
        {
            "name": "amocrm/lead.sync",
            "data": {"lead_id": 25399013, "force": True},
            "id": "replay-25399013-after-outage",
        },
        {
            "name": "amocrm/lead.sync",
            "data": {"lead_id": 25400001, "force": True},
            "id": "replay-25400001-after-outage",
        },
    ]
    assert "lead 25399013: sent amocrm/lead.sync id=replay-25399013-after-outage" in result.stdout
    assert "2 event(s) sent" in result.stdout


def test_replay_default_key_is_the_invocation_time(inngest, monkeypatch):
    monkeypatch.setattr(leads, "now", lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    result = run(replay, "42")
    assert result.exit_code == 0
    assert inngest.event_ids == ["replay-42-20260102T030405"]


def test_replay_failure_exits_1_and_prints_the_key_to_retry_with(mock, monkeypatch):
    monkeypatch.setattr(leads, "now", lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    mock.post(EVENT_API, status=401, json={"error": "event key not found"})
    result = run(replay, "42")
    assert result.exit_code == 1
    assert "(401)" in result.stderr
    assert "--key 20260102T030405" in result.stderr


def test_replay_without_event_key_in_cloud_mode_is_a_config_error(mock, set_env):
    set_env(INNGEST_EVENT_KEY=None)
    result = run(replay, "42")
    assert result.exit_code == 2
    assert "INNGEST_EVENT_KEY" in result.stderr
    assert len(mock.calls) == 0


@pytest.mark.parametrize("args", [("0",), ("abc",), (), ("42", "--key", "bad key!")])
def test_replay_bad_input_exits_2(inngest, args):
    result = run(replay, *args)
    assert result.exit_code == 2
    assert inngest.calls == 0
