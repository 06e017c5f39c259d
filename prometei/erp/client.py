"""Rukovoditel REST client (`api/rest.php`): one POST per action, typed errors, an upsert.

Every call POSTs `key`, `username`, `password`, `action` and the action's parameters to
CRM_API_URL and gets back `{"status": "success", "data": ...}`. Everything else is an error,
and Rukovoditel has many ways to say so (its Content-Type is always text/html, so it is never
consulted):

- HTTP 200 + `{"status": "error", ...}`: servers up to 3.4 (string `error_code`s such as
  `login_fail` arrive here);
- HTTP 500 + the same JSON envelope: 3.6 for errors without a code (`API Key mismatch`,
  `field_N not exist in entity M`, `entity N not found`, ...);
- HTTP 500 + empty body: 3.6 with a *string* error code (`login_fail`, `access_denied`,
  `ip_not_allowed`, ...) - PHP 8 throws inside `http_response_code('login_fail')` before the
  JSON is printed, so an empty 500 almost always means credentials or rights;
- HTTP 200 + `<br /><b>Fatal error</b>: ...` HTML: the same thing with `display_errors=On`;
- HTTP 200 + an `<app_db_error>` HTML fragment: a MySQL error, echoed with the failing SQL;
- HTTP 200 + PHP `Deprecated`/`Warning` HTML *followed by* valid JSON (`display_errors=On`,
  first request after a deploy): the JSON is used and the noise logged.

Only network failures, timeouts, 429/502/503/504 and a 5xx that is none of the shapes above
(the web server's own error page: PHP crashed or restarted) are retryable (`UpstreamUnavailable`);
an answer from Rukovoditel itself is permanent until someone fixes the configuration, so the
messages name the variable to check. The key and password never appear in an exception, a log
line or `WriteResult.as_output()`.

Request encoding (env ERP_REQUEST_FORMAT):
- `json` (default): a JSON body. Rukovoditel 3.6+ decodes `php://input` when `$_POST` is empty.
- `form`: PHP bracket form fields (`items[field_1039]=...`, `filters[1041]=...`,
  `update_by_field[id]=...`), which every version reads. Use it for servers older than 3.6:
  they ignore a JSON body and answer "key is required".

Idempotency: `upsert()` looks the record up by the amoCRM lead id (ERP_LEAD_ID_FIELD) before
writing, so an insert that landed but timed out is found and updated on the retry, not
inserted twice.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import requests

from prometei.errors import (
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
    from prometei.config import Settings

log = logging.getLogger(__name__)

SERVICE = "erp"
RequestFormat = Literal["json", "form"]

AUTH_HINT = (
    "check CRM_API_USERNAME and CRM_API_PASSWORD, that the user is active, and that its group "
    "may view, create and update records of the ERP entity (ERP_ENTITY_ID)"
)
# 3.6 string error codes (they reach us inside the envelope only from servers up to 3.4).
_AUTH_CODES = {
    "login_fail": "Rukovoditel refused the username or password",
    "account_not_active": "the Rukovoditel API user is not active",
    "access_denied": "the Rukovoditel API user has no access to this entity or action",
    "ip_not_allowed": "this server's IP address is not in Rukovoditel's API allow-list",
}
# (pattern on error_message, error class, what to fix)
_MESSAGE_RULES: tuple[tuple[re.Pattern[str], type[UpstreamError], str], ...] = (
    (re.compile(r"API Key mismatch", re.I), UpstreamAuthError, "check CRM_API_KEY"),
    (
        re.compile(r"API is not enabled", re.I),
        UpstreamAuthError,
        "enable the REST API in Rukovoditel (Extension -> API settings)",
    ),
    (
        # A server older than 3.6 ignores a JSON body, so not even `key` arrives.
        re.compile(r"^(key|username|password|action) is required", re.I),
        UpstreamRejected,
        "the server did not read the request body; for Rukovoditel older than 3.6 set "
        "ERP_REQUEST_FORMAT=form",
    ),
    (
        re.compile(r"not exist in entity", re.I),
        UpstreamRejected,
        "check ERP_FIELD_MAP and ERP_LEAD_ID_FIELD: every key must be a field of the entity "
        "(field_<id>, ids from Rukovoditel's field settings)",
    ),
    (re.compile(r"entity \d+ not found", re.I), UpstreamRejected, "check ERP_ENTITY_ID"),
    (
        re.compile(r"parent_item_id", re.I),
        UpstreamRejected,
        "ERP_ENTITY_ID is a sub-entity; use a top-level entity",
    ),
)
# MySQL errors worth a retry: connection lost/refused, too many connections, lock timeouts.
_TRANSIENT_DB_CODES = {1040, 1205, 1213, 2002, 2003, 2006, 2013}
_DB_HINTS = {
    1146: "check ERP_ENTITY_ID (no such entity)",
    1054: "check ERP_FIELD_MAP and ERP_LEAD_ID_FIELD (no such field)",
    1364: "the ERP database runs in strict SQL mode: map every field of the entity in "
    "ERP_FIELD_MAP or let Rukovoditel reset sql_mode (DB_FORCE_SQL_MODE)",
    1064: "Rukovoditel does not escape values of unique fields; a quote in one breaks the query",
}
_DB_ERROR_RE = re.compile(r"Database Error:\s*(?:</strong>)?\s*(.*?)\s*</div>", re.I | re.S)
_FATAL_RE = re.compile(r"Fatal error\s*(?:</b>)?\s*:\s*(.*)", re.I)
_PHP_NOTICE_RE = re.compile(r"(Deprecated|Warning|Notice|Strict Standards)\s*(</b>)?\s*:", re.I)
_URL_HINT = "check CRM_API_URL (the full .../api/rest.php address, final scheme and host)"
_TAG_RE = re.compile(r"<[^>]+>")
_FILTER_KEY_RE = re.compile(r"^(\d+|id|parent_item_id|date_added|date_updated)$")
_UPDATE_KEY_RE = re.compile(r"^(id|field_\d+)$")


@dataclass(frozen=True)
class InsertResult:
    """`id` is Rukovoditel's string: "812", "812,813" for several items, or "" when every item
    was skipped because a unique field already holds its value (see `unique_fields_warning`)."""

    id: str
    unique_fields_warning: list[dict[str, str]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [part for part in self.id.split(",") if part]

    @property
    def skipped_as_duplicate(self) -> bool:
        return not self.ids and bool(self.unique_fields_warning)


@dataclass(frozen=True)
class WriteResult:
    """What `upsert()` did; `as_output()` is the plain-JSON step output."""

    action: Literal["inserted", "updated"]
    record_id: str
    entity_id: int
    duplicates: list[str] = field(default_factory=list)

    def as_output(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "record_id": self.record_id,
            "entity_id": self.entity_id,
            "duplicates": list(self.duplicates),
        }


class ERPClient:
    """A Rukovoditel REST API user. One `requests` session, explicit timeouts."""

    def __init__(
        self,
        url: str,
        key: str,
        username: str,
        password: str,
        *,
        request_format: RequestFormat = "json",
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        if request_format not in ("json", "form"):
            raise ValueError("request_format must be 'json' or 'form' (ERP_REQUEST_FORMAT)")
        self.url = url
        self.username = username
        self.request_format: RequestFormat = request_format
        self.timeout = timeout
        self._key = key
        self._password = password
        self._session = session or make_session()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, session: requests.Session | None = None
    ) -> ERPClient:
        settings.require_erp()
        assert settings.crm_api_url and settings.crm_api_key and settings.crm_api_password
        assert settings.crm_api_username
        return cls(
            settings.crm_api_url,
            settings.crm_api_key.get_secret_value(),
            settings.crm_api_username,
            settings.crm_api_password.get_secret_value(),
            request_format=settings.erp_request_format,
            session=session,
        )

    def __repr__(self) -> str:
        # Scheme and host only: user info, a path or a query could carry something private.
        parts = urlsplit(self.url)
        host = parts.hostname or "?"
        if ":" in host:  # IPv6
            host = f"[{host}]"
        origin = f"{parts.scheme}://{host}"
        return (
            f"ERPClient(url={origin!r}, username={self.username!r}, "
            f"request_format={self.request_format!r})"
        )

    # ---- actions ----------------------------------------------------------------------
    def login(self) -> dict[str, Any]:
        """Check the credentials; returns the API user (id, group_id, name...), no secrets."""
        user = self._dict_data("login", self._call("login"))
        return {
            key: value
            for key, value in user.items()
            if "password" not in key.lower() and value not in (self._key, self._password)
        }

    def insert(self, entity_id: int, items: dict[str, str]) -> InsertResult:
        data = self._dict_data("insert", self._call("insert", entity_id=entity_id, items=items))
        warnings = data.get("unique_fields_warning") or []
        if not isinstance(warnings, list):
            raise self._protocol("insert", "unique_fields_warning is not a list")
        return InsertResult(
            id=self._id_string("insert", data),
            unique_fields_warning=[
                {str(k): str(v) for k, v in w.items()} for w in warnings if isinstance(w, dict)
            ],
        )

    def select(
        self,
        entity_id: int,
        *,
        filters: dict[str, str],
        select_fields: list[int],
        limit: int,
    ) -> list[dict[str, str]]:
        """Rows matching every filter. Keys are bare field ids ("1041"), values strings:
        Rukovoditel silently drops any other filter and returns unrelated rows."""
        for key, value in filters.items():
            if not _FILTER_KEY_RE.match(key):
                raise ValueError(f"filter key {key!r} must be a bare numeric field id like '1041'")
            if not isinstance(value, str):
                raise TypeError(f"filter value for {key} must be a string, not {value!r}")
        if limit <= 0:
            raise ValueError("limit must be positive")
        data = self._call(
            "select",
            entity_id=entity_id,
            filters=filters,
            # A comma-separated string: an array makes PHP 8 die with an empty 500.
            select_fields=",".join(str(int(f)) for f in select_fields),
            limit=limit,
        )
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise self._protocol("select", "data is not a list of records")
        return [{str(k): "" if v is None else str(v) for k, v in row.items()} for row in data]

    def update(
        self, entity_id: int, *, by: dict[str, str | int], data: dict[str, str]
    ) -> list[str]:
        """Update the records matching `by` (`{"id": 812}` or `{"field_1041": "..."}`, unlike
        select's bare ids); returns the ids touched, [] when nothing matched."""
        if len(by) != 1 or not _UPDATE_KEY_RE.match(next(iter(by))):
            raise ValueError("update `by` needs exactly one key: 'id' or 'field_<id>'")
        answer = self._dict_data(
            "update", self._call("update", entity_id=entity_id, update_by_field=by, data=data)
        )
        return [part for part in self._id_string("update", answer).split(",") if part]

    def upsert(
        self,
        *,
        entity_id: int,
        items: dict[str, str],
        lookup_field_id: int | None,
        lookup_value: str | None,
    ) -> WriteResult:
        """One record per lookup value: update it when it exists, insert it otherwise.

        Without a lookup field this is a plain insert (a retry after a lost answer may then
        create a second record; set ERP_LEAD_ID_FIELD to avoid that)."""
        if lookup_field_id is None:
            return self._insert_new(entity_id, items)
        if not lookup_value:
            raise ValueError("lookup_value is required when lookup_field_id is set")
        items = {**items, f"field_{lookup_field_id}": lookup_value}
        found = self._lookup(entity_id, lookup_field_id, lookup_value)
        if found:
            return self._update_found(entity_id, items, found, lookup_field_id)
        inserted = self.insert(entity_id, items)
        if inserted.ids:
            return WriteResult("inserted", inserted.ids[0], entity_id)
        if not inserted.skipped_as_duplicate:
            raise self._protocol("insert", "the answer has no record id")
        # The lookup field is unique and someone wrote the record since our lookup.
        found = self._lookup(entity_id, lookup_field_id, lookup_value)
        if not found:
            raise UpstreamRejected(
                SERVICE,
                f"the insert into entity {entity_id} was skipped as a duplicate on unique "
                f"field(s) {_warning_fields(inserted)}, and no record has field "
                f"{lookup_field_id} = {lookup_value!r}: another unique field clashes",
            )
        return self._update_found(entity_id, items, found, lookup_field_id)

    # ---- upsert helpers ---------------------------------------------------------------
    def _insert_new(self, entity_id: int, items: dict[str, str]) -> WriteResult:
        inserted = self.insert(entity_id, items)
        if inserted.ids:
            return WriteResult("inserted", inserted.ids[0], entity_id)
        if inserted.skipped_as_duplicate:
            raise UpstreamRejected(
                SERVICE,
                f"the insert into entity {entity_id} was skipped: unique field(s) "
                f"{_warning_fields(inserted)} already hold these values; set "
                "ERP_LEAD_ID_FIELD so existing records are updated instead",
            )
        raise self._protocol("insert", "the answer has no record id")

    def _lookup(self, entity_id: int, field_id: int, value: str) -> list[str]:
        """Ids (ascending) of the records whose field `field_id` equals `value`."""
        rows = self.select(
            entity_id, filters={str(field_id): value}, select_fields=[field_id], limit=2
        )
        # Never trust the filter: Rukovoditel drops a filter it cannot apply and returns
        # arbitrary rows. A row with another value means the lookup did not happen at all.
        if any(row.get(str(field_id)) != value for row in rows):
            raise UpstreamRejected(
                SERVICE,
                f"the lookup by field {field_id} in entity {entity_id} returned records with "
                "other values: Rukovoditel ignored the filter. ERP_LEAD_ID_FIELD must be the "
                "numeric id of a text (input) field of that entity",
            )
        ids = [row.get("id", "") for row in rows]
        if not all(i.isdigit() for i in ids):
            raise self._protocol("select", "a record has no numeric id")
        return sorted(ids, key=int)

    def _update_found(
        self, entity_id: int, items: dict[str, str], found: list[str], field_id: int
    ) -> WriteResult:
        target, duplicates = found[0], found[1:]
        if duplicates:
            log.warning(
                "ERP entity %s has %d records with field %s = %s; updating %s, "
                "duplicates left as they are: %s",
                entity_id,
                len(found),
                field_id,
                items.get(f"field_{field_id}"),
                target,
                ", ".join(duplicates),
            )
        updated = self.update(entity_id, by={"id": int(target)}, data=items)
        if target not in updated:
            # Deleted between our lookup and the update: the retry's lookup will insert it.
            raise UpstreamError(
                SERVICE,
                f"record {target} of entity {entity_id} vanished before the update; the next "
                "attempt looks the lead up again",
                retryable=True,
            )
        return WriteResult("updated", target, entity_id, duplicates)

    # ---- transport --------------------------------------------------------------------
    def _call(self, action: str, **params: Any) -> Any:
        """POST one action; return the envelope's `data` or raise a typed error."""
        payload = {
            "key": self._key,
            "username": self.username,
            "password": self._password,
            "action": action,
            **params,
        }
        if self.request_format == "form":
            kwargs: dict[str, Any] = {"data": list(_php_form(payload))}
        else:
            kwargs = {
                "data": json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                "headers": {"Content-Type": "application/json; charset=utf-8"},
            }
        response = send(self._session, SERVICE, "POST", self.url, timeout=self.timeout, **kwargs)
        log.debug(
            "erp %s entity=%s: HTTP %s", action, params.get("entity_id"), response.status_code
        )
        return self._decode(action, response)

    def _decode(self, action: str, response: requests.Response) -> Any:
        status = response.status_code
        text = response.content.decode("utf-8", errors="replace").lstrip("\ufeff")
        if status in (429, 502, 503, 504):
            raise self._error(
                UpstreamUnavailable,
                f"the ERP server answered HTTP {status} during {action} (overloaded, restarting "
                f"or down); if it persists, check that Rukovoditel answers at {self._host()}",
                status,
                text,
                retry_after=retry_after_seconds(response),
            )
        if not text.strip():
            raise self._empty_body(action, status)
        envelope = _json_object(text)
        if envelope is None:
            envelope = self._parse_html(action, status, text)
        if envelope.get("status") == "success" and 200 <= status < 300:
            return envelope.get("data")
        if envelope.get("status") == "error":
            raise self._api_error(action, status, envelope, text)
        # JSON, but not Rukovoditel's envelope: most likely a proxy's or a web server's error.
        raise self._unrecognised(
            status, text, f"unexpected answer to {action}: JSON without Rukovoditel's status"
        )

    def _parse_html(self, action: str, status: int, text: str) -> dict[str, Any]:
        """Not JSON: a DB error, a PHP fatal error, or PHP notices printed before the JSON."""
        if "<app_db_error>" in text:
            raise self._db_error(action, status, text)
        if _FATAL_RE.search(text):
            raise self._fatal_error(action, status, text)
        value = self._json_after_php_notices(action, text)
        if value is not None:
            return value
        raise self._unrecognised(status, text, f"the answer to {action} is not Rukovoditel JSON")

    def _unrecognised(self, status: int, text: str, what: str) -> UpstreamError:
        """An answer that is none of Rukovoditel's known shapes (those are handled above).

        With a 5xx it is the web server in front of PHP failing (nginx/Apache's own HTML page,
        a proxy's JSON error): transient, so Inngest retries it. With any other status the
        server is up and answered something that is not the API: CRM_API_URL points elsewhere,
        which no retry can fix.
        """
        if status >= 500:
            return self._error(
                UpstreamUnavailable,
                f"{what} (HTTP {status}): the web server in front of Rukovoditel failed; if it "
                f"persists, check the ERP server's error log at {self._host()}",
                status,
                text,
                retryable=True,
            )
        return self._error(
            UpstreamProtocolError, f"{what} (HTTP {status}); {_URL_HINT}", status, text
        )

    def _host(self) -> str:
        return urlsplit(self.url).hostname or "?"

    def _json_after_php_notices(self, action: str, text: str) -> dict[str, Any] | None:
        """With display_errors=On PHP prints Deprecated/Warning HTML before the JSON (the
        first request after a deploy, or always without OPcache). Skip the noise."""
        start = text.find('{"status"')
        if start <= 0 or not _PHP_NOTICE_RE.search(text[:start]):
            return None
        try:
            value, end = json.JSONDecoder().raw_decode(text, start)
        except ValueError:
            return None
        if text[end:].strip() or not isinstance(value, dict):
            return None
        log.warning(
            "Rukovoditel printed PHP notices before its answer to %s (turn display_errors off): %s",
            action,
            self._scrub(_plain(text[:start]))[:200],
        )
        return value

    # ---- errors -----------------------------------------------------------------------
    def _api_error(
        self, action: str, status: int, envelope: dict[str, Any], text: str
    ) -> UpstreamError:
        code = str(envelope.get("error_code") or "").strip()
        message = str(envelope.get("error_message") or "").strip()
        said = f"{action} failed (HTTP {status}): {message or code or 'no message'}"
        if code in _AUTH_CODES:
            return self._error(
                UpstreamAuthError, f"{_AUTH_CODES[code]} ({code}); {AUTH_HINT}", status, text
            )
        for pattern, error_class, hint in _MESSAGE_RULES:
            if pattern.search(message):
                return self._error(error_class, f"{said}; {hint}", status, text)
        return self._error(UpstreamRejected, said, status, text)

    def _empty_body(self, action: str, status: int) -> UpstreamError:
        if status == 500:
            return self._error(
                UpstreamAuthError,
                f"{action} got HTTP 500 with an empty body, which is how Rukovoditel 3.6 "
                "reports login_fail, account_not_active, access_denied and ip_not_allowed; "
                + AUTH_HINT,
                status,
                "",
            )
        return self._error(
            UpstreamProtocolError,
            f"{action} got HTTP {status} with an empty body{_url_hint(status)}",
            status,
            "",
        )

    def _db_error(self, action: str, status: int, text: str) -> UpstreamError:
        match = _DB_ERROR_RE.search(text)
        # Builds differ in the markup around the MySQL line; fall back to the fragment's text.
        fragment = match.group(1) if match else text[text.find("<app_db_error>") :]
        line = _plain(fragment)[:300] or "unknown database error"
        code_match = re.match(r"(\d+)", line)
        code = int(code_match.group(1)) if code_match else 0
        hint = _DB_HINTS.get(code)
        message = f"database error in Rukovoditel during {action}: {line}"
        return self._error(
            UpstreamProtocolError,
            f"{message}; {hint}" if hint else message,
            status,
            text,
            retryable=code in _TRANSIENT_DB_CODES,
        )

    def _fatal_error(self, action: str, status: int, text: str) -> UpstreamError:
        match = _FATAL_RE.search(_plain(text))
        detail = (match.group(1) if match else "").split(" in /")[0].strip()
        if "http_response_code" in detail:
            # display_errors=On variant of the empty 500: a string error code such as
            # login_fail / access_denied crashed the error reporting itself.
            return self._error(
                UpstreamAuthError,
                f"{action} was refused (PHP fatal error while reporting a login or access "
                f"error); {AUTH_HINT}",
                status,
                text,
            )
        return self._error(
            UpstreamProtocolError,
            f"PHP fatal error in Rukovoditel during {action}: {detail[:200]}",
            status,
            text,
        )

    def _protocol(self, action: str, what: str) -> UpstreamError:
        return self._error(
            UpstreamProtocolError, f"unexpected answer to {action}: {what}", None, ""
        )

    def _error(
        self,
        error_class: type[UpstreamError],
        message: str,
        status: int | None,
        body: str,
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> UpstreamError:
        return error_class(
            SERVICE,
            self._scrub(message),
            status=status,
            # HTML bodies (DB errors, PHP errors, proxy pages) read better without the tags.
            body_excerpt=excerpt(self._scrub(body if body.startswith("{") else _plain(body))),
            retryable=retryable,
            retry_after_seconds=retry_after,
        )

    def _scrub(self, text: str) -> str:
        """Pattern redaction plus our own key and password by exact value (whatever length)."""
        return redact(text, extra=(self._key, self._password))

    @staticmethod
    def _dict_data(action: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise UpstreamProtocolError(
                SERVICE, f"unexpected answer to {action}: data is not an object"
            )
        return data

    def _id_string(self, action: str, data: dict[str, Any]) -> str:
        value = data.get("id")
        # Ids are JSON strings; tolerate a number in case a build ever changes that.
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self._protocol(action, "data.id is missing")
        return str(value).replace(" ", "")


def _php_form(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Flatten to PHP bracket fields: {"items": {"field_1": "x"}} -> ("items[field_1]", "x")."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _php_form(item, f"{prefix}[{key}]" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _php_form(item, f"{prefix}[{index}]")
    elif isinstance(value, bool):
        yield prefix, "1" if value else "0"
    elif value is not None:
        yield prefix, str(value)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _plain(fragment: str) -> str:
    """HTML fragment -> one line of text."""
    return " ".join(html.unescape(_TAG_RE.sub(" ", fragment)).split())


def _url_hint(status: int) -> str:
    return f"; {_URL_HINT}" if 300 <= status < 400 or status == 404 else ""


def _warning_fields(result: InsertResult) -> str:
    return ", ".join(sorted({w.get("id", "?") for w in result.unique_fields_warning}))
