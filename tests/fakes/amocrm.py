"""A stand-in for one amoCRM account's API v4 (reference amocrm.md), transport-free.

`FakeAmoCRM` holds the account and its leads (`add_lead`, `touch`, `delete_lead`), checks the
bearer token on every `/api/` request (401 problem+json otherwise), and answers:

    GET  /api/v4/account            the account (id, name, subdomain, current_user_id, ...)
    GET  /api/v4/leads/<id>         the lead in v4 shape, `_embedded.contacts` with ?with=contacts;
                                    204 when there is no such lead (what amoCRM sends); a
                                    deleted lead: `deleted_lead_answer` (204, 404 or the lead)
    GET  /api/v4/contacts/<id>      a contact added with `add_contact` (204 otherwise)
    GET  /api/v4/leads              the list as amoCRM pages it: `page` + `limit` (<= 250; the
                                    only list parameters the reference documents), offset
                                    pages over the list as it is at the moment of each request,
                                    204 past the end, `_links.next` while more follow. Deleted
                                    leads are left out; `with=only_deleted` lists only them
                                    (id, updated_at, is_deleted), as the reference says (§3.1).
                                    Assumed from Kommo's public pages, not the reference:
                                    `filter[updated_at][from|to]`, `filter[pipeline_id]`,
                                    `filter[statuses][i][...]`, `filter[id]`,
                                    `order[updated_at|created_at|id]=asc|desc`;
                                    `ignored_list_params` makes the account ignore any of them.
                                    Leads that tie on the sort field come newest id first, so
                                    nobody relies on an undocumented order
    GET|POST /api/v4/webhooks       the webhooks API (reference §1.1: list, subscribe
                                    `{destination, settings}`); assumed, not in the reference:
    DELETE /api/v4/webhooks         unsubscribe `{destination}`, the list's
                                    `filter[destination]`, and 403 for a non-administrator
    POST /oauth2/access_token       refresh-token rotation (tests.support.fake_amo_oauth)

and the write-back side (shapes as the official PHP SDK sends and reads them):

    PATCH /api/v4/leads/<id>        `custom_fields_values` of known lead fields (`lead_fields`)
                                    are set, `updated_at` moves on; answers {id, updated_at};
                                    an unknown field is a 400 with `validation-errors`
    POST  /api/v4/leads/notes       a list of {entity_id, note_type: "common", params.text}
                                    notes; answers their ids in `_embedded.notes`
    GET   /api/v4/users/<id>        the user with its `rights` (`users`, editable by tests)
    GET   /api/v4/leads/custom_fields/<id>   a lead field of `lead_fields`, 204 otherwise

Every change made through the API is also queued in `outbox` as the webhook form (decoded
`key=value` lines) the account would post about it: `leads[update]` after a PATCH,
`leads[note]` after a note. Whether a note moves the lead's `updated_at` is not documented;
`notes_touch_lead=True` makes it do so, for the reading where it does.
What amoCRM leaves undocumented is a switch, so tests can run both readings:
`exclusive_updated_range` (the from/to bounds exclude their second), `post_reenables_webhook`
(POST for a destination that exists updates and enables it; else 400), `webhooks_forbidden`
(the token's user is not an administrator: 403), `deleted_lead_answer`, `ignored_list_params`.
`after_list(n)` runs after the n-th list answer, e.g. to edit leads while a listing pages
through them. `peak_rate()` (the base class) counts requests in any sliding window, as amoCRM's
limit does; `enforce_rate_limit = 7` (off by default) makes the account answer 429 on its own to
a request that makes more than 7 arrive within a sliding second.

Faults come from `FakeService.fail_next` (`rate_limited()`: amoCRM's 429, an HTML page without
Retry-After unless a test asks for one; 5xx, slow answers, 204/404); the request log records
every request with a monotonic timestamp. Serve it with
`tests.support.loopback.LoopbackServer(fake.wsgi, "fake-amocrm")` and point the project at it
with AMOCRM_API_BASE_URL. New routes go into `__init__` (`self.routes.add(...)`).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from tests.fakes.web import FakeRequest, FakeService, Reply
from tests.support.fake_amo_oauth import FakeAmoOAuth

HAL_JSON = "application/hal+json"
PROBLEM_JSON = "application/problem+json"
RATE_LIMITED_PAGE = "<html><head><title>429 Too Many Requests</title></head><body></body></html>"
DEFAULT_PIPELINE = 7012345
DEFAULT_STATUS = 142
DEFAULT_USER_ID = 938348
# A text field of the account's leads, for AMOCRM_ERP_ID_FIELD.
ERP_ID_FIELD = 977001
LEAD_RIGHTS_ALL = {"view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A"}
DeletedLeadAnswer = Literal[204, 404, "lead"]


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
    notes: list[dict[str, Any]] = field(default_factory=list)

    def field_values(self, field_id: int) -> list[str]:
        """The values of custom field `field_id` as text ([] when unset)."""
        for item in self.custom_fields_values or []:
            if item.get("field_id") == field_id:
                return [str(v.get("value")) for v in item.get("values") or []]
        return []

    def as_deleted(self, origin: str) -> dict[str, Any]:
        """An item of the `with=only_deleted` list: id, modification date, `is_deleted` (§3.1)."""
        return {
            "id": self.id,
            "updated_at": self.updated_at,
            "is_deleted": True,
            "_links": {"self": {"href": f"{origin}/api/v4/leads/{self.id}"}},
        }

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


@dataclass
class FakeWebhook:
    id: int
    destination: str
    settings: list[str]
    disabled: bool = False
    sort: int = 10

    def as_api(self, account_id: int) -> dict[str, Any]:
        """One item of `GET /api/v4/webhooks` (amoCRM's webhooks-api page)."""
        return {
            "id": self.id,
            "destination": self.destination,
            "created_at": 1_575_539_157,
            "updated_at": 1_575_539_157,
            "account_id": account_id,
            "created_by": 938348,
            "sort": self.sort,
            "disabled": self.disabled,
            "settings": list(self.settings),
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
        notes_touch_lead: bool = False,
    ) -> None:
        super().__init__()
        self.subdomain = subdomain
        self.account_id = account_id
        self.access_tokens = set(access_tokens)
        self.oauth = oauth or FakeAmoOAuth()
        self.leads: dict[int, FakeLead] = {}
        self.notes_touch_lead = notes_touch_lead
        self.user_id = DEFAULT_USER_ID  # the user every token acts as
        self.users: dict[int, dict[str, Any]] = {DEFAULT_USER_ID: user_body(DEFAULT_USER_ID)}
        self.lead_fields: dict[int, dict[str, Any]] = {
            ERP_ID_FIELD: {"id": ERP_ID_FIELD, "name": "Запись ERP", "type": "text"}
        }
        self.outbox: list[str] = []
        self._clock = itertools.count(int(time.time()))
        self._note_ids = itertools.count(70_000_001)
        self.webhooks: dict[str, FakeWebhook] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self._webhook_ids = itertools.count(839_656)
        self.list_answers = 0
        self.after_list: Callable[[int], None] | None = None
        self.exclusive_updated_range = False
        self.post_reenables_webhook = True
        self.webhooks_forbidden = False
        # What `GET /api/v4/leads/<id>` answers for a deleted lead. The reference leaves it open
        # (amocrm.md §6 question 5: 204 or 404; peers assume 204); "lead" is a third reading,
        # 200 with `is_deleted: true` (the field is in the lead body, §3.2).
        self.deleted_lead_answer: DeletedLeadAnswer = 204
        # Opt-in: amoCRM's own limit (§4.1: 7 requests/s per integration). When set, an /api/
        # request that makes more than this many arrive within a sliding second is answered
        # `rate_limited()` (the refused ones count too: amoCRM sees them arrive).
        self.enforce_rate_limit: int | None = None
        # List parameters this account acts as if it never got (prefixes: "filter[updated_at]",
        # "order", "filter[pipeline_id]", "filter[statuses]", "filter[id]"): the reference
        # documents only `limit` and `page`, so an amoCRM that ignores the others is a reading.
        self.ignored_list_params: set[str] = set()
        self.routes.add("GET", r"/api/v4/account", self._account)
        self.routes.add("GET", r"/api/v4/leads", self._list_leads)
        self.routes.add("GET", r"/api/v4/leads/(?P<lead_id>\d+)", self._lead)
        self.routes.add("PATCH", r"/api/v4/leads/(?P<lead_id>\d+)", self._patch_lead)
        self.routes.add("POST", r"/api/v4/leads/notes", self._add_notes)
        self.routes.add("GET", r"/api/v4/users/(?P<user_id>\d+)", self._user)
        self.routes.add("GET", r"/api/v4/leads/custom_fields/(?P<field_id>\d+)", self._lead_field)
        self.routes.add("GET", r"/api/v4/contacts/(?P<contact_id>\d+)", self._contact)
        self.routes.add("GET|POST|DELETE", r"/api/v4/webhooks", self._webhooks)
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
            self._changed(lead)
        return lead

    def add_contact(self, contact_id: int, name: str) -> None:
        with self._lock:
            self.contacts[contact_id] = {
                "id": contact_id,
                "name": name,
                "custom_fields_values": None,
                "account_id": self.account_id,
                "_links": {"self": {"href": f"{self.origin}/api/v4/contacts/{contact_id}"}},
            }

    def delete_lead(self, lead_id: int) -> FakeLead:
        """Delete a lead as a manager would: it stays restorable (`is_deleted`), leaves the
        lists and shows up only under `with=only_deleted` (§3.1). That deleting moves its
        `updated_at` is an assumption (the only_deleted list shows a modification date)."""
        return self.touch(lead_id, is_deleted=True)

    def touch_at(self, lead_id: int, updated_at: int, **changes: Any) -> FakeLead:
        """Change a lead and set its `updated_at` to exactly `updated_at` (crowded seconds)."""
        with self._lock:
            lead = self.leads[lead_id]
            for name, value in changes.items():
                setattr(lead, name, value)
            lead.updated_at = updated_at
        return lead

    def subscribe(self, destination: str, settings: list[str], *, disabled: bool = False) -> None:
        """A webhook as if someone had set it up in amoCRM."""
        with self._lock:
            self.webhooks[destination] = FakeWebhook(
                next(self._webhook_ids), destination, list(settings), disabled
            )

    def disable_webhook(self, destination: str) -> None:
        """What amoCRM does after more than 100 failed deliveries in 2 hours."""
        with self._lock:
            self.webhooks[destination].disabled = True

    def list_requests(self) -> int:
        return len(self.requests("GET", "/api/v4/leads"))

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.leads.clear()
            self.outbox.clear()
            self.webhooks.clear()
            self.contacts.clear()
            self.list_answers = 0
            self.after_list = None

    def notes_of(self, lead_id: int) -> list[str]:
        """The texts of the notes on lead `lead_id`, oldest first."""
        with self._lock:
            return [note["params"]["text"] for note in self.leads[lead_id].notes]

    def writes(self, method: str, lead_id: int | None = None) -> int:
        """How many PATCH (lead) or POST (notes) write requests arrived, faults included."""
        path = f"/api/v4/leads/{lead_id}" if method == "PATCH" else "/api/v4/leads/notes"
        return len(self.requests(method, path))

    def take_outbox(self) -> list[str]:
        """The webhook forms queued since the last call (and forget them)."""
        with self._lock:
            forms, self.outbox = self.outbox, []
        return forms

    def lead_reads(self, lead_id: int) -> int:
        """How many `GET /api/v4/leads/<lead_id>` requests arrived (faults included)."""
        return len(self.requests("GET", f"/api/v4/leads/{lead_id}"))

    def accepts(self, token: str) -> bool:
        issued = {access for access, _ in self.oauth.issued}
        return token in self.access_tokens or token in issued

    # ---- answers ----------------------------------------------------------------------------
    def respond(self, request: FakeRequest) -> Reply:
        if request.path.startswith("/api/"):
            if self._over_rate_limit(request):
                return rate_limited()
            scheme, _, token = request.header("Authorization").partition(" ")
            if scheme != "Bearer" or not self.accepts(token):
                return Reply.json(
                    {"title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401},
                    401,
                    PROBLEM_JSON,
                )
        return super().respond(request)

    def _over_rate_limit(self, request: FakeRequest) -> bool:
        """True when `enforce_rate_limit` is on and `request` is one too many in its second
        (counted over the log, which already holds it, by arrival time)."""
        limit = self.enforce_rate_limit
        if limit is None:
            return False
        with self._lock:
            arrived = sum(
                1
                for entry in self.log
                if entry.path.startswith("/api/") and request.at - 1.0 < entry.at <= request.at
            )
        return arrived > limit

    def _account(self, request: FakeRequest) -> Reply:
        return Reply.json(
            {
                "id": self.account_id,
                "name": "Example LLC",
                "subdomain": self.subdomain,
                "current_user_id": self.user_id,
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
            if lead.is_deleted and self.deleted_lead_answer != "lead":
                if self.deleted_lead_answer == 204:
                    return Reply.empty(204)
                return _not_found("Lead not found")
            with_ = (request.arg("with") or "").split(",")
            body = lead.as_api(self.account_id, self.origin, with_contacts="contacts" in with_)
        return Reply.json(body, content_type=HAL_JSON)

    def _patch_lead(self, request: FakeRequest, lead_id: str) -> Reply:
        body = _json_body(request)
        if not isinstance(body, dict):
            return bad_request("body", "the body must be a JSON object")
        changes = body.get("custom_fields_values")
        if not isinstance(changes, list):
            return bad_request("custom_fields_values", "only custom_fields_values is supported")
        with self._lock:
            lead = self.leads.get(int(lead_id))
            if lead is None:
                return _not_found("Lead not found")
            for index, change in enumerate(changes):
                field_id = change.get("field_id") if isinstance(change, dict) else None
                values = change.get("values") if isinstance(change, dict) else None
                if field_id not in self.lead_fields:
                    return bad_request(
                        f"custom_fields_values.{index}.field_id", "NotSupportedChoice"
                    )
                if not isinstance(values, list):
                    return bad_request(f"custom_fields_values.{index}.values", "NotBlank")
                definition = self.lead_fields[field_id]
                kept = [c for c in lead.custom_fields_values or [] if c["field_id"] != field_id]
                kept.append(
                    {
                        "field_id": field_id,
                        "field_name": definition["name"],
                        "field_code": None,
                        "field_type": definition["type"],
                        "values": [{"value": v.get("value")} for v in values],
                    }
                )
                lead.custom_fields_values = kept
            self._changed(lead)
            self.outbox.append(update_form(self, lead))
            answer = {
                "id": lead.id,
                "updated_at": lead.updated_at,
                "_links": {"self": {"href": f"{self.origin}/api/v4/leads/{lead.id}"}},
            }
        return Reply.json(answer, content_type=HAL_JSON)

    def _add_notes(self, request: FakeRequest) -> Reply:
        items = _json_body(request)
        if not isinstance(items, list) or not items:
            return bad_request("body", "the body must be a JSON array of notes")
        created = []
        with self._lock:
            for index, item in enumerate(items):
                lead = self.leads.get(item.get("entity_id")) if isinstance(item, dict) else None
                text = (item.get("params") or {}).get("text") if isinstance(item, dict) else None
                if lead is None:
                    return bad_request(f"{index}.entity_id", "NotFound")
                if item.get("note_type") != "common" or not isinstance(text, str) or not text:
                    return bad_request(f"{index}.params.text", "NotBlank")
                note = {"id": next(self._note_ids), "entity_id": lead.id, **item}
                lead.notes.append(note)
                self.outbox.append(note_form(self, lead, note))
                if self.notes_touch_lead:
                    self._changed(lead)
                created.append({"id": note["id"], "entity_id": lead.id, "request_id": str(index)})
        return Reply.json(
            {"_total_items": len(created), "_embedded": {"notes": created}},
            content_type=HAL_JSON,
        )

    def _user(self, request: FakeRequest, user_id: str) -> Reply:
        user = self.users.get(int(user_id))
        return Reply.empty(204) if user is None else Reply.json(user, content_type=HAL_JSON)

    def _lead_field(self, request: FakeRequest, field_id: str) -> Reply:
        found = self.lead_fields.get(int(field_id))
        if found is None:
            return Reply.empty(204)
        return Reply.json({**found, "entity_type": "leads", "is_api_only": False},
                          content_type=HAL_JSON)  # fmt: skip

    def _changed(self, lead: FakeLead) -> None:
        """`updated_at` moves forward on every change (call with the lock held)."""
        lead.updated_at = max(lead.updated_at + 1, next(self._clock))

    def _contact(self, request: FakeRequest, contact_id: str) -> Reply:
        with self._lock:
            contact = self.contacts.get(int(contact_id))
        if contact is None:
            return Reply.empty(204)
        return Reply.json(contact, content_type=HAL_JSON)

    def _list_leads(self, request: FakeRequest) -> Reply:
        try:
            page = int(request.arg("page", "1") or "1")
            limit = int(request.arg("limit", "50") or "50")
        except ValueError:
            return _problem(400, "page and limit must be numbers")
        if page < 1 or not 1 <= limit <= 250:
            return _problem(400, "limit must be 1..250 and page 1 or more")
        request = self._as_heard(request)
        # Deleted leads are listed only with `with=only_deleted`, and then only they (§3.1).
        only_deleted = "only_deleted" in (request.arg("with") or "").split(",")
        with self._lock:
            chosen = [
                lead
                for lead in self.leads.values()
                if lead.is_deleted == only_deleted and self._selected(lead, request)
            ]
            field_name, descending = _order(request)
            # Ties on the sort field: newest id first (amoCRM documents no order for them).
            chosen.sort(key=lambda lead: -lead.id)
            chosen.sort(key=lambda lead: getattr(lead, field_name), reverse=descending)
            shown = chosen[(page - 1) * limit : page * limit]
            more = len(chosen) > page * limit
            body = {
                "_page": page,
                "_links": {
                    "self": {"href": f"{self.origin}/api/v4/leads?page={page}"},
                    **(
                        {"next": {"href": f"{self.origin}/api/v4/leads?page={page + 1}"}}
                        if more
                        else {}
                    ),
                },
                "_embedded": {
                    "leads": [
                        lead.as_deleted(self.origin)
                        if only_deleted
                        else lead.as_api(self.account_id, self.origin, with_contacts=False)
                        for lead in shown
                    ]
                },
            }
            self.list_answers += 1
            number = self.list_answers
        reply = Reply.json(body, content_type=HAL_JSON) if shown else Reply.empty(204)
        if self.after_list is not None:
            self.after_list(number)
        return reply

    def _as_heard(self, request: FakeRequest) -> FakeRequest:
        """`request` without the list parameters this account ignores (`ignored_list_params`)."""
        if not self.ignored_list_params:
            return request
        kept = {
            key: values
            for key, values in request.query.items()
            if not key.startswith(tuple(self.ignored_list_params))
        }
        return dataclasses.replace(request, query=kept)

    def _selected(self, lead: FakeLead, request: FakeRequest) -> bool:
        low, high = request.arg("filter[updated_at][from]"), request.arg("filter[updated_at][to]")
        strict = self.exclusive_updated_range
        if low is not None and (
            lead.updated_at <= int(low) if strict else lead.updated_at < int(low)
        ):
            return False
        if high is not None and (
            lead.updated_at >= int(high) if strict else lead.updated_at > int(high)
        ):
            return False
        pipelines = _values(request, "filter[pipeline_id]")
        if pipelines and str(lead.pipeline_id) not in pipelines:
            return False
        ids = _values(request, "filter[id]")
        if ids and str(lead.id) not in ids:
            return False
        stages = _stage_pairs(request)
        return not stages or (lead.pipeline_id, lead.status_id) in stages

    def _webhooks(self, request: FakeRequest) -> Reply:
        if self.webhooks_forbidden:
            return _problem(403, "Access denied: the user is not an account administrator")
        if request.method == "GET":
            return self._list_webhooks(request.arg("filter[destination]"))
        body = request.json() or {}
        destination = body.get("destination") if isinstance(body, dict) else None
        if not isinstance(destination, str) or not destination.startswith("https://"):
            return _problem(400, "destination must be a valid https URL")
        if request.method == "DELETE":
            with self._lock:
                found = self.webhooks.pop(destination, None)
            return Reply.empty(204) if found else _problem(404, "Webhook not found")
        return self._subscribe(destination, body.get("settings"))

    def _list_webhooks(self, wanted: str | None) -> Reply:
        with self._lock:
            items = [
                hook.as_api(self.account_id)
                for hook in self.webhooks.values()
                if wanted is None or hook.destination == wanted
            ]
        if not items:
            return Reply.empty(204)
        return Reply.json(
            {"_total_items": len(items), "_embedded": {"webhooks": items}},
            content_type=HAL_JSON,
        )

    def _subscribe(self, destination: str, settings: Any) -> Reply:
        if not isinstance(settings, list) or not settings:
            return _problem(400, "settings must list at least one action")
        with self._lock:
            existing = self.webhooks.get(destination)
            if existing is not None and not self.post_reenables_webhook:
                return _problem(400, "Webhook with this destination already exists")
            hook = existing or FakeWebhook(next(self._webhook_ids), destination, [])
            hook.settings, hook.disabled = [str(s) for s in settings], False
            self.webhooks[destination] = hook
            return Reply.json(hook.as_api(self.account_id), content_type=HAL_JSON)

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


def _problem(status: int, detail: str) -> Reply:
    return Reply.json(
        {
            "title": detail,
            "type": f"https://httpstatus.es/{status}",
            "status": status,
            "detail": detail,
        },
        status,
        PROBLEM_JSON,
    )


def _not_found(detail: str) -> Reply:
    return Reply.json(
        {"title": "Not Found", "type": "https://httpstatus.es/404", "status": 404,
         "detail": detail},
        404,
        PROBLEM_JSON,
    )  # fmt: skip


def _values(request: FakeRequest, name: str) -> set[str]:
    """`name=1`, `name[]=1` and `name[0]=1` forms of a list filter, as PHP reads them."""
    found: set[str] = set()
    for key, values in request.query.items():
        indexed = key.startswith(f"{name}[") and key[len(name) + 1 : -1].isdigit()
        if key in (name, f"{name}[]") or indexed:
            found.update(values)
    return found


def _stage_pairs(request: FakeRequest) -> set[tuple[int, int]]:
    pairs: dict[str, dict[str, int]] = {}
    for key, values in request.query.items():
        if key.startswith("filter[statuses]["):
            index, _, part = key.removeprefix("filter[statuses][").partition("][")
            pairs.setdefault(index, {})[part.rstrip("]")] = int(values[-1])
    return {(p["pipeline_id"], p["status_id"]) for p in pairs.values() if len(p) == 2}


def _order(request: FakeRequest) -> tuple[str, bool]:
    for field_name in ("updated_at", "created_at", "id"):
        direction = request.arg(f"order[{field_name}]")
        if direction is not None:
            return field_name, direction == "desc"
    return "id", False


def rate_limited(retry_after_s: int | None = None) -> Reply:
    """amoCRM's 429 as the reference has it (§4.1): an HTML page and no Retry-After (none is
    documented). `retry_after_s` adds one, for tests of the reading where amoCRM sends it."""
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else {}
    return Reply.html(RATE_LIMITED_PAGE, 429, headers)


def server_error(status: int = 503) -> Reply:
    return Reply.html(f"<html><body><h1>{status}</h1>nginx</body></html>", status)


def lead_path(lead_id: int) -> str:
    return f"/api/v4/leads/{lead_id}"


def user_body(user_id: int, leads: dict[str, str] | None = None, **rights: Any) -> dict[str, Any]:
    """A `GET /api/v4/users/{id}` body; `leads` replaces the lead rights (A/G/M/D per action)."""
    return {
        "id": user_id,
        "name": "Менеджер",
        "email": "manager@example.test",
        "lang": "ru",
        "rights": {
            "leads": dict(leads or LEAD_RIGHTS_ALL),
            "contacts": dict(LEAD_RIGHTS_ALL),
            "companies": dict(LEAD_RIGHTS_ALL),
            "tasks": {"edit": "A", "delete": "A"},
            "mail_access": False,
            "catalog_access": False,
            "status_rights": [],
            "is_admin": False,
            "is_free": False,
            "is_active": True,
            "group_id": None,
            "role_id": None,
            **rights,
        },
    }


def bad_request(path: str, code: str) -> Reply:
    """amoCRM's 400 with per-item `validation-errors` (reference amocrm.md §4.2)."""
    return Reply.json(
        {
            "title": "Bad Request",
            "type": "https://httpstatus.es/400",
            "status": 400,
            "detail": "Request validation failed",
            "validation-errors": [
                {"request_id": "0", "errors": [{"code": code, "path": path, "detail": code}]}
            ],
        },
        400,
        PROBLEM_JSON,
    )


def update_form(fake: FakeAmoCRM, lead: FakeLead) -> str:
    """The `update_lead` webhook (decoded form lines) about `lead`, v2 field names (§1.3)."""
    lines = [
        f"leads[update][0][id]={lead.id}",
        f"leads[update][0][name]={lead.name}",
        f"leads[update][0][status_id]={lead.status_id}",
        f"leads[update][0][pipeline_id]={lead.pipeline_id}",
        f"leads[update][0][price]={lead.price}",
        f"leads[update][0][last_modified]={lead.updated_at}",
        f"leads[update][0][updated_at]={lead.updated_at}",
    ]
    for k, item in enumerate(lead.custom_fields_values or []):
        lines.append(f"leads[update][0][custom_fields][{k}][id]={item['field_id']}")
        for m, value in enumerate(item.get("values") or []):
            lines.append(
                f"leads[update][0][custom_fields][{k}][values][{m}][value]={value['value']}"
            )
    return "\n".join([*lines, *_account_lines(fake)])


def note_form(fake: FakeAmoCRM, lead: FakeLead, note: dict[str, Any]) -> str:
    """The `note_lead` webhook (decoded form lines) about a new note on `lead` (§1.2)."""
    prefix = "leads[note][0][note]"
    lines = [
        f"{prefix}[id]={note['id']}",
        f"{prefix}[element_id]={lead.id}",
        f"{prefix}[element_type]=2",
        f"{prefix}[note_type]=4",
        f"{prefix}[text]={note['params']['text']}",
        f"{prefix}[date_create]={lead.updated_at}",
    ]
    return "\n".join([*lines, *_account_lines(fake)])


def _account_lines(fake: FakeAmoCRM) -> list[str]:
    return [f"account[subdomain]={fake.subdomain}", f"account[id]={fake.account_id}"]


def _json_body(request: FakeRequest) -> Any:
    try:
        return request.json()
    except ValueError:
        return None
