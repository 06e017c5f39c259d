"""Backfill: an `amocrm/lead.sync` event for every lead that matches a filter.

The engine behind `python -m prometei backfill`: the shared listing (`prometei.sync.listing`,
which cannot skip a lead while managers edit them) and the shared loop
(`prometei.sync.run`), with the cursor and the counts kept in a small JSON state file,
written atomically after every accepted chunk of events.

Resume: a run stopped by Ctrl-C or a failure, started again with the same filters, continues
from the saved cursor, whatever `--page-size` is now (the cursor is a point in time plus the
lead ids done at that second, not a page number). A finished run keeps its file as a record
(`finished_at`); the next run with the same filters starts over. A dry run lists and counts
only: nothing is sent and no state is read or written.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometei.amocrm.client import MAX_PAGE_SIZE, AmoCRMClient
from prometei.errors import InputError, PrometeiError
from prometei.sync.listing import Cursor, LeadFilter, LeadListing
from prometei.sync.run import Counts, SendEvents, SyncLoop, SyncOutcome

log = logging.getLogger(__name__)

STATE_VERSION = 2


@dataclass(frozen=True)
class BackfillFilters:
    pipeline_id: int | None = None
    status_ids: tuple[int, ...] = ()
    updated_since: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "pipeline_id": self.pipeline_id,
            "status_ids": sorted(self.status_ids),
            "updated_since": self.updated_since,
        }

    def lead_filter(self) -> LeadFilter:
        return LeadFilter(pipeline_id=self.pipeline_id, status_ids=tuple(sorted(self.status_ids)))


@dataclass
class BackfillReport:
    """One `run()`: `outcome` is this run's, `carried` what earlier runs of the same backfill
    had done (resume); `totals` adds them up."""

    outcome: SyncOutcome
    carried: Counts = field(default_factory=Counts)
    carried_requests: int = 0
    resumed_from: Cursor | None = None
    dry_run: bool = False
    started_at: int = 0

    @property
    def totals(self) -> Counts:
        return self.carried.plus(self.outcome.counts)

    @property
    def requests(self) -> int:
        return self.carried_requests + self.outcome.requests


class Backfill:
    def __init__(
        self,
        client: AmoCRMClient,
        send: SendEvents,
        state_path: Path | None,
        batch_size: int = 50,
        *,
        page_size: int = MAX_PAGE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch size {batch_size} must be 1 or more")
        self._client = client
        self._send = send
        self._state_path = state_path
        self._batch_size = batch_size
        self._page_size = page_size
        self._sleep = sleep
        self._now = now

    def run(
        self,
        filters: BackfillFilters,
        *,
        dry_run: bool = False,
        resume: bool = True,
        on_progress: Callable[[BackfillReport], None] | None = None,
    ) -> BackfillReport:
        report = BackfillReport(SyncOutcome(), dry_run=dry_run, started_at=int(self._now()))
        cursor = Cursor(filters.updated_since or 0)
        if resume and not dry_run:
            saved = self._load(filters)
            if saved is not None:
                cursor, report.carried, report.carried_requests = saved
                report.resumed_from = cursor
                log.info("backfill: resuming at %s", cursor.as_json())

        def commit(position: Cursor, outcome: SyncOutcome) -> None:
            report.outcome = outcome
            self._save(filters, position, report, counts=report.carried.plus(outcome.committed))

        def progress(outcome: SyncOutcome) -> None:
            report.outcome = outcome
            if on_progress is not None:
                on_progress(report)

        loop = SyncLoop(
            LeadListing(self._client, page_size=self._page_size, sleep=self._sleep),
            filters.lead_filter(),
            self._send,
            batch_size=self._batch_size,
            source="backfill",
            dry_run=dry_run,
            on_commit=commit,
            on_progress=progress,
        )
        report.outcome = loop.run(cursor)
        if not dry_run:
            finished = report.outcome.error is None
            self._save(filters, report.outcome.cursor, report, counts=report.totals, end=finished)
        return report

    # ---- state file -------------------------------------------------------------------------
    def _load(self, filters: BackfillFilters) -> tuple[Cursor, Counts, int] | None:
        """The saved cursor, counts and request count of an unfinished run with these
        filters; None (start from the beginning) for anything else, with a warning."""
        path = self._state_path
        if path is None or not path.exists():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("backfill: ignoring unreadable state file %s (%s)", path, exc)
            return None
        problem = _unusable(state, filters)
        if problem:
            log.warning("backfill: ignoring state file %s: %s", path, problem)
            return None
        cursor = Cursor.from_json(state.get("cursor"))
        if cursor is None or state.get("finished_at"):
            return None  # finished: the same command runs the backfill again in full
        requests = state.get("requests")
        count = requests if isinstance(requests, int) else 0
        return cursor, Counts.from_json(state.get("committed")), count

    def _save(
        self,
        filters: BackfillFilters,
        cursor: Cursor,
        report: BackfillReport,
        *,
        counts: Counts,
        end: bool = False,
    ) -> None:
        if self._state_path is None:
            return
        outcome = report.outcome
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "filters": filters.as_json(),
            "cursor": cursor.as_json(),
            # listed = sent + filtered + failed, over every run of this backfill so far
            "counts": counts.as_json(),
            # what the cursor has passed: the part a resumed run does not list again
            "committed": report.carried.plus(outcome.committed).as_json(),
            "requests": report.requests,
            "newest_updated_at": outcome.newest,
            "saved_at": int(self._now()),
        }
        if outcome.error is not None:
            state["error"] = outcome.error.message
        if end:
            state["finished_at"] = int(self._now())
        _atomic_write_json(self._state_path, state)


def _unusable(state: Any, filters: BackfillFilters) -> str | None:
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return "it has an older format; starting from the beginning"
    if state.get("filters") != filters.as_json():
        shown = json.dumps(state.get("filters"), sort_keys=True)
        return f"it was made for other filters ({shown}); starting from the beginning"
    return None


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    """Write via a temp file in the same folder + os.replace: readers see old or new, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def raise_if_failed(report: BackfillReport) -> None:
    """Re-raise the error a run stopped on (the CLI prints it with the counts)."""
    error = report.outcome.error
    if isinstance(error, PrometeiError):
        raise error
