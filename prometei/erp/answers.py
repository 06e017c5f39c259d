"""Reading Rukovoditel's answers: the envelope, and every way it says "error".

`AnswerReader(scrub).decode(action, response)` returns the envelope's `data` or raises one of
our errors. Rukovoditel's Content-Type is always text/html, even for JSON, so it is never
consulted. The shapes (reference: rukovoditel.md §3, rukovoditel-live.md):

- HTTP 200 + `{"status": "error", ...}`: servers up to 3.4 (string `error_code`s such as
  `login_fail` arrive here);
- HTTP 500 + the same JSON envelope: 3.6 for errors without a code (`API Key mismatch`,
  `field_N not exist in entity M`, `entity N not found`, ...);
- HTTP 500 + empty body: 3.6 with a *string* error code (`login_fail`, `access_denied`,
  `ip_not_allowed`, ...) - PHP 8 throws inside `http_response_code('login_fail')` before the
  JSON is printed, so an empty 500 almost always means credentials or rights;
- HTTP 200 + `<br /><b>Fatal error</b>: ... http_response_code() ...`: the same thing with
  `display_errors=On`;
- HTTP 200 + an `<app_db_error>` HTML fragment: a MySQL error, echoed with the failing SQL;
- HTTP 200 + PHP `Deprecated`/`Warning` HTML *followed by* valid JSON (`display_errors=On`,
  first request after a deploy): the JSON is used and the noise logged.

Those known shapes are permanent: Rukovoditel itself answered, and only a configuration change
helps, so the messages name the variable to check. So are redirects and 404/405 (the URL is
wrong) and 401/403/407 from a server in front of PHP (basic auth, a firewall). Network
failures, timeouts, 429/502/503/504 and **every answer we cannot classify** (an HTML error
page from the web server in front of PHP, a PHP crash, a truncated body) are retryable: they
come from the path to Rukovoditel, not from it, and usually pass.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import requests

from prometei.errors import (
    UpstreamAuthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
    excerpt,
)
from prometei.http import retry_after_seconds

log = logging.getLogger(__name__)

SERVICE = "erp"

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
        "(field_<id>; `python -m prometei erp fields` lists them)",
    ),
    (
        re.compile(r"entity \d+ not found|Entity #\d+ does not exist", re.I),
        UpstreamRejected,
        "check ERP_ENTITY_ID (or the deal's entityId)",
    ),
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
    # S2: a dropdown/radio column is INT; only strict mode refuses text (else it stores 0).
    1366: "the ERP database runs in strict SQL mode and a dropdown or radio field got a value "
    "that is not a choice id: send the id (`python -m prometei erp fields` lists them) or let "
    "Rukovoditel reset sql_mode (DB_FORCE_SQL_MODE)",
}
_DB_ERROR_RE = re.compile(r"Database Error:\s*(?:</strong>)?\s*(.*?)\s*</div>", re.I | re.S)
_FATAL_RE = re.compile(r"Fatal error\s*(?:</b>)?\s*:\s*(.*)", re.I)
_PHP_NOTICE_RE = re.compile(r"(Deprecated|Warning|Notice|Strict Standards)\s*(</b>)?\s*:", re.I)
_TAG_RE = re.compile(r"<[^>]+>")
URL_HINT = "check CRM_API_URL (the full .../api/rest.php address, final scheme and host)"
# Answers that mean "this URL is not api/rest.php": retrying cannot help.
_WRONG_URL_STATUSES = frozenset({301, 302, 303, 307, 308, 404, 405})
# A server in front of PHP (basic auth, a firewall) refused us: nor can retrying.
_REFUSED_STATUSES = frozenset({401, 403, 407})


class AnswerReader:
    """Turns one HTTP answer into `data` or a typed, scrubbed error.

    `scrub` masks secrets in anything that goes into an error (the client passes its own key
    and password, whatever their length)."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        self._scrub = scrub

    def decode(self, action: str, response: requests.Response) -> Any:
        status = response.status_code
        text = response.content.decode("utf-8", errors="replace").lstrip("\ufeff")
        if status in (429, 502, 503, 504):
            raise self.error(
                UpstreamUnavailable,
                f"the ERP server answered HTTP {status} during {action} (overloaded, restarting "
                f"or down); if it persists, {URL_HINT}",
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
        raise self._unclassified(action, status, text, "an unexpected answer")

    # ---- shapes -------------------------------------------------------------------------
    def _parse_html(self, action: str, status: int, text: str) -> dict[str, Any]:
        """Not JSON: a DB error, a PHP fatal error, or PHP notices printed before the JSON."""
        if "<app_db_error>" in text:
            raise self._db_error(action, status, text)
        fatal = _FATAL_RE.search(_plain(text))
        if fatal and "http_response_code" in fatal.group(1):
            # display_errors=On variant of the empty 500: a string error code such as
            # login_fail / access_denied crashed the error reporting itself.
            raise self.error(
                UpstreamAuthError,
                f"{action} was refused (PHP fatal error while reporting a login or access "
                f"error); {AUTH_HINT}",
                status,
                text,
            )
        value = self._json_after_php_notices(action, text)
        if value is not None:
            return value
        if fatal:
            detail = fatal.group(1).split(" in /")[0].strip()
            raise self._unclassified(
                action, status, text, f"a PHP fatal error in Rukovoditel ({detail[:200]})"
            )
        raise self._unclassified(action, status, text, "an answer that is not Rukovoditel JSON")

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

    def _unclassified(self, action: str, status: int, text: str, what: str) -> UpstreamError:
        """Not one of Rukovoditel's own answers. A wrong URL or a refusal by a server in front
        of it is permanent; anything else (a proxy's error page, a PHP crash, a cut-off body)
        is worth a retry."""
        said = f"{action} got {what} (HTTP {status})"
        if status in _REFUSED_STATUSES:
            return self.error(
                UpstreamAuthError,
                f"{said}: a server in front of Rukovoditel refused the request; check "
                "CRM_API_URL and any password or IP rule of that web server or proxy",
                status,
                text,
            )
        if status in _WRONG_URL_STATUSES:
            return self.error(UpstreamProtocolError, f"{said}; {URL_HINT}", status, text)
        return self.error(
            UpstreamProtocolError,
            f"{said}, none of Rukovoditel's own error answers (the web server or PHP in front "
            f"of it failed?); if it persists, {URL_HINT}",
            status,
            text,
            retryable=True,
        )

    def _api_error(
        self, action: str, status: int, envelope: dict[str, Any], text: str
    ) -> UpstreamError:
        code = str(envelope.get("error_code") or "").strip()
        message = str(envelope.get("error_message") or "").strip()
        said = f"{action} failed (HTTP {status}): {message or code or 'no message'}"
        if code in _AUTH_CODES:
            return self.error(
                UpstreamAuthError, f"{_AUTH_CODES[code]} ({code}); {AUTH_HINT}", status, text
            )
        for pattern, error_class, hint in _MESSAGE_RULES:
            if pattern.search(message):
                return self.error(error_class, f"{said}; {hint}", status, text)
        return self.error(UpstreamRejected, said, status, text)

    def _empty_body(self, action: str, status: int) -> UpstreamError:
        if status == 500:
            return self.error(
                UpstreamAuthError,
                f"{action} got HTTP 500 with an empty body, which is how Rukovoditel 3.6 "
                "reports login_fail, account_not_active, access_denied and ip_not_allowed; "
                + AUTH_HINT,
                status,
                "",
            )
        return self._unclassified(action, status, "", "an empty body")

    def _db_error(self, action: str, status: int, text: str) -> UpstreamError:
        match = _DB_ERROR_RE.search(text)
        # Builds differ in the markup around the MySQL line; fall back to the fragment's text.
        fragment = match.group(1) if match else text[text.find("<app_db_error>") :]
        line = _plain(fragment)[:300] or "unknown database error"
        code_match = re.match(r"(\d+)", line)
        code = int(code_match.group(1)) if code_match else 0
        hint = _DB_HINTS.get(code)
        message = f"database error in Rukovoditel during {action}: {line}"
        return self.error(
            UpstreamProtocolError,
            f"{message}; {hint}" if hint else message,
            status,
            text,
            retryable=code in _TRANSIENT_DB_CODES,
        )

    # ---- building errors -----------------------------------------------------------------
    def protocol(self, action: str, what: str) -> UpstreamError:
        """A success envelope whose data lacks what the action promises."""
        return self.error(UpstreamProtocolError, f"unexpected answer to {action}: {what}", None, "")

    def error(
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


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _plain(fragment: str) -> str:
    """HTML fragment -> one line of text."""
    return " ".join(html.unescape(_TAG_RE.sub(" ", fragment)).split())
