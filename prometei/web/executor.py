"""`/api/inngest`: what runs before the Inngest SDK sees an executor request.

The SDK (0.5.19) checks the HMAC of `X-Inngest-Signature` but not its age, accepts a header
without `t`, reads and JCS-canonicalises the whole body before it looks at the signature, and
registers whatever origin an out-of-band sync PUT names in its Host header (reference
inngest.md §2.2, §3.2). In cloud mode `guard_executor_request` therefore refuses, before the
SDK runs and before the body is read:

- a request without a signature header, or whose `t` is missing, malformed, or more than
  `SIGNATURE_MAX_SKEW_S` away from our clock (whichever key signed it: the timestamp is part
  of the signed message, so it cannot be changed without breaking the HMAC);
- an out-of-band sync PUT when no serve origin is configured (the SDK would take the Host
  header); unsigned ones never get this far;

then reads the body through `prometei.web.bodies` (the size limit below; truncated bodies are
a 400). Dev mode (INNGEST_DEV) is left alone: the dev server sends unsigned requests.

amoCRM accounts set up for the old TypeScript project post webhooks to this path; those form
POSTs (no `?fnId=`) go to the webhook intake instead, which has its own checks.
"""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import parse_qs

import flask

from prometei.config import Settings
from prometei.web.bodies import BodyRefused, read_body
from prometei.web.responses import json_error

log = logging.getLogger(__name__)

INNGEST_PATH = "/api/inngest"
SIGNATURE_HEADER = "X-Inngest-Signature"
# The SDK spec's replay window: a signature older (or further ahead) than this is refused.
SIGNATURE_MAX_SKEW_S = 5 * 60
# The executor never sends more than 4 MiB (Go `consts.MaxSDKRequestBodySize`): a run whose
# memoised state would not fit is sent with `use_api` and the SDK fetches the state itself.
# The slack covers the JCS re-encoding of that 4 MiB request; syncs and inspections are tiny.
MAX_EXECUTOR_BODY = 4 * 1024 * 1024 + 64 * 1024
_TIMESTAMP_RE = re.compile(r"^\d{1,12}$")


def is_amocrm_form_post(request: flask.Request) -> bool:
    """A webhook from an amoCRM account configured for the old project (DESIGN 3.2): the
    executor always sends JSON with `?fnId=`; a form POST without it is amoCRM's."""
    return (
        request.method == "POST"
        and "fnId" not in request.args
        and request.mimetype == "application/x-www-form-urlencoded"
    )


def signature_problem(header: str | None, now: float) -> str | None:
    """Why this `X-Inngest-Signature` value is refused before its HMAC is checked, or None.

    Parsed as the SDK parses it (a query string, first value wins), so both read the same `t`.
    """
    if not header:
        return (
            f"missing {SIGNATURE_HEADER}: in cloud mode this endpoint answers only requests "
            "signed by Inngest"
        )
    values = parse_qs(header).get("t")
    if not values:
        return f"{SIGNATURE_HEADER} has no timestamp (t=); Inngest always sends one"
    raw = values[0]
    if not _TIMESTAMP_RE.match(raw):
        return f"{SIGNATURE_HEADER} timestamp is not a number of seconds"
    skew = now - int(raw)
    if abs(skew) > SIGNATURE_MAX_SKEW_S:
        direction = "old" if skew > 0 else "ahead of this server's clock"
        return (
            f"{SIGNATURE_HEADER} is {int(abs(skew))} s {direction}; signatures are accepted "
            f"for {SIGNATURE_MAX_SKEW_S // 60} minutes (a replayed request, or a wrong clock)"
        )
    return None


def guard_executor_request(settings: Settings) -> flask.Response | None:
    """The early answer for the current `/api/inngest` request, or None to let the SDK run."""
    request = flask.request
    if not settings.is_dev:
        header = request.headers.get(SIGNATURE_HEADER)
        problem = signature_problem(header, time.time())
        if problem is not None:
            # Inngest Cloud probes each deployment unsigned: expected noise, not an alarm.
            level = logging.WARNING if header else logging.INFO
            log.log(level, "inngest request refused (401): %s", problem)
            return json_error(401, problem)
        if request.method == "PUT" and not _is_in_band_sync(request) and not settings.serve_origin:
            message = (
                "out-of-band sync refused: no serve origin is configured, and the Host header "
                "of a request cannot be trusted. Set INNGEST_SERVE_ORIGIN (e.g. "
                "https://prometei.example.com), or sync from the Inngest dashboard"
            )
            log.warning("inngest sync refused (503): %s", message)
            return json_error(503, message)
    try:
        read_body(request, MAX_EXECUTOR_BODY, why="Inngest never sends more than 4 MiB")
    except BodyRefused as refusal:
        log.warning("inngest request refused (%d): %s", refusal.status, refusal.message)
        return json_error(refusal.status, refusal.message)
    return None


def _is_in_band_sync(request: flask.Request) -> bool:
    # In-band syncs register the URL inside the (signed) body, never the Host header.
    return request.headers.get("X-Inngest-Sync-Kind", "").strip().lower() == "in_band"
