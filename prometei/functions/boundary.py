"""Where our error tree meets Inngest's.

Step bodies raise `PrometeiError`s; `run_step` translates them: a retryable error is left for
Inngest to retry (with `RetryAfterError` when the outside system said how long to wait), every
other one becomes `NonRetriableError`, which fails the run at once with our message (what to
fix). Step outputs must be plain JSON: dicts, lists, strings, numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import inngest

from prometei.errors import PrometeiError

T = TypeVar("T")


def translate(exc: PrometeiError) -> Exception:
    """The exception Inngest should see for one of ours."""
    if not exc.retryable:
        return inngest.NonRetriableError(exc.message)
    retry_after = getattr(exc, "retry_after_seconds", None)
    if retry_after:
        return inngest.RetryAfterError(exc.message, timedelta(seconds=retry_after))
    return exc


def guarded(fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    """Wrap a step body so our errors come out translated."""

    def body() -> T:
        try:
            return fn(*args)
        except PrometeiError as exc:
            translated = translate(exc)
            if translated is exc:
                raise
            raise translated from None

    return body


def run_step(ctx: inngest.ContextSync, step_id: str, fn: Callable[..., T], *args: Any) -> T:
    """`ctx.step.run` with our error translation; use it for every step in this package."""
    return ctx.step.run(step_id, guarded(fn, *args))


def skipped(reason: str, **details: Any) -> dict[str, Any]:
    """The output of a run that had nothing to do (not a failure)."""
    return {"status": "skipped", "reason": reason, **details}
