"""Scrub secrets out of text before it reaches a log line, a page or an error message.

Two layers: the exact values of every configured secret (tokens, passwords, keys, the webhook
secret), and patterns for secrets we never configured but may see (bearer headers, JWTs,
`password=`/`key=` parameters, amoCRM codes and refresh tokens in echoed request bodies).
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
        # Longest first so a secret that contains another is masked whole.
        _known = tuple(sorted(merged, key=len, reverse=True))


def redact(text: str) -> str:
    """Return `text` with every known secret and secret-looking pattern masked."""
    for value in _known:
        if value in text:
            text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        else:
            text = pattern.sub(MASK, text)
    return text
