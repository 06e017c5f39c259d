"""amoCRM API v4 client: leads (one, or a filtered page), a contact, a company, the lead
pipelines, the account, a user and a lead custom field; and the write-backs: a note on a lead,
a lead custom field value.

Every request goes through `_call` (reads through its `_get` shorthand), which adds the bearer
token, holds a slot of its budget lane's limiter while the request is out
(`prometei.amocrm.budget`) and maps amoCRM's answers onto our error tree (reference:
amocrm.md §3.4, §4.3):

    200        JSON body (anything else is a protocol error, retryable)
    204, 404   "nothing there": a missing lead, an empty list page (a write answered 204, or
               2xx without a body, was accepted: done, never retried)
    3xx        wrong account host: a config error; redirects are never followed with a token
    401        ask the token source once for another token, retry once, then give up
    402, 403   unpaid / blocked / not allowed: permanent, never retried in a loop
    429        over the rate limit (HTML body, no Retry-After as a rule): the whole process
               pauses (the limiters' shared brake), the request is retried later
    5xx        amoCRM trouble: retry later

The token is sent in a header only and never appears in an error message or a log line.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import requests
from pydantic import ValidationError

from prometei.amocrm.domains import request_origin, split_account_host
from prometei.amocrm.models import LeadSnapshot
from prometei.amocrm.ratelimit import SlidingWindowLimiter
from prometei.errors import (
    ConfigError,
    InputError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
    excerpt,
)
from prometei.http import DEFAULT_TIMEOUT, make_session, retry_after_seconds, send
from prometei.redaction import redact

if TYPE_CHECKING:
    from prometei.amocrm.budget import Lane
    from prometei.config import Settings

log = logging.getLogger(__name__)

SERVICE = "amocrm"
MAX_PAGE_SIZE = 250  # amoCRM v4 list endpoints refuse larger pages
# The limiter of a client built without one (tests, one-off scripts): below amoCRM's 7/s.
DEFAULT_LIMIT = 5
# Sort fields for lists: assumed (Kommo's public leads-api page, not in our reference, which
# documents only `page` and `limit`); prometei.sync.listing detects an answer that ignores them.
ORDER_FIELDS = ("created_at", "updated_at", "id")
# amoCRM documents no Retry-After and its 429 page rarely has one. Repeated 429s get the whole
# account blocked (403 on every call), so back off well past the 1-second window.
RATE_LIMITED_BACKOFF_SECONDS = 10.0
# How long one 429 stops every amoCRM request of the process when amoCRM gives no
# Retry-After: past its 1-second window; the limiters then run at half speed for a minute.
BRAKE_WITHOUT_RETRY_AFTER_S = 2.0
MIN_RETRY_AFTER_SECONDS = 1.0
RECONNECT_HINT = (
    "reconnect the integration via /api/oauth/callback, "
    "or replace AMOCRM_ACCESS_TOKEN with a valid long-lived token"
)


class TokenSource(Protocol):
    """What the client needs from `prometei.tokens` (structural, so any provider fits)."""

    def access_token(self) -> str: ...

    def after_unauthorized(self, rejected: str) -> str | None: ...

    def account_host(self) -> str: ...


@dataclass(frozen=True)
class LeadQuery:
    """What `list_leads` asks amoCRM to filter and sort by.

    Our reference (amocrm.md §3.1) documents only `limit` (up to 250) and `page` for lists.
    Every field here is assumed (public Kommo docs, not in our reference; answers that ignore
    it are detected: `prometei.sync.listing` checks every answer against the query):
    `filter[pipeline_id]`, `filter[statuses]` (pipeline + stage pairs), `filter[updated_at]`
    as a from/to range, `order[<created_at|updated_at|id>]=asc|desc`. Documented nowhere, so
    callers must not rely on them: whether the range bounds are inclusive, the order of leads
    that tie on the sort field, and whether several stage pairs work at once (Kommo's page
    says one stage per pipeline).
    """

    pipeline_id: int | None = None
    status_ids: tuple[int, ...] = ()
    updated_from: int | None = None
    updated_to: int | None = None
    order: tuple[str, str] = ("updated_at", "asc")


@dataclass(frozen=True)
class LeadPage:
    """One page of `GET /api/v4/leads`; `next_page` is None on the last page. `full` is true
    when the page holds as many leads as asked for or says that more follow."""

    leads: list[LeadSnapshot] = field(default_factory=list)
    next_page: int | None = None
    full: bool = False


class AmoCRMClient:
    """A synchronous amoCRM v4 client for one account, with one `requests` session."""

    def __init__(
        self,
        tokens: TokenSource,
        *,
        session: requests.Session | None = None,
        limiter: SlidingWindowLimiter | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        expected_subdomain: str | None = None,
        api_base_url: str | None = None,
    ) -> None:
        self._tokens = tokens
        self._api_base_url = api_base_url
        self._session = session or make_session()
        self._session.headers["Accept"] = "application/hal+json, application/json"
        self._limiter = limiter or SlidingWindowLimiter(DEFAULT_LIMIT)
        self._timeout = timeout
        self._expected_subdomain = expected_subdomain

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        tokens: TokenSource,
        *,
        lane: Lane = "runs",
        limiter: SlidingWindowLimiter | None = None,
    ) -> AmoCRMClient:
        """A client whose requests count against `lane`'s share of the budget (this
        process's limiter of that lane, unless `limiter` is given)."""
        from prometei.amocrm.budget import limiter_for

        return cls(
            tokens,
            limiter=limiter or limiter_for(settings, lane),
            expected_subdomain=settings.require_subdomain(),
            api_base_url=settings.amocrm_api_base_url,
        )

    # ---- public API ---------------------------------------------------------------------
    def get_lead(self, lead_id: int) -> LeadSnapshot | None:
        """The lead with its contacts, or None when amoCRM has no such lead (204 or 404)."""
        payload = self._get(f"/api/v4/leads/{int(lead_id)}", {"with": "contacts"})
        if payload is None:
            return None
        return _snapshot(payload)

    def list_leads(
        self, query: LeadQuery, *, page: int = 1, limit: int = MAX_PAGE_SIZE
    ) -> LeadPage:
        """One page of leads as `query` asks; a 204 is an empty, final page."""
        if page < 1:
            raise InputError(f"page {page} must be 1 or more")
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InputError(f"limit {limit} must be between 1 and {MAX_PAGE_SIZE}")
        params = _lead_filters(query)
        params.update({"page": str(page), "limit": str(limit)})
        payload = self._get("/api/v4/leads", params)
        if payload is None:
            return LeadPage()
        embedded = payload.get("_embedded")
        items = embedded.get("leads") if isinstance(embedded, dict) else None
        if not isinstance(items, list):
            raise _protocol_error("the leads list has no _embedded.leads array")
        leads = [_snapshot(item) for item in items]
        # amoCRM gives no total count; a page has a `next` link exactly when more follow.
        links = payload.get("_links")
        has_next = isinstance(links, dict) and bool(links.get("next"))
        return LeadPage(
            leads=leads,
            next_page=page + 1 if has_next and leads else None,
            full=bool(leads) and (has_next or len(leads) >= limit),
        )

    def get_contact(self, contact_id: int) -> dict[str, Any] | None:
        """`GET /api/v4/contacts/{id}`: the contact's JSON, or None when it is gone."""
        return self._get(f"/api/v4/contacts/{int(contact_id)}", {})

    def get_company(self, company_id: int) -> dict[str, Any] | None:
        """`GET /api/v4/companies/{id}`: the company's JSON, or None when it is gone."""
        return self._get(f"/api/v4/companies/{int(company_id)}", {})

    def pipelines(self) -> list[dict[str, Any]]:
        """`GET /api/v4/leads/pipelines`: every lead pipeline with its statuses embedded."""
        payload = self._get("/api/v4/leads/pipelines", {})
        embedded = payload.get("_embedded") if payload else None
        items = embedded.get("pipelines") if isinstance(embedded, dict) else None
        if not isinstance(items, list):
            raise _protocol_error("the pipelines list has no _embedded.pipelines array")
        return [item for item in items if isinstance(item, dict)]

    def account(self) -> dict[str, Any]:
        """`GET /api/v4/account`: id, subdomain and name of the account the token belongs to."""
        payload = self._get("/api/v4/account", {})
        if payload is None or "id" not in payload:
            raise _protocol_error("the account endpoint returned no account")
        return {key: payload.get(key) for key in ("id", "subdomain", "name")}

    def current_user_id(self) -> int | None:
        """The id of the amoCRM user the token acts as (`current_user_id` of the account)."""
        payload = self._get("/api/v4/account", {})
        value = (payload or {}).get("current_user_id")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def user(self, user_id: int) -> dict[str, Any] | None:
        """`GET /api/v4/users/{id}`: the user (with its `rights`), or None when not there."""
        return self._get(f"/api/v4/users/{int(user_id)}", {})

    def lead_custom_field(self, field_id: int) -> dict[str, Any] | None:
        """`GET /api/v4/leads/custom_fields/{id}`: the field (id, name, type...), or None."""
        return self._get(f"/api/v4/leads/custom_fields/{int(field_id)}", {})

    # ---- writes (reference amocrm.md §3.3; shapes as the official SDK sends them) --------
    def add_lead_note(self, lead_id: int, text: str) -> int | None:
        """Add a plain-text ("common") note to a lead; the new note's id when amoCRM names it.

        Not idempotent: amoCRM has no key to recognise a repeated note, so call this once per
        note and never retry it blindly after an answer that may have been lost."""
        body = [{"entity_id": int(lead_id), "note_type": "common", "params": {"text": text}}]
        payload = self._call("POST", "/api/v4/leads/notes", None, body)
        if payload is None:
            raise UpstreamRejected(SERVICE, f"amoCRM has no lead {int(lead_id)} to add a note to")
        return _first_embedded_id(payload, "notes")

    def set_lead_field(self, lead_id: int, field_id: int, value: str) -> int | None:
        """Put `value` into lead custom field `field_id` (PATCH, other fields untouched); the
        lead's new `updated_at` when amoCRM answers it."""
        body = {"custom_fields_values": [{"field_id": int(field_id), "values": [{"value": value}]}]}
        payload = self._call("PATCH", f"/api/v4/leads/{int(lead_id)}", None, body)
        if payload is None:
            raise UpstreamRejected(SERVICE, f"amoCRM has no lead {int(lead_id)} to update")
        # One lead by id answers {id, updated_at, _links}; the list form answers the same
        # inside _embedded.leads. Accept both, and nothing at all (a 2xx without JSON).
        embedded = payload.get("_embedded")
        items = embedded.get("leads") if isinstance(embedded, dict) else None
        item = items[0] if isinstance(items, list) and items else payload
        stamp = item.get("updated_at") if isinstance(item, dict) else None
        return stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else None

    # ---- transport ----------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any] | None:
        """GET `path` as the account; the JSON object, or None for 204/404. Raises ours."""
        return self._call("GET", path, params)

    def _call(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> dict[str, Any] | None:
        """`method` `path` as the account (a JSON body for writes); the JSON object answered,
        or None for 204/404. Raises ours. Every amoCRM request of this client passes here, so
        the limiter and the one-refresh rule apply to reads and writes alike."""
        url = request_origin(self._host(), self._api_base_url) + path
        used = [self._tokens.access_token()]
        response = self._request(method, url, params or {}, json_body, used[0])
        try:
            if response.status_code == 401:
                # One new token, one retry: a second 401 means the grant itself is dead, and
                # looping on refresh would burn single-use refresh tokens.
                used.append(self._fresh_token(used[0]))
                response = self._request(method, url, params or {}, json_body, used[1])
                if response.status_code == 401:
                    raise _unauthorized()
            return self._interpret(method, path, response)
        except UpstreamError as exc:
            # Error pages sometimes echo the request; make sure no token rides along.
            _scrub_tokens(exc, *used)
            raise

    def _request(
        self, method: str, url: str, params: dict[str, str], json_body: Any, token: str
    ) -> requests.Response:
        extra: dict[str, Any] = {} if json_body is None else {"json": json_body}
        # The slot is held until the answer (or the failure) is in: amoCRM counts the request
        # at an instant we cannot see, somewhere in between (prometei.amocrm.ratelimit).
        with self._limiter.slot():
            response = send(
                self._session,
                SERVICE,
                method,
                url,
                params=params,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._timeout,
                **extra,
            )
        log.debug("amoCRM %s %s -> %s", method, url.split("?", 1)[0], response.status_code)
        return response

    def _fresh_token(self, rejected: str) -> str:
        log.warning("amoCRM refused the access token (401); asking for a fresh one")
        fresh = self._tokens.after_unauthorized(rejected)
        if not fresh or fresh == rejected:
            raise _unauthorized()
        return fresh

    def _interpret(
        self, method: str, path: str, response: requests.Response
    ) -> dict[str, Any] | None:
        status = response.status_code
        if status == 204 and method != "GET":
            # A write amoCRM accepted without an answer body: done, never retried.
            return {}
        if status in (204, 404):
            # 204 is amoCRM's "no data for this request" (also for a missing lead by id);
            # 404 is a missing entity or sub-resource. Both mean "not there", not "retry".
            return None
        if 200 <= status < 300:
            if method != "GET" and not response.content.strip():
                return {}  # as for a 204: accepted (202 may come without a body)
            return _json_object(response)
        if 300 <= status < 400:
            raise _redirected(self._host(), response)
        if status == 401:
            raise _unauthorized()
        if status == 402:
            raise _error(
                UpstreamAuthError,
                "the amoCRM account is not paid (402): renew the subscription; "
                "the API stays closed until then",
                response,
            )
        if status == 403:
            raise _error(
                UpstreamAuthError,
                "amoCRM forbids access (403): the account may be blocked for exceeding the "
                "rate limit (ask amoCRM support to unblock it), this server's IP may be "
                "outside the account's IP whitelist, or the integration lacks rights; "
                "not retrying",
                response,
            )
        if status == 429:
            # One 429 slows every caller of this process, not just this request (which is
            # retried later: Inngest honours the wait, the listings sleep it off).
            self._limiter.brake.engage(_retry_after(response, None) or BRAKE_WITHOUT_RETRY_AFTER_S)
            log.warning("amoCRM answered 429: pausing amoCRM requests of this process")
            raise _rate_limited(response)
        if status >= 500:
            raise _error(
                UpstreamUnavailable,
                f"amoCRM server error ({status}) on {path}: a fault on amoCRM's side (or in "
                "the proxy of AMOCRM_API_BASE_URL, when set); if it persists, check amoCRM's "
                "status",
                response,
                retry_after=_retry_after(response, None),
            )
        raise _error(UpstreamRejected, f"amoCRM refused {method} {path} ({status})", response)

    def _host(self) -> str:
        """The account host, checked: a token only ever goes to `<sub>.<known domain>`."""
        host = self._tokens.account_host().strip().lower()
        parts = split_account_host(host)
        if parts is None:
            raise ConfigError(
                f"amoCRM host {host!r} is not an account host like 'name.amocrm.ru'; "
                "check AMOCRM_SUBDOMAIN and AMOCRM_BASE_DOMAIN"
            )
        if self._expected_subdomain and parts[0] != self._expected_subdomain:
            raise ConfigError(
                f"amoCRM host {host!r} is not the configured account "
                f"{self._expected_subdomain!r} (AMOCRM_SUBDOMAIN)"
            )
        return host


# ---- helpers ----------------------------------------------------------------------------
def _lead_filters(query: LeadQuery) -> dict[str, str]:
    params: dict[str, str] = {}
    if query.status_ids:
        if query.pipeline_id is None:
            raise InputError("status_ids need a pipeline_id: amoCRM filters stages per pipeline")
        # Kommo's bracket syntax (assumed, see LeadQuery): one filter[statuses][i] object per
        # (pipeline, stage) pair.
        for index, status_id in enumerate(query.status_ids):
            params[f"filter[statuses][{index}][pipeline_id]"] = str(int(query.pipeline_id))
            params[f"filter[statuses][{index}][status_id]"] = str(int(status_id))
    elif query.pipeline_id is not None:
        params["filter[pipeline_id]"] = str(int(query.pipeline_id))
    if query.updated_from is not None:
        params["filter[updated_at][from]"] = str(int(query.updated_from))
    if query.updated_to is not None:
        params["filter[updated_at][to]"] = str(int(query.updated_to))
    field_name, direction = query.order
    if field_name not in ORDER_FIELDS or direction not in ("asc", "desc"):
        raise InputError(f"amoCRM sorts lists by {', '.join(ORDER_FIELDS)} (asc or desc)")
    params[f"order[{field_name}]"] = direction
    return params


def _snapshot(payload: Any) -> LeadSnapshot:
    if not isinstance(payload, dict):
        raise _protocol_error("a lead in the answer is not a JSON object")
    try:
        return LeadSnapshot.from_api(payload)
    except (KeyError, TypeError, ValueError, ValidationError):
        raise _protocol_error("a lead in the answer has no usable id") from None


def _first_embedded_id(payload: dict[str, Any], kind: str) -> int | None:
    """The `id` of `_embedded.<kind>[0]` in a write's answer, or None when it has none."""
    embedded = payload.get("_embedded")
    items = embedded.get(kind) if isinstance(embedded, dict) else None
    first = items[0] if isinstance(items, list) and items else None
    value = first.get("id") if isinstance(first, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        # Seen behind proxies and during amoCRM incidents: 200 with an HTML page.
        raise _error(
            UpstreamProtocolError,
            f"amoCRM answered {response.status_code} without JSON "
            f"({response.headers.get('Content-Type', 'no content type')}): an amoCRM incident "
            "page or a proxy in the way; if it persists, check network access to the account "
            "host",
            response,
            retryable=True,
        ) from None
    if not isinstance(payload, dict):
        raise _protocol_error("amoCRM answered JSON that is not an object")
    return payload


def _scrub_tokens(exc: UpstreamError, *tokens: str) -> None:
    """Mask the tokens this call used, in case an error page echoed one back."""
    exc.message = redact(exc.message, extra=tokens)
    exc.body_excerpt = redact(exc.body_excerpt, extra=tokens)
    exc.args = (exc.message,)


def _body_excerpt(response: requests.Response) -> str:
    return redact(excerpt(response.text))


def _detail(response: requests.Response) -> str:
    """`detail`/`title` of an application/problem+json body, if there is one."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    text = str(body.get("detail") or body.get("title") or "")
    # 400s list what was wrong per item (`validation-errors`, reference amocrm.md §4.2).
    problems = [
        f"{error.get('code')} at {error.get('path')}"
        for group in body.get("validation-errors") or []
        if isinstance(group, dict)
        for error in group.get("errors") or []
        if isinstance(error, dict)
    ]
    if problems:
        text = f"{text}: {', '.join(problems[:3])}" if text else ", ".join(problems[:3])
    return redact(excerpt(text, 200))


def _error(
    cls: type[UpstreamAuthError | UpstreamUnavailable | UpstreamRejected | UpstreamProtocolError],
    message: str,
    response: requests.Response,
    *,
    retryable: bool | None = None,
    retry_after: float | None = None,
) -> UpstreamError:
    detail = _detail(response)
    return cls(
        SERVICE,
        f"{message} [{detail}]" if detail else message,
        status=response.status_code,
        body_excerpt=_body_excerpt(response),
        retryable=retryable,
        retry_after_seconds=retry_after,
    )


def _protocol_error(message: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(SERVICE, message, retryable=True)


def _unauthorized() -> UpstreamAuthError:
    return UpstreamAuthError(
        SERVICE, f"amoCRM refused the access token (401): {RECONNECT_HINT}", status=401
    )


def _retry_after(response: requests.Response, default: float | None) -> float | None:
    value = retry_after_seconds(response)
    if value is None:
        return default
    return max(value, MIN_RETRY_AFTER_SECONDS)


def _rate_limited(response: requests.Response) -> UpstreamError:
    wait = _retry_after(response, RATE_LIMITED_BACKOFF_SECONDS)
    return _error(
        UpstreamUnavailable,
        f"amoCRM rate limit hit (429; asked to wait {wait:g}s): something else uses this "
        "integration's 7 requests/s, or the AMOCRM_BUDGET_* shares are set too high. "
        "Repeated 429s get the account blocked",
        response,
        retry_after=wait,
    )


def _redirected(host: str, response: requests.Response) -> ConfigError:
    target = response.headers.get("Location", "")
    target_host = re.sub(r"^https?://([^/?#]*).*$", r"\1", target) if target else "?"
    return ConfigError(
        f"amoCRM redirected the request for {host} to {target_host} "
        f"({response.status_code}): the account host is wrong; check AMOCRM_SUBDOMAIN and "
        "AMOCRM_BASE_DOMAIN (amocrm.ru, amocrm.com or kommo.com). Not following it."
    )
