"""Backfill: send an `amocrm/lead.sync` event for every lead that matches a filter.

The engine behind `python -m prometei backfill`. It pages through `GET /api/v4/leads` (oldest
update first, through the client's rate limiter), turns each lead into a sync event and hands
the events to `send` in batches. Each event id is derived from the lead id and its
`updated_at`, so sending the same lead twice is harmless (Inngest drops a repeated id for 24 h)
while a lead changed since gets a fresh sync.

After every sent batch the progress (last fully sent page, counts, the filters) is written
atomically to a small JSON state file; an interrupted run started again with the same filters
resumes after the last completed page. A finished run removes the file. A dry run lists and
counts only: nothing is sent and no state is read or written.

Known limit: amoCRM pages by offset, so a lead updated during the run moves to the end of the
order and the page boundaries shift by one; run again with `updated_since` = the start time of
the previous run to pick up anything that moved.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometei.amocrm.client import MAX_PAGE_SIZE, AmoCRMClient, LeadPage
from prometei.amocrm.models import LeadSnapshot
from prometei.errors import InputError, UpstreamUnavailable
from prometei.events import sync_event

log = logging.getLogger(__name__)

STATE_VERSION = 1
DEFAULT_RETRY_WAIT_SECONDS = 10.0

SendEvents = Callable[[list[dict[str, Any]]], list[str]]
Progress = Callable[[int, int | None], None]


@dataclass
class BackfillReport:
    """What one `run()` did. Counts cover this run only (not pages done by an earlier one)."""

    pages: int = 0
    leads_seen: int = 0
    events_sent: int = 0
    resumed_from_page: int | None = None
    dry_run: bool = False
    started_at: int = 0  # Unix time; pass as `updated_since` to catch leads changed meanwhile


def sync_event_id(lead: LeadSnapshot) -> str:
    """`sync-<lead id>-<updated_at>`: the same for one lead version, new after a change."""
    return f"sync-{lead.id}-{lead.updated_at or 0}"


class Backfill:
    def __init__(
        self,
        client: AmoCRMClient,
        send: SendEvents,
        state_path: Path | None,
        batch_size: int = 50,
        *,
        page_size: int = MAX_PAGE_SIZE,
        max_retries: int = 3,
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
        self._max_retries = max_retries
        self._sleep = sleep
        self._now = now
        self._carried: dict[str, int] = {}

    def run(
        self,
        *,
        pipeline_id: int | None,
        status_ids: list[int] | None,
        updated_since: int | None,
        dry_run: bool = False,
        on_progress: Progress | None = None,
        resume: bool = True,
    ) -> BackfillReport:
        filters = self._filters(pipeline_id, status_ids, updated_since)
        report = BackfillReport(dry_run=dry_run, started_at=int(self._now()))
        page: int | None = 1
        self._carried = {}
        if resume and not dry_run:
            last_done = self._load_last_completed_page(filters)
            if last_done:
                page = last_done + 1
                report.resumed_from_page = page
                log.info("backfill: resuming from page %s", page)

        while page is not None:
            result = self._fetch(filters, page)
            report.pages += 1
            report.leads_seen += len(result.leads)
            if not dry_run:
                self._send_page(filters, page, result.leads, report)
            if on_progress is not None:
                # amoCRM v4 lists carry no total count, so the total is never known.
                on_progress(report.leads_seen, None)
            page = result.next_page

        if not dry_run:
            self._clear_state()
        return report

    # ---- paging ---------------------------------------------------------------------------
    def _fetch(self, filters: dict[str, Any], page: int) -> LeadPage:
        """One page; a retryable failure (429, 5xx) waits and retries a few times."""
        attempt = 0
        while True:
            try:
                return self._client.list_leads(
                    pipeline_id=filters["pipeline_id"],
                    status_ids=filters["status_ids"],
                    updated_since=filters["updated_since"],
                    page=page,
                    limit=self._page_size,
                )
            except UpstreamUnavailable as exc:
                attempt += 1
                if attempt > self._max_retries:
                    raise
                wait = exc.retry_after_seconds or DEFAULT_RETRY_WAIT_SECONDS * attempt
                log.warning("backfill: page %s failed (%s); retrying in %gs", page, exc, wait)
                self._sleep(wait)

    def _send_page(
        self,
        filters: dict[str, Any],
        page: int,
        leads: list[LeadSnapshot],
        report: BackfillReport,
    ) -> None:
        events = [sync_event(lead.id, id=sync_event_id(lead)) for lead in leads]
        batches = [
            events[i : i + self._batch_size] for i in range(0, len(events), self._batch_size)
        ]
        if not batches:
            self._save_state(filters, page, report)
            return
        for index, batch in enumerate(batches):
            self._send(batch)
            report.events_sent += len(batch)
            # The page counts as completed only once its last batch is out; a run cut off
            # mid-page resends that page's earlier batches, which the event ids make harmless.
            completed = page if index == len(batches) - 1 else page - 1
            self._save_state(filters, completed, report)

    # ---- state file -------------------------------------------------------------------------
    def _filters(
        self, pipeline_id: int | None, status_ids: list[int] | None, updated_since: int | None
    ) -> dict[str, Any]:
        return {
            "pipeline_id": pipeline_id,
            "status_ids": sorted(status_ids) if status_ids else None,
            "updated_since": updated_since,
            "page_size": self._page_size,
        }

    def _load_last_completed_page(self, filters: dict[str, Any]) -> int | None:
        path = self._state_path
        if path is None or not path.exists():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("backfill: ignoring unreadable state file %s (%s)", path, exc)
            return None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            log.warning("backfill: ignoring state file %s of an unknown format", path)
            return None
        if state.get("filters") != filters:
            log.warning(
                "backfill: ignoring state file %s: it was made for other filters (%s); "
                "starting from page 1",
                path,
                json.dumps(state.get("filters"), sort_keys=True),
            )
            return None
        page = state.get("last_completed_page")
        if not isinstance(page, int) or page < 1:
            return None
        # Counts in the file are totals across every run of this backfill.
        self._carried = {
            key: value
            for key in ("pages", "leads_seen", "events_sent")
            if isinstance(value := state.get(key), int)
        }
        return page

    def _save_state(self, filters: dict[str, Any], completed: int, report: BackfillReport) -> None:
        if self._state_path is None:
            return
        state = {
            "version": STATE_VERSION,
            "filters": filters,
            "last_completed_page": completed,
            "pages": self._carried.get("pages", 0) + report.pages,
            "leads_seen": self._carried.get("leads_seen", 0) + report.leads_seen,
            "events_sent": self._carried.get("events_sent", 0) + report.events_sent,
            "saved_at": int(self._now()),
        }
        _atomic_write_json(self._state_path, state)

    def _clear_state(self) -> None:
        if self._state_path is not None:
            self._state_path.unlink(missing_ok=True)


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
