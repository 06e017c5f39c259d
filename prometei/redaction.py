"""Scrub secrets out of text before it reaches a log line, a page or an error message.

Two layers: the exact values of every configured secret (tokens, passwords, keys, the webhook
secret), and patterns for secrets we never configured but may see (bearer headers, JWTs,
`password=`/`key=` parameters, amoCRM codes and refresh tokens in echoed request bodies).

`redact(text, extra=...)` is the one scrubber for outside text (error bodies, messages); `extra`
takes exact values known only to the caller. `mask_values(text, values)` masks exact values
only, for a command's own output where a pattern would mangle a hint.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

MASK = "[REDACTED]"

_PATTERNS = [
    # Authorization headers and bearer tokens
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    # JWTs (amoCRM access tokens are RS256 JWTs)
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    # key=value pairs in query strings, form bodies and JSON
    re.compile(
        r"(?i)([\"']?\b(?:password|passwd|api_key|key|token|access_token|refresh_token|"
        r"client_secret|code|secret|signature)[\"']?\s*[:=]\s*[\"']?)([^\"'&\s,}]{4,})"
    ),
    # Inngest signing keys
    re.compile(r"signkey-[a-z]+-[A-Za-z0-9]{8,}"),
]

_lock = threading.Lock()
_known: tuple[str, ...] = ()


def register_secrets(values: Iterable[str]) -> None:
    """Add exact secret values to scrub (called once settings are loaded)."""
    global _known
    with _lock:
        merged = set(_known) | {v for v in values if v and len(v) >= 4}
        _known = tuple(_longest_first(merged))


def mask_values(text: str, values: Iterable[str]) -> str:
    """`text` with each of `values` masked by exact value, longest first, whatever its length.

    No patterns: for text that must stay readable as written (a command's own output, where
    `?token=<it>` is a hint, not a secret). Use `redact` for anything that came from outside.
    """
    return _mask(text, _longest_first(values))


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """Return `text` with every known secret and secret-looking pattern masked.

    `extra` adds exact values that are not registered globally (a client's own key and
    password, a request's one-time code); unlike registered ones they are masked whatever
    their length.
    """
    extra_values = [value for value in extra if value]
    text = _mask(text, _longest_first([*_known, *extra_values]) if extra_values else _known)
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        else:
            text = pattern.sub(MASK, text)
    return text


def _mask(text: str, ordered: Iterable[str]) -> str:
    for value in ordered:
        if value in text:
            text = text.replace(value, MASK)
    return text


def _longest_first(values: Iterable[str]) -> list[str]:
    # Longest first so a secret that contains another is masked whole.
    return sorted({value for value in values if value}, key=len, reverse=True)
