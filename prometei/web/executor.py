"""`/api/inngest`: what runs before the Inngest SDK sees an executor request.

The SDK (0.5.19) checks the HMAC of `X-Inngest-Signature` but not its age, accepts a header
without `t`, reads, JSON-parses and JCS-canonicalises the whole body before it looks at the
signature, and registers whatever origin an out-of-band sync PUT names in its Host header
(reference inngest.md §2.2, §3.2). In cloud mode `guard_executor_request` therefore refuses,
before the SDK runs:

- before the body is read: a request without a signature header, or whose `t` is missing,
  malformed, or more than `SIGNATURE_MAX_SKEW_S` away from our clock (whichever key signed
  it: the timestamp is part of the signed message, so it cannot be changed without breaking
  the HMAC);
- after the body is read through `prometei.web.bodies` (the size limit below; truncated
  bodies are a 400) but before anything parses it: a request whose `s` is not the HMAC of the
  raw body bytes + `t` under INNGEST_SIGNING_KEY or INNGEST_SIGNING_KEY_FALLBACK. The SDK
  hashes the JCS form of the body; the executor sends JCS bytes and signs exactly those
  (reference §3.2), so for Inngest's requests both hash the same bytes. The SDK's own check
  still runs after ours;
- an out-of-band sync PUT when no serve origin is configured (the SDK would take the Host
  header); unsigned and forged ones never get this far.

Dev mode (INNGEST_DEV) is left alone: the dev server sends unsigned requests.

amoCRM accounts set up for the old TypeScript project post webhooks to this path; those form
POSTs (no `?fnId=`) go to the webhook intake instead, which has its own checks.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Sequence
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
# What the SDK strips from a signing key before using the rest, as text, as the HMAC key.
_SIGNING_KEY_PREFIX_RE = re.compile(r"^signkey-\w+-")


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


def hmac_key(signing_key: str) -> bytes:
    """The HMAC key the SDK derives from a signing key: the `signkey-<env>-` prefix dropped and
    the rest used as UTF-8 text (the hex is not decoded)."""
    return _SIGNING_KEY_PREFIX_RE.sub("", signing_key, count=1).encode()


def signature_mismatch(header: str, body: bytes, signing_keys: Sequence[str]) -> str | None:
    """Why `s` in this (fresh, see `signature_problem`) header does not sign the raw `body`
    under any of `signing_keys`, or None when one of them matches.

    The signed message is the body bytes followed by `t` as the SDK writes it back (`str(int)`).
    """
    values = parse_qs(header)
    signature = values.get("s", [""])[0]
    if not signature:
        return f"{SIGNATURE_HEADER} has no signature (s=); Inngest always sends one"
    message = body + str(int(values["t"][0])).encode()
    for key in signing_keys:
        expected = hmac.new(hmac_key(key), message, hashlib.sha256).hexdigest()
        # Bytes, not str: compare_digest refuses non-ASCII text, and `s` is the caller's.
        if hmac.compare_digest(expected.encode(), signature.encode()):
            return None
    return (
        f"{SIGNATURE_HEADER} does not match the request body: it was not signed with "
        "INNGEST_SIGNING_KEY or INNGEST_SIGNING_KEY_FALLBACK (if Inngest sent it, copy the "
        "signing key from the Inngest dashboard again)"
    )


def configured_signing_keys(settings: Settings) -> list[str]:
    """INNGEST_SIGNING_KEY, then INNGEST_SIGNING_KEY_FALLBACK, as far as they are set."""
    keys = (settings.inngest_signing_key, settings.inngest_signing_key_fallback)
    return [key.get_secret_value() for key in keys if key is not None]


def guard_executor_request(settings: Settings) -> flask.Response | None:
    """The early answer for the current `/api/inngest` request, or None to let the SDK run."""
    request = flask.request
    header = request.headers.get(SIGNATURE_HEADER)
    if not settings.is_dev:
        problem = signature_problem(header, time.time())
        if problem is not None:
            # Inngest Cloud probes each deployment unsigned: expected noise, not an alarm.
            level = logging.WARNING if header else logging.INFO
            log.log(level, "inngest request refused (401): %s", problem)
            return json_error(401, problem)
    try:
        body = read_body(request, MAX_EXECUTOR_BODY, why="Inngest never sends more than 4 MiB")
    except BodyRefused as refusal:
        log.warning("inngest request refused (%d): %s", refusal.status, refusal.message)
        return json_error(refusal.status, refusal.message)
    if not settings.is_dev:
        mismatch = signature_mismatch(header or "", body, configured_signing_keys(settings))
        if mismatch is not None:
            log.warning("inngest request refused (401): %s", mismatch)
            return json_error(401, mismatch)
        if request.method == "PUT" and not _is_in_band_sync(request) and not settings.serve_origin:
            message = (
                "out-of-band sync refused: no serve origin is configured, and the Host header "
                "of a request cannot be trusted. Set INNGEST_SERVE_ORIGIN (e.g. "
                "https://prometei.example.com), or sync from the Inngest dashboard"
            )
            log.warning("inngest sync refused (503): %s", message)
            return json_error(503, message)
    return None


def _is_in_band_sync(request: flask.Request) -> bool:
    # In-band syncs register the URL inside the (signed) body, never the Host header.
    return request.headers.get("X-Inngest-Sync-Kind", "").strip().lower() == "in_band"
