"""`amocrm-webhook-handler-failure`: the lead function's `on_failure` handler.

With AMOCRM_FAILURE_NOTE on, the Inngest SDK registers it next to `amocrm-webhook-handler`
(wire id `prometei-ingest-amocrm-webhook-handler-failure`, 0 retries, triggered by Inngest's
`inngest/function.failed` event of that function); off, nothing is registered, so a failed run
costs no extra invocation. Inngest sends that event once a run failed for good, whichever
way: a permanent error at once, a transient one when its retries ran out, a bug of ours, or
the executor giving up on our endpoint. Its data carries `error` (`name`, `message`, `stack`,
and `error` = the name, as the dev server sent it; any may be missing), `run_id`,
`function_id`, `result` and the failed run's `event`.

The step `add-failure-note` leaves one note on the lead (`prometei.amocrm.failure_note`: one
sentence, no secret, no stack trace). The same failure of
the same lead is noted once per `FAILURE_NOTE_TTL_S` (state store `SET NX`), so failures that
replays or reconciles repeat do not pile up notes, and a note amoCRM may count as a lead change
can never feed a loop. Runs of events that name no lead (the TypeScript version's
`amocrm/webhook`) are skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import inngest

from prometei.amocrm.failure_note import failure_note_text, reason_key
from prometei.errors import ConfigError, PrometeiError
from prometei.functions.boundary import run_step, skipped
from prometei.logs import log_context
from prometei.services import get_services

FN_ID = "amocrm-webhook-handler-failure"  # what the SDK names the on_failure function
FAILURE_NOTE_TTL_S = 24 * 3600
KEY_PREFIX = "amocrm:failure-note"


def lead_sync_failed(ctx: inngest.ContextSync) -> dict[str, Any]:
    """The on_failure handler (module-level so tests can drive it)."""
    settings = get_services().settings
    data = ctx.event.data
    original = data.get("event")
    lead_id = _lead_id_of(original)
    if not settings.amocrm_failure_note:
        return skipped("AMOCRM_FAILURE_NOTE is off", lead_id=lead_id)
    if lead_id is None:
        name = original.get("name") if isinstance(original, Mapping) else None
        return skipped("the failed run's event names no lead", event=name)
    secrets = settings.secret_values()
    error = data.get("error")
    text = failure_note_text(error, run_id=data.get("run_id"), lead_id=lead_id, secrets=secrets)
    key = f"{KEY_PREFIX}:{lead_id}:{reason_key(error, secrets)}"
    with log_context(lead_id=lead_id, run_id=ctx.run_id, fn_id=FN_ID):
        return run_step(ctx, "add-failure-note", add_failure_note, lead_id, text, key)


def add_failure_note(lead_id: int, text: str, key: str) -> dict[str, Any]:
    """Step `add-failure-note`: claim `key`, add the note, give the claim back if that failed."""
    services = get_services()
    try:
        store = services.state
    except ConfigError:
        store = None  # no state store (Vercel without KV): note every failure
    if store is not None and not store.put_if_absent(key, "1", ttl_s=FAILURE_NOTE_TTL_S):
        return skipped("this failure of the lead is already noted", lead_id=lead_id)
    try:
        note_id = services.amocrm.add_lead_note(lead_id, text)
    except PrometeiError:
        if store is not None:
            with contextlib.suppress(PrometeiError):
                store.delete(key)
        raise
    return {"status": "noted", "lead_id": lead_id, "note_id": note_id, "text": text}


def _lead_id_of(event: Any) -> int | None:
    data = event.get("data") if isinstance(event, Mapping) else None
    raw = data.get("lead_id") if isinstance(data, Mapping) else None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if raw > 0 else None
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip()) or None
    return None
