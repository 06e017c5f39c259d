"""The note left on a lead whose sync failed for good (AMOCRM_FAILURE_NOTE).

`failure_note_text(error, run_id=..., lead_id=...)` turns the `error` of Inngest's
`inngest/function.failed` event into one Russian sentence a manager can forward and an operator
can act on: which system refused, our message (it names the fix), the Inngest run to look at,
and the replay command. Whatever the error holds, the sentence never carries a secret (exact
values and secret-looking patterns are masked), a stack trace (only the first line of the
message is kept) or more than `MAX_DETAIL` characters of it.

The error object is what the failed run reported (`{name, message, stack}`; other SDKs and the
executor itself add `error` or nest a stack in `message`): every field is optional here.
"""

from __future__ import annotations

import builtins
import hashlib
import re
from collections.abc import Iterable
from typing import Any

from prometei.errors import excerpt
from prometei.redaction import redact

MAX_DETAIL = 300
# Our error messages start with the service that failed (prometei.errors.UpstreamError).
SOURCES = {
    "erp": "ERP (Rukovoditel)",
    "amocrm": "amoCRM",
    "kv": "хранилище KV",
    "inngest": "Inngest",
}
_SOURCE_RE = re.compile(r"^(?P<service>[a-z]+):\s+(?P<rest>.+)$", re.DOTALL)
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def failure_note_text(error: Any, *, run_id: Any, lead_id: int, secrets: Iterable[str] = ()) -> str:
    """One sentence about a failed sync of `lead_id` (see the module docstring)."""
    detail = _safe_message(error, secrets)
    name = _text_field(error, "name")
    what = _what(detail, name)
    run = str(run_id) if isinstance(run_id, str) and _RUN_ID_RE.match(run_id) else ""
    where = f"запуск Inngest {run}" if run else "запуск в Inngest"
    return (
        f"Сделка не передана в ERP — {what} ({where}; после исправления повторите: "
        f"python -m prometei replay {int(lead_id)})."
    )


def reason_key(error: Any, secrets: Iterable[str] = ()) -> str:
    """A short digest of what failed (name and safe message, not the run): the same failure
    repeated by another run gives the same key."""
    canonical = f"{_text_field(error, 'name')}\n{_safe_message(error, secrets)}"
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


def _what(detail: str, name: str) -> str:
    if not detail:
        return "причину Inngest не сообщил, она видна в запуске"
    found = _SOURCE_RE.match(detail)
    if found and found["service"] in SOURCES:
        return f"{SOURCES[found['service']]}: {found['rest']}"
    if _is_python_error(name):
        # A bug of ours (KeyError, TypeError...): the message alone means nothing to anyone.
        return f"внутренняя ошибка prometei ({name}: {detail}), сообщите разработчикам"
    return detail


def _safe_message(error: Any, secrets: Iterable[str]) -> str:
    text = _text_field(error, "message") or _text_field(error, "error")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if first.startswith("Traceback") or first.startswith("File "):
        return ""
    cleaned = redact(first, extra=list(secrets))
    return excerpt(cleaned, MAX_DETAIL).rstrip(". ")


def _text_field(error: Any, key: str) -> str:
    value = error.get(key) if isinstance(error, dict) else None
    return value if isinstance(value, str) else ""


def _is_python_error(name: str) -> bool:
    found = getattr(builtins, name, None) if name.isidentifier() else None
    return isinstance(found, type) and issubclass(found, BaseException)
