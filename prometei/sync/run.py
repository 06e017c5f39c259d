"""The loop the backfill and the reconcile share: list leads after a cursor, keep the ones the
filter wants, send an `amocrm/lead.sync` event for each in chunks, and move the cursor only
past leads that are done (their event accepted by Inngest, or filtered out).

Event ids are `sync-<lead id>-<updated_at>`: the same lead version gets the same id from the
backfill and from the reconcile (Inngest drops a repeated id for 24 h), a lead changed since
gets a new one. So a lead runs at most once per change, whoever lists it.

Counts per run: `listed` = `sent` + `filtered` + `failed` (dry run: `matched` instead of
`sent`). `committed` holds the counts of the leads the cursor has passed, which is what a
resumed run carries over (the others are listed again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from prometei.amocrm.models import LeadSnapshot
from prometei.errors import PrometeiError
from prometei.events import Event, sync_event
from prometei.sync.listing import Cursor, LeadFilter, LeadListing

log = logging.getLogger(__name__)

SendEvents = Callable[[list[Event]], list[str]]


def sync_event_id(lead: LeadSnapshot) -> str:
    """`sync-<lead id>-<updated_at>`: the same for one lead version, new after a change."""
    return f"sync-{lead.id}-{lead.updated_at or 0}"


@dataclass
class Counts:
    listed: int = 0
    matched: int = 0  # wanted by the filter (sent, failed, or in a dry run "would send")
    sent: int = 0
    filtered: int = 0
    failed: int = 0

    def plus(self, other: Counts) -> Counts:
        return Counts(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    def as_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Counts:
        if not isinstance(data, dict):
            return cls()
        return cls(
            **{
                name: value
                for name in cls.__dataclass_fields__
                if isinstance(value := data.get(name), int) and not isinstance(value, bool)
            }
        )


@dataclass
class SyncOutcome:
    """What one `SyncLoop.run` did. `error` is set when it stopped on a failure; `cursor`
    is then the last committed one. `more` is true when it stopped at `max_batches`."""

    counts: Counts = field(default_factory=Counts)
    committed: Counts = field(default_factory=Counts)
    cursor: Cursor = field(default_factory=lambda: Cursor(0))
    requests: int = 0
    newest: int | None = None
    more: bool = False
    error: PrometeiError | None = None


Commit = Callable[[Cursor, SyncOutcome], None]
Progress = Callable[[SyncOutcome], None]


class SyncLoop:
    def __init__(
        self,
        listing: LeadListing,
        wanted: LeadFilter,
        send: SendEvents,
        *,
        batch_size: int = 50,
        source: str,
        dry_run: bool = False,
        max_batches: int | None = None,
        on_commit: Commit | None = None,
        on_progress: Progress | None = None,
    ) -> None:
        self.listing = listing
        self.wanted = wanted
        self.send = send
        self.batch_size = max(1, batch_size)
        self.source = source
        self.dry_run = dry_run
        self.max_batches = max_batches
        self.on_commit = on_commit
        self.on_progress = on_progress

    def run(self, cursor: Cursor) -> SyncOutcome:
        outcome = SyncOutcome(cursor=cursor)
        requests_before = self.listing.requests
        try:
            for number, batch in enumerate(self.listing.batches(cursor.second, self.wanted), 1):
                outcome.requests = self.listing.requests - requests_before
                self._handle(batch.leads, outcome)
                if batch.done_before is not None and batch.done_before > outcome.cursor.second:
                    outcome.cursor = Cursor(batch.done_before)
                self._commit(outcome)
                if self.max_batches is not None and number >= self.max_batches and not batch.final:
                    outcome.more = True
                    break
        except PrometeiError as exc:
            outcome.error = exc
        outcome.requests = self.listing.requests - requests_before
        self._progress(outcome)
        return outcome

    # ---- one batch ---------------------------------------------------------------------------
    def _handle(self, leads: Iterable[LeadSnapshot], outcome: SyncOutcome) -> None:
        todo = [lead for lead in leads if not outcome.cursor.covers(lead)]
        counts = outcome.counts
        counts.listed += len(todo)
        if todo:
            outcome.newest = max(outcome.newest or 0, todo[-1].updated_at or 0)
        chunk: list[LeadSnapshot] = []  # wanted leads waiting to be sent, in order
        passed = 0  # todo[:passed] are behind the cursor
        for index, lead in enumerate(todo):
            wanted = self.wanted.wants(lead)
            counts.matched += int(wanted)
            counts.filtered += int(not wanted)
            if wanted and not self.dry_run:
                chunk.append(lead)
                if len(chunk) < self.batch_size:
                    continue
                try:
                    self._send(chunk)
                except PrometeiError:
                    counts.failed += len(chunk)
                    self._count_unhandled(todo[index + 1 :], counts)
                    self._commit(outcome)  # what was passed before the failed chunk
                    raise
                chunk = []
                passed = self._pass(todo, passed, index + 1, outcome)
                self._commit(outcome)  # saved after every send, not after every lead
            elif not chunk:
                # A lead not sent, and no unsent lead before it: passed at once (saved with
                # the next send or the batch).
                passed = self._pass(todo, passed, index + 1, outcome)
        if chunk:
            try:
                self._send(chunk)
            except PrometeiError:
                counts.failed += len(chunk)
                self._commit(outcome)
                raise
        self._pass(todo, passed, len(todo), outcome)  # `run` saves it with the batch

    def _send(self, chunk: list[LeadSnapshot]) -> None:
        if not chunk or self.dry_run:
            return
        events = [sync_event(lead.id, id=sync_event_id(lead), source=self.source) for lead in chunk]
        self.send(events)

    def _pass(self, todo: list[LeadSnapshot], start: int, end: int, outcome: SyncOutcome) -> int:
        """Move the cursor past todo[start:end] (all done) and count them as committed; the
        caller saves it (`_commit`)."""
        for lead in todo[start:end]:
            outcome.cursor = outcome.cursor.past(lead)
            wanted = self.wanted.wants(lead)
            outcome.committed.listed += 1
            outcome.committed.matched += int(wanted)
            outcome.committed.filtered += int(not wanted)
            if wanted and not self.dry_run:
                outcome.committed.sent += 1
                outcome.counts.sent += 1
        return end

    def _count_unhandled(self, rest: list[LeadSnapshot], counts: Counts) -> None:
        """Leads after a failed chunk: never attempted, so failed (or filtered) in this run."""
        for lead in rest:
            if self.wanted.wants(lead):
                counts.matched += 1
                counts.failed += 1
            else:
                counts.filtered += 1

    def _commit(self, outcome: SyncOutcome) -> None:
        if self.on_commit is not None and not self.dry_run:
            self.on_commit(outcome.cursor, outcome)
        self._progress(outcome)

    def _progress(self, outcome: SyncOutcome) -> None:
        if self.on_progress is not None:
            self.on_progress(outcome)
