"""Inngest events: building them from amoCRM webhooks, and sending them to the event API.

`build_lead_events(payload, trigger_statuses=...)` turns a parsed webhook into one event per
lead item (`amocrm/lead.<action>`) with a deterministic id, so a redelivered webhook is dropped
by Inngest (a repeated id is ignored for 24 h) while a real change gets a new id.
`sync_event(lead_id)` builds the `amocrm/lead.sync` event used by replays and backfills.
`EventSender.send(events)` POSTs a batch to `{event_api_origin}e/{event_key}`; it never puts the
key (which is in the URL path) into an error or a log line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from prometei.amocrm.webhook import LeadItem, WebhookAccount, WebhookPayload
from prometei.config import Settings
from prometei.errors import (
    ConfigError,
    InputError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
    excerpt,
)
from prometei.http import DEFAULT_TIMEOUT, make_session, send
from prometei.redaction import redact

LEAD_EVENT_PREFIX = "amocrm/lead."
STATUS_ACTION = "status"
SYNC_EVENT = "amocrm/lead.sync"
# What the Inngest dev server (and the SDK) use when no event key is configured.
DEV_EVENT_KEY = "NO_EVENT_KEY_SET"
SERVICE = "inngest"

Event = dict[str, Any]


# ---- building events -----------------------------------------------------------------------


@dataclass(frozen=True)
class LeadEventBatch:
    """The events to send for one webhook, and how many of its items were not turned into one.

    `ignored` counts lead items left out by the trigger filter plus every item that is not a
    lead item we handle (contacts, companies, tasks, unknown lead actions...).
    """

    events: list[Event] = field(default_factory=list)
    ignored: int = 0


def build_lead_events(
    payload: WebhookPayload, *, trigger_statuses: tuple[tuple[int, int], ...] = ()
) -> LeadEventBatch:
    """One event per lead item; status items outside `trigger_statuses` (if any) are dropped."""
    wanted = set(trigger_statuses)
    events: list[Event] = []
    ignored = payload.ignored_count
    for item in payload.leads:
        if item.action == STATUS_ACTION and wanted and not _in_trigger(item, wanted):
            ignored += 1
            continue
        events.append(lead_event(payload.account, item))
    return LeadEventBatch(events=events, ignored=ignored)


def _in_trigger(item: LeadItem, wanted: set[tuple[int, int]]) -> bool:
    if item.pipeline_id is None or item.status_id is None:
        return False
    return (item.pipeline_id, item.status_id) in wanted


def lead_event(account: WebhookAccount, item: LeadItem) -> Event:
    """The `amocrm/lead.<action>` event for one lead item (see DESIGN.md 3.3 for the data)."""
    data: dict[str, Any] = {
        "lead_id": item.id,
        "account_id": account.id,
        "subdomain": account.subdomain,
        "action": item.action,
    }
    if item.action == STATUS_ACTION:
        data.update(
            pipeline_id=item.pipeline_id,
            status_id=item.status_id,
            old_pipeline_id=item.old_pipeline_id,
            old_status_id=item.old_status_id,
            status_changed=_changed(item.old_status_id, item.status_id, unknown=True),
            pipeline_changed=_changed(item.old_pipeline_id, item.pipeline_id, unknown=False),
        )
    data["fields"] = item.fields
    return {
        "name": LEAD_EVENT_PREFIX + item.action,
        "data": data,
        "id": lead_event_id(account, item),
    }


def _changed(old: int | None, new: int | None, *, unknown: bool) -> bool:
    # A status webhook is by definition a stage change, so a missing old_status_id still
    # counts as changed; old_pipeline_id is often left out when the pipeline stayed the same.
    if old is None or new is None:
        return unknown
    return old != new


def lead_event_id(account: WebhookAccount, item: LeadItem) -> str:
    """Deterministic id: the same item content gives the same id, in any field order.

    Hashes the account, lead id, action and the canonical JSON (sorted keys) of the item's raw
    fields. amoCRM bumps `updated_at`/`last_modified` on every real change, so a new change gets
    a new id, while a redelivery of the same webhook repeats the id and Inngest drops it.
    """
    canonical = json.dumps(
        [account.id, account.subdomain, item.id, item.action, item.fields],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    digest = hashlib.sha256(canonical.encode("ascii")).hexdigest()
    return f"amocrm-lead-{item.id}-{item.action}-{digest[:32]}"


def sync_event(
    lead_id: int, *, id: str | None = None, force: bool = False, source: str | None = None
) -> Event:
    """`amocrm/lead.sync` for one lead: the one builder replays, backfills and the reconcile
    use.

    Without `id` the event has none, so Inngest runs it even if the lead was synced recently;
    pass an `id` to make repeats a no-op for 24 h (replay: `replay-<lead>-<key>`, backfill
    and reconcile: `sync-<lead>-<updated_at>`). `force` (replay) writes the ERP record even when
    write-back remembers the same values written already (`prometei.amocrm.writeback`).
    `source` (`backfill`, `reconcile`) is shown in the event's data for whoever reads it in the
    dashboard.
    """
    if isinstance(lead_id, bool) or not isinstance(lead_id, int) or lead_id <= 0:
        raise InputError(f"lead id {lead_id!r} must be a positive integer")
    data: dict[str, Any] = {"lead_id": lead_id}
    if force:
        data["force"] = True
    if source is not None:
        data["source"] = source
    event: Event = {"name": SYNC_EVENT, "data": data}
    if id is not None:
        event["id"] = id
    return event


# ---- sending events ------------------------------------------------------------------------


class EventSender:
    """Sends event batches to the Inngest event API with `requests`.

    Build it with `from_settings(settings)` (or `get_services().events`). In dev mode without
    INNGEST_EVENT_KEY it uses the dev server's placeholder key; in cloud mode a missing key is a
    `ConfigError` raised by `send()`, so constructing the sender never fails.
    """

    def __init__(
        self,
        *,
        origin: str,
        event_key: str | None,
        is_dev: bool,
        session: requests.Session | None = None,
    ) -> None:
        self._origin = origin if origin.endswith("/") else origin + "/"
        self._event_key = event_key or (DEV_EVENT_KEY if is_dev else None)
        self._is_dev = is_dev
        self._session = session

    @classmethod
    def from_settings(cls, settings: Settings) -> EventSender:
        key = settings.inngest_event_key
        return cls(
            origin=settings.event_api_origin,
            event_key=key.get_secret_value() if key else None,
            is_dev=settings.is_dev,
        )

    def __repr__(self) -> str:  # never show the key
        return f"EventSender(origin={self._origin!r}, dev={self._is_dev})"

    @property
    def configured(self) -> bool:
        """True when `send()` has a key to use (always in dev mode)."""
        return self._event_key is not None

    def send(
        self, events: list[Event], *, timeout: tuple[float, float] = DEFAULT_TIMEOUT
    ) -> list[str]:
        """POST the events as one JSON array; returns the ids Inngest assigned.

        Raises `ConfigError` (no key in cloud mode), `UpstreamUnavailable` (network, timeout,
        429, 5xx: try again later), `UpstreamRejected` (401/403/other 4xx or an error body)
        or `UpstreamProtocolError` (a success answer without ids).
        """
        if not events:
            return []
        if self._event_key is None:
            raise ConfigError(
                "INNGEST_EVENT_KEY is not set: copy an event key from the Inngest dashboard "
                "(Manage -> Event Keys), or set INNGEST_DEV=1 for local development"
            )
        if self._session is None:
            self._session = make_session()
        url = f"{self._origin}e/{quote(self._event_key, safe='')}"
        response = send(self._session, SERVICE, "POST", url, json=events, timeout=timeout)
        return self._ids(response)

    def _ids(self, response: requests.Response) -> list[str]:
        status = response.status_code
        body = self._scrubbed(response.text)
        if status == 429 or status >= 500:
            raise UpstreamUnavailable(
                SERVICE,
                f"event API answered {status}: Inngest is unavailable or over its limits; if it "
                "persists, check Inngest's status (or the dev server, in dev mode)",
                status=status,
                body_excerpt=body,
            )
        if status >= 400:
            raise UpstreamRejected(SERVICE, _rejection(status), status=status, body_excerpt=body)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, dict) and answer.get("error"):
            message = self._scrubbed(str(answer["error"]))
            raise UpstreamRejected(
                SERVICE, f"event API refused the events: {message}", status=status
            )
        ids = answer.get("ids") if isinstance(answer, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise UpstreamProtocolError(
                SERVICE,
                f"event API answered {status} without a list of ids",
                status=status,
                body_excerpt=body,
            )
        return ids

    def _scrubbed(self, text: str) -> str:
        """A short excerpt with the key masked (an echoed URL would carry it)."""
        return excerpt(redact(text, extra=(self._event_key or "",)))


def _rejection(status: int) -> str:
    if status == 401:
        return (
            "event API refused the event key (401): INNGEST_EVENT_KEY is probably wrong or "
            "belongs to another Inngest environment; copy it again from the dashboard"
        )
    if status == 403:
        return (
            "event API forbade the request (403): the event key may be disabled or limited to "
            "other event names; check it in the Inngest dashboard"
        )
    return f"event API rejected the events ({status}); the event shape may be invalid"
