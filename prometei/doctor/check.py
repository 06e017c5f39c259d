"""One row of the doctor's table (`Check`) and the few ways every check builds one."""

from __future__ import annotations

from dataclasses import dataclass

# The last resort of every "how to fix it" that has no better answer for an error.
DEBUG_FIX = "see the detail; run with PROMETEI_LOG_LEVEL=DEBUG for the request log"


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table.

    `ok` is False only for a real failure (the command exits 1). `skipped` rows did not run
    (not configured, --offline, or a prerequisite already failed in its own row); `warning`
    rows work but deserve attention.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False
    warning: bool = False

    @property
    def status(self) -> str:
        if not self.ok:
            return "FAIL"
        if self.skipped:
            return "SKIP"
        return "WARN" if self.warning else "OK"


def ok(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, True, detail, fix, warning=True)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


def skip(name: str, detail: str) -> Check:
    return Check(name, True, detail, skipped=True)


def passed(check: Check | None) -> bool:
    """Whether a prerequisite row ran and passed (a warning counts as passing)."""
    return check is not None and check.ok and not check.skipped
