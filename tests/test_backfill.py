"""Backfill engine: paging, batching, rate bound, dry run, resume, stable ids."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from prometei.amocrm.client import AmoCRMClient
from prometei.amocrm.models import LeadSnapshot
from prometei.amocrm.ratelimit import RateLimiter
from prometei.backfill import Backfill, BackfillReport, sync_event_id
from prometei.errors import UpstreamUnavailable
from prometei.events import SYNC_EVENT, sync_event
from tests.conftest import AMO_BASE

LEADS_URL = f"{AMO_BASE}/api/v4/leads"
EPS = 1e-9


class FakeTokens:
    def access_token(self) -> str:
        return "amo-token-SECRET-backfill"

    def after_unauthorized(self, rejected: str) -> str | None:
        return None

    def account_host(self) -> str:
        return "example.amocrm.ru"


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeAmo:
    """Serves /api/v4/leads pages from a dict; records (page, fake time) per request."""

    def __init__(self, clock: FakeClock, pages: dict[int, list[int]]) -> None:
        self.clock = clock
        self.pages = pages
        self.requests: list[tuple[int, float]] = []
        self.fail: dict[int, list[int]] = {}  # page -> statuses to answer first
        self.updated_at: dict[int, int] = {}
        responses.add_callback(responses.GET, LEADS_URL, callback=self.callback)

    def callback(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        query = dict(pair.split("=", 1) for pair in (request.url or "").split("?", 1)[1].split("&"))
        page = int(query["page"])
        self.requests.append((page, self.clock()))
        if self.fail.get(page):
            return self.fail[page].pop(0), {"Content-Type": "text/html"}, "<html>oops</html>"
        ids = self.pages.get(page)
        if not ids:
            return 204, {}, ""
        links: dict[str, Any] = {"self": {"href": "..."}}
        if page + 1 in self.pages:
            links["next"] = {"href": "..."}
        body = {
            "_page": page,
            "_links": links,
            "_embedded": {
                "leads": [
                    {"id": i, "name": f"lead {i}", "updated_at": self.updated_at.get(i, 1000 + i)}
                    for i in ids
                ]
            },
        }
        return 200, {"Content-Type": "application/hal+json"}, json.dumps(body)


class Sink:
    def __init__(self, fail_on_call: int | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, events: list[dict[str, Any]]) -> list[str]:
        if self.fail_on_call is not None and len(self.batches) + 1 == self.fail_on_call:
            raise UpstreamUnavailable("inngest", "event API down")
        self.batches.append(events)
        return [f"01H{len(self.batches)}{i}" for i in range(len(events))]

    @property
    def ids(self) -> list[str]:
        return [event["id"] for batch in self.batches for event in batch]


THREE_PAGES = {1: [1, 2, 3], 2: [4, 5, 6], 3: [7]}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(clock: FakeClock) -> AmoCRMClient:
    return AmoCRMClient(FakeTokens(), limiter=RateLimiter(6, clock=clock, sleep=clock.sleep))


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "backfill" / "state.json"


def run(backfill: Backfill, **overrides: Any) -> BackfillReport:
    kwargs: dict[str, Any] = {
        "pipeline_id": 77,
        "status_ids": [142],
        "updated_since": None,
        "dry_run": False,
        "on_progress": None,
    }
    kwargs.update(overrides)
    return backfill.run(**kwargs)


@responses.activate
def test_pages_through_three_pages_and_sends_in_batches(
    client: AmoCRMClient, clock: FakeClock, state_path: Path
) -> None:
    amo = FakeAmo(clock, THREE_PAGES)
    sink = Sink()
    progress: list[tuple[int, int | None]] = []
    report = run(
        Backfill(client, sink, state_path, batch_size=2, now=clock),
        on_progress=lambda seen, total: progress.append((seen, total)),
    )
    assert [page for page, _ in amo.requests] == [1, 2, 3]
    assert sink.ids == [f"sync-{i}-{1000 + i}" for i in range(1, 8)]
    assert [len(batch) for batch in sink.batches] == [2, 1, 2, 1, 1]
    assert all(
        event["name"] == "amocrm/lead.sync"
        and event["data"] == {"lead_id": int(event["id"].split("-")[1])}
        for batch in sink.batches
        for event in batch
    )
    assert (report.pages, report.leads_seen, report.events_sent) == (3, 7, 7)
    assert report.resumed_from_page is None
    assert progress == [(3, None), (6, None), (7, None)]
    assert not state_path.exists()  # a finished run leaves nothing to resume


@responses.activate
def test_request_rate_stays_within_limit(client: AmoCRMClient, clock: FakeClock) -> None:
    pages = {n: [n] for n in range(1, 13)}
    amo = FakeAmo(clock, pages)
    report = run(Backfill(client, Sink(), None), status_ids=None)
    assert report.pages == 12
    stamps = [t for _, t in amo.requests]
    assert len(stamps) == 12
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 1 / 6 - EPS
    for start in stamps:
        assert sum(1 for t in stamps if start <= t < start + 1 - EPS) <= 6
    assert stamps[-1] - stamps[0] >= 11 / 6 - EPS


@responses.activate
def test_dry_run_counts_but_sends_nothing_and_writes_no_state(
    client: AmoCRMClient, clock: FakeClock, state_path: Path
) -> None:
    FakeAmo(clock, THREE_PAGES)
    sink = Sink()
    report = run(Backfill(client, sink, state_path, batch_size=2), dry_run=True)
    assert (report.pages, report.leads_seen, report.events_sent) == (3, 7, 0)
    assert report.dry_run is True
    assert sink.batches == []
    assert not state_path.exists()
    assert not state_path.parent.exists()


@responses.activate
def test_resume_after_failure_on_page_two(
    client: AmoCRMClient, clock: FakeClock, state_path: Path
) -> None:
    amo = FakeAmo(clock, THREE_PAGES)
    amo.fail[2] = [503]
    sink = Sink()
    backfill = Backfill(client, sink, state_path, batch_size=2, max_retries=0, sleep=clock.sleep)
    with pytest.raises(UpstreamUnavailable):
        run(backfill)
    first_run_ids = sink.ids
    assert first_run_ids == ["sync-1-1001", "sync-2-1002", "sync-3-1003"]
    state = json.loads(state_path.read_text(encoding="utf-8"))
    assert state["last_completed_page"] == 1
    assert state["events_sent"] == 3
    assert [p.name for p in state_path.parent.iterdir()] == ["state.json"]  # no temp files

    amo.requests.clear()
    sink.batches.clear()
    report = run(backfill)
    assert report.resumed_from_page == 2
    assert [page for page, _ in amo.requests] == [2, 3]
    assert sink.ids == ["sync-4-1004", "sync-5-1005", "sync-6-1006", "sync-7-1007"]
    assert (report.pages, report.events_sent) == (2, 4)
    assert not state_path.exists()


@responses.activate
def test_interrupted_mid_page_resends_only_that_page(
    client: AmoCRMClient, clock: FakeClock, state_path: Path
) -> None:
    amo = FakeAmo(clock, THREE_PAGES)
    sink = Sink(fail_on_call=4)  # page 2's second batch fails to send
    backfill = Backfill(client, sink, state_path, batch_size=2)
    with pytest.raises(UpstreamUnavailable):
        run(backfill)
    assert json.loads(state_path.read_text())["last_completed_page"] == 1

    amo.requests.clear()
    sink.fail_on_call = None
    sink.batches.clear()
    report = run(backfill)
    assert report.resumed_from_page == 2
    assert "sync-1-1001" not in sink.ids
    assert sink.ids[:2] == ["sync-4-1004", "sync-5-1005"]  # same ids again: Inngest drops them


@responses.activate
def test_state_for_other_filters_is_ignored_with_warning(
    client: AmoCRMClient, clock: FakeClock, state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state_path.parent.mkdir(parents=True)
    state_path.write_text(
        json.dumps(
            {
                "version": 1,
                "filters": {
                    "pipeline_id": 99,
                    "status_ids": None,
                    "updated_since": None,
                    "page_size": 250,
                },
                "last_completed_page": 2,
            }
        )
    )
    amo = FakeAmo(clock, THREE_PAGES)
    caplog.set_level(logging.WARNING)
    report = run(Backfill(client, Sink(), state_path))
    assert report.resumed_from_page is None
    assert [page for page, _ in amo.requests] == [1, 2, 3]
    assert "other filters" in caplog.text


@responses.activate
def test_resume_false_starts_over(client: AmoCRMClient, clock: FakeClock, state_path: Path) -> None:
    amo = FakeAmo(clock, THREE_PAGES)
    amo.fail[2] = [503]
    backfill = Backfill(client, Sink(), state_path, max_retries=0)
    with pytest.raises(UpstreamUnavailable):
        run(backfill)
    amo.requests.clear()
    report = run(backfill, resume=False)
    assert report.resumed_from_page is None
    assert [page for page, _ in amo.requests] == [1, 2, 3]


@responses.activate
def test_rate_limited_page_waits_and_retries(client: AmoCRMClient, clock: FakeClock) -> None:
    amo = FakeAmo(clock, THREE_PAGES)
    amo.fail[2] = [429]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.sleep(seconds)

    report = run(Backfill(client, Sink(), None, sleep=sleep))
    assert waits == [10.0]
    assert [page for page, _ in amo.requests] == [1, 2, 2, 3]
    assert report.events_sent == 7


@responses.activate
def test_event_ids_are_stable_across_runs_and_change_with_updates(
    client: AmoCRMClient, clock: FakeClock
) -> None:
    amo = FakeAmo(clock, THREE_PAGES)
    first, second = Sink(), Sink()
    run(Backfill(client, first, None))
    run(Backfill(client, second, None))
    assert first.ids == second.ids
    assert len(set(first.ids)) == 7

    amo.updated_at[4] = 2_000_000
    third = Sink()
    run(Backfill(client, third, None))
    assert "sync-4-2000000" in third.ids
    assert "sync-4-1004" not in third.ids


def test_sync_event_shape() -> None:
    lead = LeadSnapshot(id=42, updated_at=1700000000)
    event = sync_event(lead.id, id=sync_event_id(lead))
    assert event == {
        "name": "amocrm/lead.sync",
        "data": {"lead_id": 42},
        "id": "sync-42-1700000000",
    }
    assert event["name"] == SYNC_EVENT
    assert sync_event_id(LeadSnapshot(id=42, updated_at=1700000000)) == event["id"]
    assert sync_event_id(LeadSnapshot(id=42)) == "sync-42-0"
