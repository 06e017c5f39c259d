"""`replay` and `backfill` against `responses` mocks of amoCRM and the Inngest event API.

The backfill's rate limiter runs on a fake clock: the mock records the fake time of every
amoCRM request, so the rate bound is measured from request timestamps and nothing sleeps.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from click.testing import CliRunner, Result

from prometei.cli import leads
from prometei.cli.leads import backfill, default_state_file, replay
from tests.conftest import AMO_BASE, EVENT_API, TEST_SECRETS

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


class FakeClock:
    """Monotonic time that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.t = 5000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.t += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(leads, "clock", fake.now)
    monkeypatch.setattr(leads, "sleep", fake.sleep)
    return fake


def lead(lead_id: int) -> dict:
    return {
        "id": lead_id,
        "name": f"Order #{lead_id}",
        "price": 1000,
        "status_id": 142,
        "pipeline_id": PIPELINE,
        "updated_at": 1_735_700_000 + lead_id,
        "account_id": 29085955,
    }


class Amo:
    """GET /api/v4/leads over `total` leads, paged by the request's `limit`."""

    def __init__(self, clock: FakeClock, total: int) -> None:
        self.clock = clock
        self.total = total
        self.requests: list[tuple[float, dict[str, str]]] = []

    def __call__(self, request):
        params = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        self.requests.append((self.clock.now(), params))
        page, limit = int(params["page"]), int(params["limit"])
        ids = list(range(1, self.total + 1))[(page - 1) * limit : page * limit]
        if not ids:
            return 204, {}, ""
        links = {"self": {"href": "..."}}
        if page * limit < self.total:
            links["next"] = {"href": "..."}
        body = {"_page": page, "_links": links, "_embedded": {"leads": [lead(i) for i in ids]}}
        return 200, {}, json.dumps(body)

    @property
    def pages(self) -> list[int]:
        return [int(params["page"]) for _, params in self.requests]


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


def wire(mock, clock: FakeClock, total: int, inngest: Inngest | None = None) -> tuple[Amo, Inngest]:
    amo = Amo(clock, total)
    events = inngest or Inngest()
    mock.add_callback(responses.GET, LEADS_URL, callback=amo)
    mock.add_callback(responses.POST, EVENT_API, callback=events)
    return amo, events


def state_files(env) -> list[Path]:
    return sorted(Path(env["PROMETEI_STATE_DIR"]).glob("backfill-*.json"))


# ---- backfill ---------------------------------------------------------------------------------


def test_backfill_pages_through_every_lead_with_the_filters(mock, clock, project_env):
    amo, inngest = wire(mock, clock, total=5)
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
    assert amo.pages == [1, 2, 3]
    first = amo.requests[0][1]
    assert first["filter[statuses][0][pipeline_id]"] == str(PIPELINE)
    assert first["filter[statuses][0][status_id]"] == "142"
    assert first["filter[statuses][1][status_id]"] == "143"
    assert first["filter[updated_at][from]"] == str(SINCE_2025)
    assert first["order[updated_at]"] == "asc"
    assert first["limit"] == "2"
    assert inngest.event_ids == [f"sync-{i}-{1_735_700_000 + i}" for i in range(1, 6)]
    assert [len(b) for b in inngest.batches] == [2, 2, 1]
    assert {e["name"] for b in inngest.batches for e in b} == {"amocrm/lead.sync"}
    assert inngest.batches[0][0]["data"] == {"lead_id": 1}
    assert "done: 5 sync event(s) sent for 5 lead(s) in 3 page(s)" in result.stdout
    assert state_files(project_env) == []  # a finished run leaves no progress file


@pytest.mark.parametrize(("rate", "pages"), [(None, 20), ("3", 12), ("7", 30)])
def test_backfill_never_exceeds_the_rate_measured_at_the_mock(mock, clock, rate, pages):
    amo, _ = wire(mock, clock, total=pages)
    result = run(backfill, "--page-size", "1", *(("--rate", rate) if rate else ()))
    assert result.exit_code == 0, result.output
    assert len(amo.requests) == pages
    limit = int(rate or 6)  # the default stays below amoCRM's 7/s
    stamps = [t for t, _ in amo.requests]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 1 / limit - 1e-9
    # Any one-second window, wherever it starts, holds at most `rate` requests.
    for start in stamps:
        # (1e-6 s of slack: requests exactly 1/rate apart add up to 0.9999999999991 s.)
        assert sum(1 for t in stamps if start <= t < start + 1 - 1e-6) <= limit
    assert clock.slept, "the limiter never waited: the bound was not exercised"


def test_backfill_dry_run_lists_and_sends_nothing(mock, clock, project_env):
    amo, inngest = wire(mock, clock, total=5)
    result = run(backfill, "--pipeline-id", str(PIPELINE), "--page-size", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert amo.pages == [1, 2, 3]
    assert amo.requests[0][1]["filter[pipeline_id]"] == str(PIPELINE)
    assert inngest.calls == 0
    assert "dry run: 5 lead(s) in 3 page(s) would be synced; nothing was sent" in result.stdout
    assert state_files(project_env) == []


def test_backfill_resumes_after_the_last_finished_page(mock, clock, project_env):
    amo, inngest = wire(mock, clock, total=5, inngest=Inngest(fail_on=2))
    args = ("--pipeline-id", str(PIPELINE), "--page-size", "2", "--batch-size", "2")

    first = run(backfill, *args)
    assert first.exit_code == 1
    assert "progress is saved" in first.stderr
    assert "run the same command again to resume" in first.stderr
    [state_file] = state_files(project_env)
    state = json.loads(state_file.read_text())
    assert state["last_completed_page"] == 1
    assert inngest.event_ids == ["sync-1-1735700001", "sync-2-1735700002"]

    amo.requests.clear()
    second = run(backfill, *args)
    assert second.exit_code == 0, second.output
    assert amo.pages == [2, 3]  # page 1 is not fetched again
    assert inngest.event_ids == [f"sync-{i}-{1_735_700_000 + i}" for i in range(1, 6)]
    assert "resumed at page 2" in second.stdout
    assert state_files(project_env) == []


def test_backfill_restart_ignores_saved_progress(mock, clock, project_env):
    amo, _ = wire(mock, clock, total=3, inngest=Inngest(fail_on=2))
    args = ("--page-size", "1")
    assert run(backfill, *args).exit_code == 1
    amo.requests.clear()
    result = run(backfill, *args, "--restart")
    assert result.exit_code == 0, result.output
    assert amo.pages[0] == 1


def test_backfill_interrupted_keeps_progress(mock, clock, project_env):
    wire(mock, clock, total=4, inngest=Inngest(interrupt_on=3))
    result = run(backfill, "--page-size", "1")
    assert result.exit_code == 1
    assert "interrupted" in result.stderr
    [state_file] = state_files(project_env)
    assert json.loads(state_file.read_text())["last_completed_page"] == 2


def test_backfill_stops_on_an_amocrm_auth_failure(mock, clock):
    mock.get(LEADS_URL, status=401, json={"title": "Unauthorized"})
    result = run(backfill)
    assert result.exit_code == 1
    assert "(401)" in result.stderr


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
def test_backfill_bad_options_exit_2_before_any_request(mock, clock, args):
    amo, inngest = wire(mock, clock, total=1)
    result = run(backfill, *args)
    assert result.exit_code == 2
    assert amo.requests == [] and inngest.calls == 0


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


def test_backfill_without_a_token_configuration_exits_2_before_any_request(mock, clock, set_env):
    amo, inngest = wire(mock, clock, total=1)
    set_env(AMOCRM_ACCESS_TOKEN=None)
    result = run(backfill)
    assert result.exit_code == 2
    assert "AMOCRM_CLIENT_ID" in result.stderr
    assert "listing leads" not in result.output and "sending" not in result.output
    assert amo.requests == [] and inngest.calls == 0
