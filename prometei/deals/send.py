"""`send_deals(deals, batch=..., dry_run=...)`: the helper internal systems and the CLI call.

It validates (`prometei.deals.validation`), builds the events (`prometei.deals.events`) and
posts them to Inngest, and answers with a `SendReport`; nothing is sent when any deal is invalid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from prometei.deals.events import (
    CREATE_DEAL_EVENT,
    MAX_EVENT_BYTES,
    TASK_CREATE_EVENT,
    batch_event,
    chunk_events,
    content_digest,
    deal_event,
    event_size,
)
from prometei.deals.payload import DealPayload, DealValidationError
from prometei.deals.validation import parse_batch, parse_deal
from prometei.errors import ConfigError, PrometeiError

if TYPE_CHECKING:
    from prometei.config import Settings
    from prometei.services import Services

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")


class EventSink(Protocol):
    """Anything that posts events to Inngest and returns their ids (`prometei.events`)."""

    def send(self, events: list[dict[str, Any]]) -> list[str]: ...


@dataclass
class SendReport:
    """What `send_deals` did. `status`: "validated" (dry run), "sent", "invalid" (nothing
    was sent) or "failed" (the event API refused or was unreachable; `event_ids` holds what
    got through before that; sending again is safe, the ids are deterministic)."""

    mode: Literal["single", "batch"]
    dry_run: bool
    total: int
    problems: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None

    @property
    def status(self) -> Literal["validated", "sent", "invalid", "failed"]:
        if self.problems:
            return "invalid"
        if self.error is not None:
            return "failed"
        return "validated" if self.dry_run else "sent"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "deals": self.total,
            "events": len(self.events),
            "event_ids": list(self.event_ids),
            "planned_event_ids": [e.get("id") for e in self.events],
            "problems": list(self.problems),
            "error": self.error,
        }


def _services() -> Services:
    # The services sit above the deals package; imported only when a default is needed.
    from prometei.services import get_services

    return get_services()


def _coerce(deal: DealPayload | Mapping[str, Any]) -> Any:
    return deal.to_data() if isinstance(deal, DealPayload) else deal


def _check_for_send(
    raw: list[Any], *, batch: bool, settings: Settings
) -> tuple[list[DealPayload], list[str]]:
    """The valid deals and every problem; the helper sends nothing unless problems is empty."""
    if batch:
        try:
            check = parse_batch({"deals": raw}, settings=settings)
        except DealValidationError as exc:
            return [], exc.problems
        return [deal for _, deal in check.valid], check.problems
    if not raw:
        return [], ["deals: nothing to send (give at least one deal)"]
    valid: list[DealPayload] = []
    problems: list[str] = []
    for index, item in enumerate(raw):
        prefix = f"deals[{index}]." if len(raw) > 1 else ""
        try:
            valid.append(parse_deal(item, settings=settings, prefix=prefix))
        except DealValidationError as exc:
            problems.extend(exc.problems)
    return valid, problems


def _plan_events(
    valid: list[DealPayload], *, batch: bool, seed: str, event_name: str
) -> tuple[list[dict[str, Any]], list[str]]:
    if not batch:
        events = [
            deal_event(deal, event_id=f"prometei-deal-{seed}-{i}", name=event_name)
            for i, deal in enumerate(valid)
        ]
        return events, []
    event = batch_event(valid, event_id=f"prometei-batch-{seed}")
    size = event_size(event)
    if size > MAX_EVENT_BYTES:
        return [], [
            f"deals: the batch event is {size // 1024} KiB; Inngest accepts "
            f"{MAX_EVENT_BYTES // 1024} KiB per event on the free plan: split the batch"
        ]
    return [event], []


def send_deals(
    deals: Sequence[DealPayload | Mapping[str, Any]],
    *,
    batch: bool,
    dry_run: bool,
    sender: EventSink | None = None,
    key: str | None = None,
    event_name: str = CREATE_DEAL_EVENT,
    settings: Settings | None = None,
) -> SendReport:
    """Validate deals and send them to Inngest; the entry point for other internal systems.

    `batch=False` sends one `crm/create-deal` (or `event_name`) event per deal; `batch=True`
    sends one `crm/batch-create-deals` event (at most 1000 deals). Nothing is sent when any
    deal is invalid, or with `dry_run=True`. Event ids are derived from `key`, or from the
    content when no key is given: sending the same thing again within 24 h is dropped by
    Inngest, so a retry after a network error never doubles a deal. Pass a new `key` to send
    the same content again on purpose. `sender` defaults to `get_services().events`.
    A send failure is reported (`status == "failed"`); a `ConfigError` (no event key) raises.
    """
    if event_name not in (CREATE_DEAL_EVENT, TASK_CREATE_EVENT):
        raise ValueError(f"event_name must be {CREATE_DEAL_EVENT} or {TASK_CREATE_EVENT}")
    report = SendReport(mode="batch" if batch else "single", dry_run=dry_run, total=len(deals))
    if key is not None and not _KEY_RE.match(key):
        report.problems.append(
            "key: must be 1\u2013100 characters: letters, digits and . _ : - (no spaces)"
        )
        return report
    if settings is None:
        settings = _services().settings
    valid, problems = _check_for_send([_coerce(d) for d in deals], batch=batch, settings=settings)
    if not problems:
        seed = key or content_digest([report.mode, event_name, [d.to_data() for d in valid]])
        report.events, problems = _plan_events(valid, batch=batch, seed=seed, event_name=event_name)
    report.problems.extend(problems)
    if report.problems or dry_run:
        return report

    if sender is None:
        sender = _services().events
    for chunk in chunk_events(report.events):
        try:
            report.event_ids.extend(sender.send(chunk))
        except ConfigError:
            raise  # e.g. no INNGEST_EVENT_KEY: the caller's setup, not a send failure
        except PrometeiError as exc:
            report.error = exc.message
            break
    return report
