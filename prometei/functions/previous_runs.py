"""Runs the previous (TypeScript) version started, resumed by this code: reading their steps.

Inngest resumes a run against whatever code serves its function id now. Two old functions had
our ids: `amocrm-webhook-handler` (finished by `legacy_webhook.finish_old_layout_run`) and
`create-erp-task` (`legacy_deal`). Both SDKs name a step by the sha1 of its id, so asking for an
old step id returns the old step's memo; when there is none, `claim` runs our own body instead,
which leaves a marker holding the attempt the executor was at. An attempt above 0 means the old
step at that id had been failing before the switch. Old outputs are only inspected for a
Rukovoditel answer, never repeated into our own steps (the old token step's output holds a token
in clear).

`previous_write` turns the old write step into one of three outcomes: the record id the old
version wrote, "nothing written" (the old write never started, or Rukovoditel refused it), or
a non-retriable failure when a record may exist that nothing can recognise (old inserts carry no
lead id or externalId, so a second attempt would risk a second record).
"""

from __future__ import annotations

from typing import Any

import inngest

from prometei.errors import excerpt
from prometei.redaction import redact

CLAIM_MARK = "prometei_claimed"


def claim(ctx: inngest.ContextSync, step_id: str) -> Any:
    """The old step's output, or our marker when it had not finished before the switch.

    Raises `inngest.StepError` when the old step had failed for good."""
    return ctx.step.run(step_id, _marker, ctx.attempt)


def _marker(attempt: int) -> dict[str, Any]:
    return {CLAIM_MARK: True, "attempt": attempt}


def is_claim(value: Any) -> bool:
    return isinstance(value, dict) and value.get(CLAIM_MARK) is True


def previous_write(
    ctx: inngest.ContextSync, step_id: str, *, may_have_started: bool, check: str
) -> str | None:
    """The record id the old write step `step_id` created, or None when it wrote nothing.

    `may_have_started`: the old run had reached its write (its earlier steps are memoised), so
    a marker with attempt > 0 means a failed write attempt, which may have landed. `check` tells
    the operator what to look at and how to redo the write; it ends the failure's message."""
    try:
        written = claim(ctx, step_id)
    except inngest.StepError as exc:
        raise unsure(f"its {step_id} step failed ({_shown(exc.message)})", check) from None
    if is_claim(written):
        if may_have_started and int(written.get("attempt") or 0) > 0:
            raise unsure(
                f"its {step_id} step had failed just before the switch, and a failed attempt "
                "may still have created the record",
                check,
            )
        return None
    record_id = _record_id(written)
    if record_id is not None:
        return record_id
    if isinstance(written, dict) and written.get("status") == "error":
        return None  # Rukovoditel refused the old insert (HTTP 200, status "error"): no record
    raise unsure(f"its {step_id} step returned something that is not a record id", check)


def unsure(what: str, check: str) -> inngest.NonRetriableError:
    return inngest.NonRetriableError(
        f"run started by the previous (TypeScript) version: {what}. Not writing again, to "
        f"avoid a second record: {check}"
    )


def _record_id(answer: Any) -> str | None:
    """The record id in Rukovoditel's success answer `{"status": "success", "data": {"id"}}`."""
    if not isinstance(answer, dict) or answer.get("status") != "success":
        return None
    data = answer.get("data")
    record_id = data.get("id") if isinstance(data, dict) else None
    text = str(record_id) if isinstance(record_id, str | int) else ""
    return text if text.isdigit() else None


def _shown(message: str) -> str:
    return excerpt(redact(message), limit=200)
