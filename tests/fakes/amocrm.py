"""A stand-in for one amoCRM account's API v4 (reference amocrm.md), transport-free.

`FakeAmoCRM` holds the account and its leads (`add_lead`, `touch`), checks the bearer token on
every `/api/` request (401 problem+json otherwise), and answers:

    GET  /api/v4/account            the account (id, name, subdomain, ...)
    GET  /api/v4/leads/<id>         the lead in v4 shape, `_embedded.contacts` with ?with=contacts;
                                    204 when there is no such lead (what amoCRM sends)
    POST /oauth2/access_token       refresh-token rotation (tests.support.fake_amo_oauth)

Faults come from `FakeService.fail_next` (429 with Retry-After: `rate_limited()`, 5xx, slow
answers, 204/404); the request log records every request with a monotonic timestamp. Serve it
with `tests.support.loopback.LoopbackServer(fake.wsgi, "fake-amocrm")` and point the project at
it with AMOCRM_API_BASE_URL. New routes go into `__init__` (`self.routes.add(...)`).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from tests.fakes.web import FakeRequest, FakeService, Reply
from tests.support.fake_amo_oauth import FakeAmoOAuth

HAL_JSON = "application/hal+json"
PROBLEM_JSON = "application/problem+json"
RATE_LIMITED_PAGE = "<html><head><title>429 Too Many Requests</title></head><body></body></html>"
DEFAULT_PIPELINE = 7012345
DEFAULT_STATUS = 142


@dataclass
class FakeLead:
    id: int
    name: str
    price: int = 0
    pipeline_id: int = DEFAULT_PIPELINE
    status_id: int = DEFAULT_STATUS
    updated_at: int = field(default_factory=lambda: int(time.time()))
    created_at: int = field(default_factory=lambda: int(time.time()))
    responsible_user_id: int = 938348
    custom_fields_values: list[dict[str, Any]] | None = None
    contacts: list[int] = field(default_factory=list)
    is_deleted: bool = False

    def as_api(self, account_id: int, origin: str, *, with_contacts: bool) -> dict[str, Any]:
        """The `GET /api/v4/leads/{id}` body (reference amocrm.md §3.2)."""
        embedded: dict[str, Any] = {"tags": [], "companies": []}
        if with_contacts:
            embedded["contacts"] = [
                {
                    "id": contact_id,
                    "is_main": index == 0,
                    "_links": {"self": {"href": f"{origin}/api/v4/contacts/{contact_id}"}},
                }
                for index, contact_id in enumerate(self.contacts)
            ]
        return {
            "id": self.id,
            "name": self.name,
            "price": self.price,
            "responsible_user_id": self.responsible_user_id,
            "group_id": 0,
            "status_id": self.status_id,
            "pipeline_id": self.pipeline_id,
            "loss_reason_id": None,
            "created_by": self.responsible_user_id,
            "updated_by": self.responsible_user_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "closed_at": None,
            "closest_task_at": None,
            "is_deleted": self.is_deleted,
            "custom_fields_values": self.custom_fields_values,
            "score": None,
            "account_id": account_id,
            "labor_cost": None,
            "_links": {"self": {"href": f"{origin}/api/v4/leads/{self.id}"}},
            "_embedded": embedded,
        }


class FakeAmoCRM(FakeService):
    """One amoCRM account: `subdomain`, `account_id`, leads, accepted access tokens."""

    def __init__(
        self,
        *,
        subdomain: str = "example",
        account_id: int = 29085955,
        access_tokens: tuple[str, ...] = (),
        oauth: FakeAmoOAuth | None = None,
    ) -> None:
        super().__init__()
        self.subdomain = subdomain
        self.account_id = account_id
        self.access_tokens = set(access_tokens)
        self.oauth = oauth or FakeAmoOAuth()
        self.leads: dict[int, FakeLead] = {}
        self._clock = itertools.count(int(time.time()))
        self.routes.add("GET", r"/api/v4/account", self._account)
        self.routes.add("GET", r"/api/v4/leads/(?P<lead_id>\d+)", self._lead)
        self.routes.add("POST", r"/oauth2/access_token", self._token)

    @property
    def origin(self) -> str:
        return f"https://{self.subdomain}.amocrm.ru"

    # ---- the model --------------------------------------------------------------------------
    def add_lead(self, lead_id: int, name: str | None = None, **fields: Any) -> FakeLead:
        lead = FakeLead(id=lead_id, name=name or f"Lead {lead_id}", **fields)
        with self._lock:
            self.leads[lead_id] = lead
        return lead

    def touch(self, lead_id: int, **changes: Any) -> FakeLead:
        """Change a lead as a manager would: `updated_at` moves forward on every change."""
        with self._lock:
            lead = self.leads[lead_id]
            for name, value in changes.items():
                setattr(lead, name, value)
            lead.updated_at = max(lead.updated_at + 1, next(self._clock))
        return lead

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.leads.clear()

    def lead_reads(self, lead_id: int) -> int:
        """How many `GET /api/v4/leads/<lead_id>` requests arrived (faults included)."""
        return len(self.requests("GET", f"/api/v4/leads/{lead_id}"))

    def accepts(self, token: str) -> bool:
        issued = {access for access, _ in self.oauth.issued}
        return token in self.access_tokens or token in issued

    # ---- answers ----------------------------------------------------------------------------
    def respond(self, request: FakeRequest) -> Reply:
        if request.path.startswith("/api/"):
            scheme, _, token = request.header("Authorization").partition(" ")
            if scheme != "Bearer" or not self.accepts(token):
                return Reply.json(
                    {"title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401},
                    401,
                    PROBLEM_JSON,
                )
        return super().respond(request)

    def _account(self, request: FakeRequest) -> Reply:
        return Reply.json(
            {
                "id": self.account_id,
                "name": "Example LLC",
                "subdomain": self.subdomain,
                "country": "RU",
                "currency": "RUB",
                "_links": {"self": {"href": f"{self.origin}/api/v4/account"}},
            },
            content_type=HAL_JSON,
        )

    def _lead(self, request: FakeRequest, lead_id: str) -> Reply:
        with self._lock:
            lead = self.leads.get(int(lead_id))
            if lead is None:
                # amoCRM's "no data for this request", also for a missing lead by id (§3.4).
                return Reply.empty(204)
            with_ = (request.arg("with") or "").split(",")
            body = lead.as_api(self.account_id, self.origin, with_contacts="contacts" in with_)
        return Reply.json(body, content_type=HAL_JSON)

    def _token(self, request: FakeRequest) -> Reply:
        # The token endpoint's rules live in FakeAmoOAuth (a werkzeug app); hand it the request.
        environ = EnvironBuilder(
            method=request.method,
            path=request.path,
            data=request.body,
            headers=dict(request.headers),
        ).get_environ()
        answer = self.oauth._handle(Request(environ))
        return Reply(
            answer.status_code, answer.get_data(), {"Content-Type": answer.content_type or ""}
        )


def rate_limited(retry_after_s: int | None = 1) -> Reply:
    """amoCRM's 429: an HTML page; a Retry-After only when asked for (amoCRM rarely sends one)."""
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else {}
    return Reply.html(RATE_LIMITED_PAGE, 429, headers)


def server_error(status: int = 503) -> Reply:
    return Reply.html(f"<html><body><h1>{status}</h1>nginx</body></html>", status)


def lead_path(lead_id: int) -> str:
    return f"/api/v4/leads/{lead_id}"
