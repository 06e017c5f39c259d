"""Deal events in the Inngest event API's JSON shape, their ids, and event-API requests.

`deal_event`, `batch_event` and `fanout_events` build the events. Ids are deterministic, so a
repeated send is dropped by Inngest's 24 h event-id dedupe; `chunk_events` splits a list of
events into requests the event API accepts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from prometei.deals.payload import EXTERNAL_ID_RE, DealPayload

CREATE_DEAL_EVENT = "crm/create-deal"
TASK_CREATE_EVENT = "erp/task.create"
BATCH_EVENT = "crm/batch-create-deals"

# Fan-out chunks: events per event-API request, and a byte ceiling well under Inngest's
# smallest per-request limit (256 KiB on the free plan).
SEND_CHUNK = 100
SEND_CHUNK_BYTES = 200_000
MAX_EVENT_BYTES = 256 * 1024


def content_digest(value: Any, size: int = 24) -> str:
    """A short hex digest of a JSON value (key order does not matter): a seed for event ids."""
    raw = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:size]


def fanout_event_id(batch_id: str, index: int) -> str:
    """The id of the `crm/create-deal` event for deal `index` of batch event `batch_id`."""
    return f"{batch_id}-{index}"


def derived_external_id(batch_id: str, index: int) -> str:
    """The externalId a batch gives a deal that has none: stable for the batch and index,
    so with ERP_LEAD_ID_FIELD even a retry after a lost insert answer updates."""
    candidate = fanout_event_id(batch_id, index)
    if EXTERNAL_ID_RE.match(candidate):
        return candidate
    return f"b{content_digest(batch_id, 24)}-{index}"


def _event(name: str, data: dict[str, Any], event_id: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"name": name, "data": data}
    if event_id:
        event["id"] = event_id
    return event


def deal_event(
    deal: DealPayload, *, event_id: str | None = None, name: str = CREATE_DEAL_EVENT
) -> dict[str, Any]:
    """One `crm/create-deal` (or `erp/task.create`) event in the event API's JSON shape."""
    return _event(name, deal.to_data(), event_id)


def batch_event(deals: Sequence[DealPayload], *, event_id: str | None = None) -> dict[str, Any]:
    """One `crm/batch-create-deals` event holding `deals`."""
    return _event(BATCH_EVENT, {"deals": [d.to_data() for d in deals]}, event_id)


def fanout_events(batch_id: str, deals: Sequence[tuple[int, DealPayload]]) -> list[dict[str, Any]]:
    """The per-deal events of a batch: id `<batch id>-<index>`, an externalId (the deal's own
    or a derived one) and the batch id/index, so every deal is its own durable run."""
    events = []
    for index, deal in deals:
        data = deal.to_data()
        data.setdefault("externalId", derived_external_id(batch_id, index))
        data["batchId"] = batch_id
        data["batchIndex"] = index
        events.append(_event(CREATE_DEAL_EVENT, data, fanout_event_id(batch_id, index)))
    return events


def event_size(event: Mapping[str, Any]) -> int:
    return len(json.dumps(event, ensure_ascii=False).encode("utf-8"))


def chunk_events(
    events: Sequence[dict[str, Any]],
    *,
    max_count: int = SEND_CHUNK,
    max_bytes: int = SEND_CHUNK_BYTES,
) -> list[list[dict[str, Any]]]:
    """Split events into event-API requests of at most `max_count` events and about
    `max_bytes` bytes. Deterministic: the same events always give the same chunks."""
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for event in events:
        grow = event_size(event) + 1
        if current and (len(current) >= max_count or size + grow > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(event)
        size += grow
    if current:
        chunks.append(current)
    return chunks
