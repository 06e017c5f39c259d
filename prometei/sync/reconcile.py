"""Reconcile: sync the leads whose webhook never arrived, from a cursor in the state store.

The engine of the `amocrm-reconcile` cron (`prometei.functions.reconcile`). Each run lists the
leads updated since the stored cursor (the shared keyset listing, which skips nothing), keeps
the ones in AMOCRM_TRIGGER_STATUSES (every lead when it is empty), and sends
`amocrm/lead.sync` with the id `sync-<lead>-<updated_at>`. A lead whose webhook was lost is
synced within one interval; one its webhook already synced runs once more (the handler's
upsert finds its record and writes nothing new), and never more than once per change, because
the id repeats for the same `updated_at` (also when the backfill lists it) and Inngest drops
a repeated id for 24 h.

The cursor (`amocrm:reconcile:cursor`: a second plus the lead ids done at that second) only
moves past leads whose events Inngest accepted or that the filter left out; a failed send
fails the run (Inngest retries it) and the next attempt starts where the last accepted chunk
ended. Nothing changed since the last run: one list request, no write to the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prometei.amocrm.client import AmoCRMClient
from prometei.store.base import StateStore
from prometei.sync.listing import Cursor, LeadFilter, LeadListing
from prometei.sync.run import SendEvents, SyncLoop, SyncOutcome

CURSOR_KEY = "amocrm:reconcile:cursor"
# The first run (no cursor yet) looks this far back; older leads are the backfill's job.
FIRST_RUN_LOOKBACK_S = 3600
# One run lists at most this many pages (250 leads each); the next run goes on from there.
MAX_BATCHES_PER_RUN = 40


def load_cursor(state: StateStore) -> Cursor | None:
    raw = state.get(CURSOR_KEY)
    if raw is None:
        return None
    try:
        return Cursor.from_json(json.loads(raw))
    except ValueError:
        return None


def save_cursor(state: StateStore, cursor: Cursor, now: float) -> None:
    state.put(CURSOR_KEY, json.dumps({**cursor.as_json(), "saved_at": int(now)}))


def reconcile_leads(
    client: AmoCRMClient,
    state: StateStore,
    send: SendEvents,
    trigger_statuses: tuple[tuple[int, int], ...],
    *,
    now: Callable[[], float] = time.time,
    batch_size: int = 50,
    max_batches: int = MAX_BATCHES_PER_RUN,
) -> dict[str, Any]:
    """One reconcile pass; plain JSON out (a step output). Raises the error a pass stopped
    on, after saving the cursor of everything accepted before it."""
    saved = load_cursor(state)
    start = saved or Cursor(int(now()) - FIRST_RUN_LOOKBACK_S)
    stored = [start if saved is not None else None]

    def commit(cursor: Cursor, outcome: SyncOutcome) -> None:
        if cursor != stored[0]:
            save_cursor(state, cursor, now())
            stored[0] = cursor

    loop = SyncLoop(
        LeadListing(client),
        LeadFilter(stages=tuple(trigger_statuses)),
        send,
        batch_size=batch_size,
        source="reconcile",
        max_batches=max_batches,
        on_commit=commit,
    )
    outcome = loop.run(start)
    if stored[0] is None:
        save_cursor(state, outcome.cursor, now())  # the first run fixes its starting point
    if outcome.error is not None:
        raise outcome.error
    counts = outcome.counts
    return {
        "listed": counts.listed,
        "sent": counts.sent,
        "filtered": counts.filtered,
        "requests": outcome.requests,
        "first_run": saved is None,
        "more": outcome.more,
        "cursor_before": _iso(start.second),
        "cursor_after": _iso(outcome.cursor.second),
    }


def _iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat().replace("+00:00", "Z")
