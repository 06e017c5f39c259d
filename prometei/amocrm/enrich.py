"""Extra lead data ERP_FIELD_MAP can ask for: the main contact, the company, stage names.

The lead endpoint gives only ids for these. `enrich(lead, needs, client, names)` reads what
the map needs and nothing else: one request for the main contact (`contact_name`,
`contact_phone`, `contact_email`), one for the company (`company_name`), and the pipeline and
status names from `PipelineNames`, which keeps the account's pipelines for a while on a warm
instance (no request in the steady state).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from prometei.amocrm.models import LeadSnapshot, SourceOrigin

PIPELINES_TTL_SECONDS = 900


class EnrichmentSource(Protocol):
    """What enrichment needs from the amoCRM client."""

    def get_contact(self, contact_id: int) -> dict[str, Any] | None: ...

    def get_company(self, company_id: int) -> dict[str, Any] | None: ...

    def pipelines(self) -> list[dict[str, Any]]: ...


class PipelineNames:
    """Pipeline id -> name and (pipeline id, status id) -> name, read once per `ttl_s`.

    A stage missing from the cached copy (created since) triggers one early re-read."""

    def __init__(
        self,
        client: EnrichmentSource,
        ttl_s: float = PIPELINES_TTL_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pipelines: dict[int, str] = {}
        self._statuses: dict[tuple[int, int], str] = {}
        self._expires_at = float("-inf")
        self._fetched_at = float("-inf")

    def names(
        self, pipeline_id: int | None, status_id: int | None
    ) -> tuple[str | None, str | None]:
        """(pipeline name, status name); None for what amoCRM does not know."""
        with self._lock:
            now = self._clock()
            missing = pipeline_id is not None and (
                pipeline_id not in self._pipelines
                or (status_id is not None and (pipeline_id, status_id) not in self._statuses)
            )
            if now >= self._expires_at or (missing and now - self._fetched_at > 5):
                self._load(now)
            pipeline = self._pipelines.get(pipeline_id) if pipeline_id is not None else None
            status = (
                self._statuses.get((pipeline_id, status_id))
                if pipeline_id is not None and status_id is not None
                else None
            )
            return pipeline, status

    def listing(self) -> tuple[dict[int, str], dict[tuple[int, int], str]]:
        """Every pipeline name by id and status name by (pipeline id, status id)."""
        with self._lock:
            now = self._clock()
            if now >= self._expires_at:
                self._load(now)
            return dict(self._pipelines), dict(self._statuses)

    def _load(self, now: float) -> None:
        pipelines: dict[int, str] = {}
        statuses: dict[tuple[int, int], str] = {}
        for item in self._client.pipelines():
            pid = item.get("id")
            if not isinstance(pid, int):
                continue
            pipelines[pid] = str(item.get("name") or "")
            embedded = item.get("_embedded") or {}
            for status in embedded.get("statuses") or [] if isinstance(embedded, dict) else []:
                if isinstance(status, dict) and isinstance(status.get("id"), int):
                    statuses[(pid, status["id"])] = str(status.get("name") or "")
        self._pipelines, self._statuses = pipelines, statuses
        self._fetched_at = now
        self._expires_at = now + self._ttl


def enrich(
    lead: LeadSnapshot,
    needs: Collection[SourceOrigin],
    client: EnrichmentSource,
    names: PipelineNames | None,
) -> LeadSnapshot:
    """`lead` with the extra fields `needs` asks for filled in (a gone contact or company
    leaves them empty: an update then keeps what the ERP record has)."""
    extra: dict[str, Any] = {}
    if "contact" in needs and lead.main_contact_id is not None:
        contact = client.get_contact(lead.main_contact_id)
        if contact is not None:
            extra.update(contact_details(contact))
    if "company" in needs and lead.company_id is not None:
        company = client.get_company(lead.company_id)
        if company is not None:
            extra["company_name"] = _text(company.get("name"))
    if "pipelines" in needs and names is not None:
        extra["pipeline_name"], extra["status_name"] = names.names(lead.pipeline_id, lead.status_id)
    return lead.model_copy(update=extra) if extra else lead


def contact_details(contact: dict[str, Any]) -> dict[str, str | None]:
    """Name, first phone and first e-mail of a `GET /api/v4/contacts/{id}` body."""
    name = _text(contact.get("name")) or _text(
        " ".join(str(contact.get(k) or "") for k in ("first_name", "last_name"))
    )
    return {
        "contact_name": name,
        "contact_phone": _first_value(contact, "PHONE"),
        "contact_email": _first_value(contact, "EMAIL"),
    }


def _first_value(entity: dict[str, Any], code: str) -> str | None:
    for field in entity.get("custom_fields_values") or []:
        if isinstance(field, dict) and field.get("field_code") == code:
            for item in field.get("values") or []:
                value = _text(item.get("value") if isinstance(item, dict) else item)
                if value:
                    return value
    return None


def _text(value: Any) -> str | None:
    text = " ".join(str(value).split()) if value is not None else ""
    return text or None
