"""Runs of the TypeScript version's `create-erp-task`, resumed by this code after the switch.

The old project had a function with our id: trigger `erp/task.create`, data `{dealName,
entityId?, amount?}`, steps `validate-input` (output `{"validated": true}`) then
`create-erp-task` (a plain insert into entity `entityId` or 70; output Rukovoditel's answer).
Inngest resumes its unfinished runs against our `create-erp-task`, whose write step
(`write-erp-record`) has no memo there: writing again would make a second record whenever the
old insert had landed, and old inserts carry no externalId, so no lookup can find them.

Only an `erp/task.create` event with nothing but those three keys can belong to such a run
(`may_be_previous_version_run`). For it, the function first asks for the old `validate-input`
step (`started_by_previous_version`): its memo means an old run; in a new run our marker takes
its place, so these events cost one step more than other deal events. An old run then ends as
(`previous_version_output`, via `previous_runs.previous_write`):

- the old create-erp-task had finished with a Rukovoditel success: `done_by_previous_version`
  with the record id, nothing written again;
- the old write had not started (or Rukovoditel refused it): written as usual, once, marked
  `previous_version_run`;
- the old write had failed, or answered something unknown: a non-retriable failure naming the
  record to look for and the `deals send` command that redoes the write if it is missing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

import inngest

from prometei.deals.events import TASK_CREATE_EVENT
from prometei.functions.previous_runs import claim, is_claim, previous_write

OLD_KEYS = frozenset({"dealName", "entityId", "amount"})
OLD_VALIDATE_STEP = "validate-input"
OLD_WRITE_STEP = "create-erp-task"
OLD_DEFAULT_ENTITY = 70  # the old version's entity when the event named none (hard-coded there)


def may_be_previous_version_run(event: inngest.Event) -> bool:
    """Whether the event could have started a run of the old function (see the docstring)."""
    data = event.data
    return event.name == TASK_CREATE_EVENT and isinstance(data, Mapping) and set(data) <= OLD_KEYS


def started_by_previous_version(ctx: inngest.ContextSync) -> bool:
    """True when the old `validate-input` step has a memo (one step in a new run)."""
    try:
        return not is_claim(claim(ctx, OLD_VALIDATE_STEP))
    except inngest.StepError:
        return True  # the old validation had failed for good: an old run whose write never ran


def previous_version_output(ctx: inngest.ContextSync) -> dict[str, Any] | None:
    """The run's output when the old version wrote the record; None when it wrote nothing and
    the deal is to be written as usual. Raises NonRetriableError when that cannot be known."""
    data = ctx.event.data
    record_id = previous_write(ctx, OLD_WRITE_STEP, may_have_started=True, check=_check(data))
    if record_id is None:
        ctx.logger.info("resuming a deal run of the previous version: its write never ran")
        return None
    return {
        "status": "done_by_previous_version",
        "reason": "the previous version had already written the ERP record",
        "record_id": record_id,
        "entity_id": _old_entity(data),
        "dealName": data.get("dealName"),
    }


def _old_entity(data: Mapping[str, Any]) -> int:
    entity_id = data.get("entityId")  # the old version passed it on as it came, even "25"
    text = str(entity_id) if isinstance(entity_id, int | str) else ""
    if text.isdigit() and int(text) > 0:  # str(True) is "True": booleans fail here
        return int(text)
    return OLD_DEFAULT_ENTITY


def _check(data: Mapping[str, Any]) -> str:
    """Where the old record would be, and the command that writes the deal if it is not."""
    name = shlex.quote(str(data.get("dealName") or "")[:255])
    amount = data.get("amount")
    command = ["python -m prometei deals send", "--name", name]
    described = f"a record named {name}"
    if amount not in (None, "", 0):
        command += ["--amount", shlex.quote(str(amount))]
        described += f" (amount {amount})"
    if "entityId" in data:
        command += ["--entity-id", shlex.quote(str(data["entityId"]))]
    return (
        f"check ERP entity {_old_entity(data)} for {described}; if there is none, send the "
        f"deal again: {' '.join(command)}"
    )
