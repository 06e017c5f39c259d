"""A test double of the Inngest executor that speaks the real wire protocol.

It drives a Flask test client the way Inngest Cloud drives `/api/inngest`: JCS-canonical JSON
bodies signed with HMAC-SHA256 (reference/inngest.md §3.2), memoised step results sent back on
every call, `attempt` counting for retries, StepPlanned targeting. Sequential steps only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jcs

APP_ID = "prometei-ingest"
TEST_SIGNING_KEY = "signkey-test-" + "5d" * 32


def sign(
    body: Any, signing_key: str = TEST_SIGNING_KEY, ts: int | None = None
) -> tuple[bytes, str]:
    key = re.sub(r"^signkey-\w+-", "", signing_key).encode()
    raw = jcs.canonicalize(body)
    t = int(time.time()) if ts is None else ts
    mac = hmac.new(key, raw + str(t).encode(), hashlib.sha256).hexdigest()
    return raw, f"t={t}&s={mac}"


def step_hash(step_id: str) -> str:
    return hashlib.sha1(step_id.encode()).hexdigest()  # noqa: S324 - Inngest's own step id scheme


@dataclass
class Run:
    status: str  # "Completed" | "Failed"
    output: Any
    calls: int
    steps: dict[str, Any] = field(default_factory=dict)  # user step id -> memo
    step_outputs: list[Any] = field(default_factory=list)  # every StepRun/StepError payload
    responses: list[Any] = field(default_factory=list)


def make_event(name: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "data": data,
        "id": event_id or uuid.uuid4().hex,
        "ts": int(time.time() * 1000),
    }


def run_function(
    client: Any,
    fn_id: str,
    event: dict[str, Any],
    *,
    max_attempts: int = 5,
    signing_key: str = TEST_SIGNING_KEY,
    path: str = "/api/inngest",
    max_calls: int = 200,
    run_id: str | None = None,
    memos: dict[str, Any] | None = None,
    attempt: int = 0,
) -> Run:
    """Play the executor until the run completes or fails; return what it saw.

    `memos` (user step id -> memo, e.g. `{"parse-webhook": {"data": {...}}}`) and `attempt`
    start the run mid-way, as a run another deployment began and Inngest resumes.
    """
    steps: dict[str, Any] = {step_hash(k): v for k, v in (memos or {}).items()}
    by_user_id: dict[str, Any] = {}
    stack: list[str] = list(steps)
    calls, target = 0, "step"
    seen: list[Any] = []
    responses: list[Any] = []
    run_id = run_id or "01TEST" + uuid.uuid4().hex[:20].upper()
    while calls < max_calls:
        body = {
            "event": event,
            "events": [event],
            "steps": steps,
            "use_api": False,
            "version": 1,
            "ctx": {
                "run_id": run_id,
                "attempt": attempt,
                "max_attempts": max_attempts,
                "disable_immediate_execution": False,
                "use_api": False,
                "fn_id": f"{APP_ID}-{fn_id}",
                "stack": {"stack": stack, "current": len(stack)},
            },
        }
        raw, sig = sign(body, signing_key)
        response = client.post(
            f"{path}?fnId={APP_ID}-{fn_id}&stepId={target}",
            data=raw,
            headers={"X-Inngest-Signature": sig, "Content-Type": "application/json"},
        )
        calls += 1
        target = "step"
        payload = response.get_json(silent=True)
        responses.append((response.status_code, payload))
        if response.status_code == 200:
            return Run("Completed", payload, calls, by_user_id, seen, responses)
        if response.status_code == 500:
            if response.headers.get("x-inngest-no-retry") == "true" or attempt + 1 >= max_attempts:
                return Run("Failed", payload, calls, by_user_id, seen, responses)
            attempt += 1
            continue
        if response.status_code != 206:
            raise AssertionError(f"unexpected status {response.status_code}: {response.data!r}")
        op = payload[0]
        seen.append(op)
        name = op["op"]
        user_id = (op.get("userland") or {}).get("id", op.get("name"))
        if name == "StepRun":
            steps[op["id"]] = {"data": op.get("data")}
            by_user_id[user_id] = op.get("data")
            stack.append(op["id"])
            attempt = 0
        elif name == "StepPlanned":
            target = op["id"]
        elif name == "Sleep":
            steps[op["id"]] = None
            stack.append(op["id"])
        elif name == "StepError":
            attempt += 1
        elif name == "StepFailed":
            steps[op["id"]] = {"error": op["error"]}
            by_user_id[user_id] = {"error": op["error"]}
            stack.append(op["id"])
            attempt = 0
        else:
            raise AssertionError(f"driver does not support op {name}")
    raise AssertionError(f"run did not finish within {max_calls} calls")
