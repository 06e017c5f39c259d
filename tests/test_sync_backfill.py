"""The backfill engine against the paging fake: counts that add up, a state file to resume
from (whatever the page size), dry runs, and event ids shared with the reconcile."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prometei.amocrm.models import LeadSnapshot
from prometei.errors import UpstreamUnavailable
from prometei.events import SYNC_EVENT
from prometei.sync.backfill import STATE_VERSION, Backfill, BackfillFilters, BackfillReport
from prometei.sync.run import sync_event_id
from tests.support.amo_listing import BASE_TIME, WiredAmo, fake_amo


class Sink:
    """The event API: the `fail_on`-th call fails, the `interrupt_on`-th one is Ctrl-C."""

    def __init__(self, fail_on: int | None = None, interrupt_on: int | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.calls = 0
        self.fail_on = fail_on
        self.interrupt_on = interrupt_on

    def __call__(self, events: list[dict[str, Any]]) -> list[str]:
        self.calls += 1
        if self.calls == self.interrupt_on:
            raise KeyboardInterrupt
        if self.calls == self.fail_on:
            raise UpstreamUnavailable("inngest", "event API answered 503")
        self.batches.append(events)
        return [f"01J{self.calls}{i}" for i in range(len(events))]

    @property
    def ids(self) -> list[str]:
        return [event["id"] for batch in self.batches for event in batch]

    @property
    def lead_ids(self) -> list[int]:
        return [event["data"]["lead_id"] for batch in self.batches for event in batch]


@pytest.fixture
def wired() -> Iterator[WiredAmo]:
    with fake_amo() as wired:
        yield wired


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "backfill" / "state.json"


def engine(wired: WiredAmo, sink: Sink, state: Path | None, **options: Any) -> Backfill:
    options.setdefault("page_size", 10)
    return Backfill(wired.client(), sink, state, options.pop("batch_size", 7), **options)


def test_counts_add_up_and_a_finished_run_keeps_its_record(wired, state_path) -> None:
    wired.add_leads(25, pipeline_id=77, status_id=142)
    for lead_id in (3, 9, 20):
        wired.amo.leads[lead_id].status_id = 999  # another stage of the pipeline
    sink = Sink()

    # Two stages are asked of amoCRM by pipeline (one stage per pipeline is what it filters
    # reliably), so the leads of stage 999 are listed and filtered out here.
    report = engine(wired, sink, state_path).run(BackfillFilters(77, (142, 143)))

    totals = report.totals
    assert (totals.listed, totals.sent, totals.filtered, totals.failed) == (25, 22, 3, 0)
    assert totals.listed == totals.sent + totals.filtered + totals.failed
    assert sorted(sink.lead_ids) == sorted(set(range(1, 26)) - {3, 9, 20})
    assert all(len(batch) <= 7 for batch in sink.batches)
    state = json.loads(state_path.read_text())
    assert state["version"] == STATE_VERSION and state["finished_at"]
    assert state["counts"] == {"listed": 25, "matched": 22, "sent": 22, "filtered": 3, "failed": 0}
    assert state["requests"] == report.requests == wired.amo.list_requests()


def test_events_are_sync_events_with_the_version_in_their_id(wired) -> None:
    wired.add_leads(2)
    sink = Sink()
    engine(wired, sink, None).run(BackfillFilters())
    assert sink.batches[0][0] == {
        "name": SYNC_EVENT,
        "data": {"lead_id": 1, "source": "backfill"},
        "id": f"sync-1-{BASE_TIME}",
    }
    touched = wired.amo.touch(1)
    changed = LeadSnapshot(id=1, updated_at=touched.updated_at)
    assert sync_event_id(changed) == f"sync-1-{touched.updated_at}" != f"sync-1-{BASE_TIME}"


@pytest.mark.parametrize("second_page_size", [3, 10, 250])
def test_a_failed_run_resumes_where_it_stopped_whatever_the_page_size(
    wired, state_path, second_page_size
) -> None:
    wired.add_leads(40)
    first_sink = Sink(fail_on=3)

    failed = engine(wired, first_sink, state_path).run(BackfillFilters())

    assert isinstance(failed.outcome.error, UpstreamUnavailable)
    totals = failed.totals
    assert totals.listed == totals.sent + totals.filtered + totals.failed
    # Pages of 10 (the boundary second comes again), chunks of 7: 7 + 2 sent, then 7 + 1 failed.
    assert (totals.sent, totals.failed) == (9, 8)
    state = json.loads(state_path.read_text())
    assert state["error"].endswith("event API answered 503")
    assert state["counts"]["failed"] == totals.failed and "finished_at" not in state

    second_sink = Sink()
    resumed = engine(wired, second_sink, state_path, page_size=second_page_size).run(
        BackfillFilters()
    )

    assert resumed.outcome.error is None and resumed.resumed_from is not None
    assert sorted(first_sink.lead_ids + second_sink.lead_ids) == list(range(1, 41))
    final = resumed.totals
    assert (final.listed, final.sent, final.failed) == (40, 40, 0)


def test_ctrl_c_keeps_what_was_accepted_and_the_next_run_sends_only_the_rest(
    wired, state_path
) -> None:
    wired.add_leads(20)
    first = Sink(interrupt_on=2)
    with pytest.raises(KeyboardInterrupt):
        engine(wired, first, state_path, batch_size=5).run(BackfillFilters())
    state = json.loads(state_path.read_text())
    assert state["committed"]["sent"] == 5
    assert state["cursor"] == {"second": BASE_TIME + 4, "seen": [5]}

    second = Sink()
    engine(wired, second, state_path, batch_size=5).run(BackfillFilters())
    assert second.lead_ids == list(range(6, 21))


def test_a_dry_run_counts_sends_nothing_and_writes_no_state(wired, state_path) -> None:
    wired.add_leads(12, pipeline_id=77)
    wired.amo.leads[4].pipeline_id = 78
    sink = Sink()

    report = engine(wired, sink, state_path, page_size=5).run(
        BackfillFilters(pipeline_id=77), dry_run=True
    )

    assert (report.totals.listed, report.totals.matched, report.totals.filtered) == (11, 11, 0)
    assert sink.calls == 0 and not state_path.exists()


@pytest.mark.parametrize(
    ("saved", "warning"),
    [
        ({"version": 1, "last_completed_page": 3}, "older format"),
        ({"version": STATE_VERSION, "filters": {"pipeline_id": 5}}, "other filters"),
    ],
)
def test_state_of_another_kind_is_ignored_with_a_warning(
    wired, state_path, caplog, saved, warning
) -> None:
    wired.add_leads(3)
    state_path.parent.mkdir(parents=True)
    state_path.write_text(json.dumps(saved))
    sink = Sink()
    with caplog.at_level(logging.WARNING):
        report = engine(wired, sink, state_path).run(BackfillFilters())
    assert warning in caplog.text
    assert report.resumed_from is None and sink.lead_ids == [1, 2, 3]


def test_the_same_command_after_a_finished_run_starts_over(wired, state_path) -> None:
    wired.add_leads(3)
    engine(wired, Sink(), state_path).run(BackfillFilters())
    again = Sink()
    report: BackfillReport = engine(wired, again, state_path).run(BackfillFilters())
    assert report.resumed_from is None and again.lead_ids == [1, 2, 3]


def test_a_run_stopped_inside_a_crowded_second_resumes_without_resending(wired, state_path) -> None:
    for lead_id in range(1, 31):  # 30 leads in one second, pages of 10: listed by id
        wired.amo.add_lead(lead_id, updated_at=BASE_TIME)
    first = Sink(fail_on=3)
    failed = engine(wired, first, state_path, batch_size=5).run(BackfillFilters())
    assert failed.outcome.error is not None
    state = json.loads(state_path.read_text())
    assert state["cursor"]["second"] == BASE_TIME and len(state["cursor"]["seen"]) == 10

    second = Sink()
    engine(wired, second, state_path, batch_size=5).run(BackfillFilters())

    assert sorted(first.lead_ids + second.lead_ids) == list(range(1, 31))
