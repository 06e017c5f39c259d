"""Every amoCRM lead updated at or after a cursor, without skipping one while leads change.

Offset pages (`page=1, 2, ...` over "last updated first") skip leads: a lead edited during the
run leaves its place, every later lead moves up by one, and the one that crosses the page
boundary is never seen. So this engine never asks for a second page of a moving list. It asks
for the first page of "updated at or after second c" again and again, moving c forward:

    request   filter[updated_at][from] = c - 1, order[updated_at] = asc, page 1
    full page, newest second t > c    every lead updated in [c, t) is in it (they sort before
                                      t): hand those out, c := t (t's own leads come again)
    not full                          everything updated since c is in it: hand out, done
    full page of seconds c-1 and c    more than a page of leads share second c: list the
    only                              short window c-1..c+1 by id, page after page, until two
                                      passes see the same leads (no page shifted), then c+1

Each request is one instant of amoCRM's data, so an edit between requests cannot shift
anything: a lead that was not edited keeps its `updated_at`, and c never passes it before it
was handed out. An edited lead comes back later with its new `updated_at` (a new version).
One request lists up to a page (250) of leads; a quiet account costs one request.

What our reference documents and what is assumed (reference amocrm.md §3.1):
- documented: `page` and `limit` (up to 250) for lists; deleted leads are listed only with
  `with=only_deleted`, which we never ask for (a lead deleted mid-run just leaves the list;
  by-id pages may shift, which the two-equal-passes rule below catches).
- assumed (public Kommo docs, not in our reference; answers that ignore it are detected):
  `filter[updated_at][from|to]` (a full first page older than the bound, or a by-id page
  outside the asked window, stops the listing); `order[updated_at]=asc` (a page out of
  `updated_at` order stops it; one that is in order by chance cannot be told apart);
  `order[id]` (never relied on: a crowded second ends only when two passes saw the same
  leads); `filter[pipeline_id]` and `filter[statuses]` pairs (leads outside them are dropped
  by `LeadFilter.wants`: ignoring them costs requests, not leads).
- documented nowhere, so both readings are handled: whether `from`/`to` are inclusive (we
  ask from c - 1 and drop what is older, and ask to c + 1 in the by-id window); the order of
  leads that share a second (never relied on: a second is handed out whole); several stage
  pairs in one `filter[statuses]` (Kommo's page says one stage per pipeline, so several
  stages are asked for by pipeline and checked here).
A stop is an `UpstreamProtocolError` (not retryable): better than skipping or looping.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometei.amocrm.client import MAX_PAGE_SIZE, AmoCRMClient, LeadPage, LeadQuery
from prometei.amocrm.models import LeadSnapshot
from prometei.errors import InputError, UpstreamProtocolError, UpstreamUnavailable

log = logging.getLogger(__name__)

SERVICE = "amocrm"
DEFAULT_RETRY_WAIT_S = 10.0
MIN_PAGE_SIZE = 25
# By-id passes over one crowded second before giving up (each pass sees every lead of it).
MAX_PASSES = 6


@dataclass(frozen=True)
class LeadFilter:
    """Which leads a listing wants. `pipeline_id` + `status_ids` are asked of amoCRM (and
    checked here); `stages` (pipeline, stage) pairs are checked here only (the reconcile's
    trigger stages: amoCRM filters one stage per pipeline reliably, not a list of them)."""

    pipeline_id: int | None = None
    status_ids: tuple[int, ...] = ()
    stages: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.status_ids and self.pipeline_id is None:
            raise InputError("status ids need a pipeline id: amoCRM filters stages per pipeline")

    def query(
        self,
        *,
        updated_from: int | None = None,
        updated_to: int | None = None,
        order: tuple[str, str] = ("updated_at", "asc"),
    ) -> LeadQuery:
        """The server-side part: one stage as `filter[statuses]`, several by pipeline only."""
        return LeadQuery(
            pipeline_id=self.pipeline_id,
            status_ids=self.status_ids if len(self.status_ids) == 1 else (),
            updated_from=updated_from,
            updated_to=updated_to,
            order=order,
        )

    def selects(self, lead: LeadSnapshot) -> bool:
        """True when amoCRM's answer honoured the server-side part for `lead`."""
        if self.pipeline_id is not None and lead.pipeline_id != self.pipeline_id:
            return False
        return not self.status_ids or lead.status_id in self.status_ids

    def wants(self, lead: LeadSnapshot) -> bool:
        """True when `lead` should be synced (server-side part and `stages`)."""
        if not self.selects(lead):
            return False
        return not self.stages or (lead.pipeline_id, lead.status_id) in set(self.stages)


@dataclass(frozen=True)
class Cursor:
    """Where a listing stands: every lead updated before `second` is done, and so are the
    leads in `seen` that were updated at `second` exactly."""

    second: int
    seen: frozenset[int] = frozenset()

    def covers(self, lead: LeadSnapshot) -> bool:
        updated = lead.updated_at or 0
        return updated < self.second or (updated == self.second and lead.id in self.seen)

    def past(self, lead: LeadSnapshot) -> Cursor:
        """This cursor moved past `lead` (leads must be passed in (updated_at, id) order)."""
        updated = lead.updated_at or 0
        if updated == self.second:
            return Cursor(updated, self.seen | {lead.id})
        return Cursor(updated, frozenset({lead.id}))

    def as_json(self) -> dict[str, object]:
        return {"second": self.second, "seen": sorted(self.seen)}

    @classmethod
    def from_json(cls, data: object) -> Cursor | None:
        if not isinstance(data, dict):
            return None
        second, seen = data.get("second"), data.get("seen", [])
        if not isinstance(second, int) or isinstance(second, bool) or not isinstance(seen, list):
            return None
        if not all(isinstance(i, int) for i in seen):
            return None
        return cls(second, frozenset(seen))


@dataclass(frozen=True)
class Batch:
    """Leads handed out by one step of the listing, oldest first ((updated_at, id) order).

    `done_before`: after this batch, every lead updated before that second has been handed
    out (None: no new such second, e.g. part of a crowded second). `final`: the last batch,
    which holds everything up to the newest lead."""

    leads: list[LeadSnapshot] = field(default_factory=list)
    done_before: int | None = None
    final: bool = False


class LeadListing:
    """The keyset listing over one client (see the module docstring). `requests` counts the
    list requests made; `page_size` halves after an amoCRM 504 (it means "too big a page")."""

    def __init__(
        self,
        client: AmoCRMClient,
        *,
        page_size: int = MAX_PAGE_SIZE,
        max_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        # Learnt from the answers: True once amoCRM returned a lead updated exactly at a
        # `from` bound (the bound is inclusive; then nothing is asked twice).
        self.inclusive = False
        self.max_retries = max_retries
        self.requests = 0
        self._sleep = sleep

    def batches(self, start: int, wanted: LeadFilter) -> Iterator[Batch]:
        """Batches of every lead updated at or after second `start` (until the newest)."""
        second = start
        while True:
            page = self._fetch(wanted.query(updated_from=self._lower_bound(second)), 1)
            fresh = self._checked(page, second)
            if not page.full:
                yield Batch(_ordered(fresh), final=True)
                return
            newest = max(lead.updated_at or 0 for lead in page.leads)
            if newest > second:
                done = [lead for lead in fresh if (lead.updated_at or 0) < newest]
                yield Batch(_ordered(done), newest)
                second = newest
            else:
                # A full page of seconds up to `second`: more leads than a page share them.
                # List that short window by id until it holds still.
                for part in self._second_by_id(second, wanted):
                    yield Batch(_ordered(part))
                yield Batch([], second + 1)
                second += 1

    def _lower_bound(self, second: int) -> int | None:
        """`filter[updated_at][from]` for "at or after `second`": one second earlier while
        we do not know whether amoCRM's bound is inclusive (extra leads are dropped here)."""
        if second <= 0:
            return None
        return second if self.inclusive else second - 1

    # ---- one crowded second ------------------------------------------------------------------
    def _second_by_id(self, second: int, wanted: LeadFilter) -> Iterator[list[LeadSnapshot]]:
        """Every lead updated at `second`, page by page as they come: the window around it
        listed by id, page after page, until two consecutive passes saw the same leads (a lead
        leaving the window mid-pass shifts later pages and changes what the next pass sees).
        Leads are handed out at once, each once."""
        window = (second, second) if self.inclusive else (second - 1, second + 1)
        query = wanted.query(updated_from=window[0], updated_to=window[1], order=("id", "asc"))
        previous: frozenset[tuple[int, int]] | None = None
        handed: set[int] = set()
        for _ in range(MAX_PASSES):
            listed: dict[int, LeadSnapshot] = {}
            page_number: int | None = 1
            while page_number is not None:
                page = self._fetch(query, page_number)
                _check_window(page, window)
                new = []
                for lead in page.leads:
                    listed[lead.id] = lead
                    if lead.updated_at == second and lead.id not in handed:
                        handed.add(lead.id)
                        new.append(lead)
                yield new
                page_number = page_number + 1 if page.full else None
            seen = frozenset((lead.id, lead.updated_at or 0) for lead in listed.values())
            if seen == previous:
                return
            previous = seen
        raise UpstreamUnavailable(
            SERVICE,
            f"the leads updated at {second} (Unix time) kept changing while being listed "
            f"({MAX_PASSES} passes); run again once the mass update in amoCRM is over",
        )

    # ---- requests ----------------------------------------------------------------------------
    def _fetch(self, query: LeadQuery, page: int) -> LeadPage:
        """One page; transient failures (429, 5xx, network) wait and retry a few times, and a
        504 halves the page size (amoCRM's advice for large pages)."""
        attempt = 0
        while True:
            self.requests += 1
            try:
                answer = self.client.list_leads(query, page=page, limit=self.page_size)
            except UpstreamUnavailable as exc:
                attempt += 1
                if attempt > self.max_retries:
                    raise
                if exc.status == 504 and self.page_size > MIN_PAGE_SIZE and page == 1:
                    self.page_size = max(MIN_PAGE_SIZE, self.page_size // 2)
                    log.warning("amoCRM answered 504: listing %s leads a page", self.page_size)
                wait = exc.retry_after_seconds or DEFAULT_RETRY_WAIT_S * attempt
                log.warning("amoCRM list request failed (%s); trying again in %gs", exc, wait)
                self._sleep(wait)
                continue
            if query.updated_from is not None and any(
                lead.updated_at == query.updated_from for lead in answer.leads
            ):
                self.inclusive = True
            return answer

    @staticmethod
    def _checked(page: LeadPage, second: int) -> list[LeadSnapshot]:
        """The page's leads updated at or after `second`, after checking that amoCRM sorted
        and filtered by `updated_at` as asked (otherwise the keyset could skip or loop).
        Leads outside the pipeline/stage filter are left for `LeadFilter.wants` to drop."""
        stamps = [lead.updated_at or 0 for lead in page.leads]
        if any(later < earlier for earlier, later in itertools.pairwise(stamps)):
            raise _not_as_asked("did not sort the leads by updated_at")
        if page.full and second > 0 and stamps and stamps[-1] < second - 1:
            raise _not_as_asked(f"ignored filter[updated_at][from]={second - 1}")
        return [lead for lead in page.leads if (lead.updated_at or 0) >= second]


def _check_window(page: LeadPage, window: tuple[int, int]) -> None:
    """Every lead of a by-id page lies in the asked `filter[updated_at]` window (whichever
    reading of the bounds); one outside means amoCRM ignored the filter, and listing the
    whole account by id, pass after pass, is what would follow."""
    low, high = window
    if any(not low <= (lead.updated_at or 0) <= high for lead in page.leads):
        raise _not_as_asked(f"ignored filter[updated_at] from={low} to={high}")


def _ordered(leads: list[LeadSnapshot]) -> list[LeadSnapshot]:
    return sorted(leads, key=lambda lead: (lead.updated_at or 0, lead.id))


def _not_as_asked(what: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        SERVICE,
        f"amoCRM {what}: listing it could skip leads, so it stopped. Check "
        "AMOCRM_API_BASE_URL (a proxy may rewrite the query) or report the answer to amoCRM",
        retryable=False,
    )
