"""The switch-over from the TypeScript version, through the real executor.

- Old `amocrm/webhook` events in both shapes (the old intake's `{originalData, parsedData, ...}`
  and an Inngest-hosted webhook's `{"data": {"<key>": ["<value>"]}}`), and the intake, for one
  webhook: one handler run, one ERP record, every path naming the intake's event id.
- A malformed old event: the run fails at once, naming what is missing.
- Runs the old step layout started, resumed by our code: `PreviousVersion` serves the old
  functions (same app id, function ids, step ids and outputs as the TypeScript version; played
  by the Python SDK, which names steps the same way) behind the harness's recording proxy; a run
  is held where the switch is to happen (a step that keeps failing), then the proxy is pointed
  back at our app and the app re-synced, as a deploy does. Each run ends in one record or the
  documented failure, never two records, and the old token stays in the old step only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import flask
import inngest
import inngest.flask
import pytest
import requests

from tests.e2e.harness import (
    ACCOUNT_ID,
    ERP_ENTITY,
    ERP_KEY,
    ERP_PASSWORD,
    LEAD_ID_FIELD,
    SUBDOMAIN,
    Stack,
    status_change_form,
    wait_until,
)
from tests.fakes.rukovoditel_http import GATEWAY_TIMEOUT
from tests.support.legacy import hosted_webhook_data, old_intake_data
from tests.support.loopback import LoopbackServer

LEGACY_EVENT = "amocrm/webhook"
STATUS_EVENT = "amocrm/lead.status"
OLD_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.old-version-access-token-SECRET"


def run_of(stack: Stack, ulid: str) -> dict[str, Any]:
    run = stack.api.wait_for_run(ulid)
    assert run["status"] in ("Completed", "Failed"), run
    return run


def handler_runs(stack: Stack, event_id: str, *, events: int) -> list[dict[str, Any]]:
    """The runs started by the `events` stored lead events whose own id is `event_id`."""

    def stored() -> list[str] | None:
        found = stack.api.ulids_of(STATUS_EVENT, event_id)
        return found if len(found) >= events else None

    ulids = wait_until(stored, timeout=20, what=f"{events} {STATUS_EVENT} events id {event_id}")
    assert len(ulids) == events
    return [run for ulid in ulids for run in stack.api.event_runs(ulid)]


def first_run(stack: Stack, event_id: str) -> dict[str, Any]:
    """The ended run of the first lead event with id `event_id` (the one that was not dropped)."""
    [ulid] = stack.api.ulids_of(STATUS_EVENT, event_id)
    run = run_of(stack, ulid)
    assert run["status"] == "Completed", run
    return run


def sync_barrier(stack: Stack, lead_id: int) -> dict[str, Any]:
    """A later sync of the lead, sent once the lead's record exists: when it has ended, any run
    an event sent before it could have started has been scheduled (the check that repeated
    event ids started none)."""
    [ulid] = stack.api.send({"name": "amocrm/lead.sync", "data": {"lead_id": lead_id}})
    run = run_of(stack, ulid)
    assert run["output"]["action"] == "updated", run
    return run


# ---- old events -----------------------------------------------------------------------------------


def test_both_old_event_shapes_and_the_intake_sync_the_lead_once(
    stack: Stack, lead_id: int
) -> None:
    stack.amo.add_lead(lead_id, name="Legacy lead", price=900)
    form = status_change_form(lead_id)

    def legacy(data: dict[str, Any]) -> dict[str, Any]:
        [ulid] = stack.api.send({"name": LEGACY_EVENT, "data": data})
        run = run_of(stack, ulid)
        assert run["status"] == "Completed", run
        return dict(run["output"])

    from_old_intake = legacy(old_intake_data(form))
    [event_id] = from_old_intake["event_ids"]
    synced = first_run(stack, event_id)
    from_hosted_webhook = legacy(hosted_webhook_data(form))
    answer = stack.webhook(form)

    assert answer["event_ids"] == [event_id]  # the intake's id, on every path
    for output in (from_old_intake, from_hosted_webhook):
        assert (output["status"], output["event_ids"], output["lead_ids"]) == (
            "dispatched",
            [event_id],
            [lead_id],
        )
    assert synced["output"]["status"] == "synced"
    sync_barrier(stack, lead_id)
    [run] = handler_runs(stack, event_id, events=3)  # three events, one run
    assert run["run_id"] == synced["run_id"]
    [record] = stack.records_of_lead(lead_id)
    assert (record["field_1039"], record["field_1040"]) == ("Legacy lead", "900")
    assert stack.amo.lead_reads(lead_id) == 2  # the one handler run and the barrier


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        pytest.param(
            {"parsedData": {"leadId": 25399013, "statusId": 142}, "receivedAt": "2025-09-01"},
            "data.originalData is missing",
            id="old-intake-without-originalData",
        ),
        pytest.param(
            {"data": {"account[id]": [str(ACCOUNT_ID)], "account[subdomain]": [SUBDOMAIN]}},
            "data.data has no lead item: expected leads[<action>][0][id]=<lead id>",
            id="hosted-webhook-without-lead",
        ),
    ],
)
def test_a_malformed_old_event_fails_at_once_naming_what_is_missing(
    stack: Stack, data: dict[str, Any], missing: str
) -> None:
    [ulid] = stack.api.send({"name": LEGACY_EVENT, "data": data})

    run = run_of(stack, ulid)

    assert run["status"] == "Failed", run
    assert run["output"]["name"] == "NonRetriableError"
    assert missing in run["output"]["message"]
    calls = stack.proxy_calls(run["run_id"])
    assert [(call.status, call.attempt) for call in calls] == [(500, 0)]  # no retry
    assert stack.records() == []


# ---- runs of the old step layout, resumed by our code ----------------------------------------------


class PreviousVersion:
    """The TypeScript version's two functions with our ids, served by the Python SDK.

    `hold` is where a run stops making progress, so the switch can happen there: a step that
    fails every attempt ("fetch-lead-data"), every retry of the write after its first attempt
    ("write-retry"), or an error after the last step ("after-write": the moment between the old
    write and the executor's final call). The ERP write is the old one: a JSON insert of name
    and price, no lead id or externalId, an error on a non-2xx answer.
    """

    def __init__(self, stack: Stack, hold: str) -> None:
        self.stack = stack
        self.hold = hold
        client = inngest.Inngest(
            app_id="prometei-ingest",
            is_production=False,
            api_base_url=stack.api.url,  # its sync registers with our dev server
            event_api_base_url=stack.api.url,
        )
        lead_fn = client.create_function(
            fn_id="amocrm-webhook-handler",
            trigger=inngest.TriggerEvent(event=LEGACY_EVENT),
            retries=20,  # held runs keep failing until the switch
        )(self._lead_handler)
        deal_fn = client.create_function(
            fn_id="create-erp-task",
            trigger=inngest.TriggerEvent(event="erp/task.create"),
            retries=20,
        )(self._deal_handler)
        self.app = flask.Flask("previous-version")
        inngest.flask.serve(self.app, client, [lead_fn, deal_fn])

    def _held(self, point: str) -> None:
        if self.hold == point:
            raise RuntimeError(f"held at {point} until the switch")

    def _lead_handler(self, ctx: inngest.ContextSync) -> dict[str, Any]:
        data = ctx.event.data
        parsed = ctx.step.run("parse-webhook", lambda: dict(data["parsedData"]))
        ctx.step.run("get-amocrm-token", lambda: OLD_TOKEN)

        def fetch() -> dict[str, Any]:
            self._held("fetch-lead-data")
            return {"id": parsed["leadId"], "name": "Old lead", "price": 700}

        lead = ctx.step.run("fetch-lead-data", fetch)
        answer = ctx.step.run("create-erp-task", self._write, ctx, lead["name"], lead["price"])
        self._held("after-write")
        return {"success": True, "erpTaskId": answer["data"]["id"]}

    def _deal_handler(self, ctx: inngest.ContextSync) -> dict[str, Any]:
        deal = ctx.event.data
        ctx.step.run("validate-input", lambda: {"validated": True})
        answer = ctx.step.run(
            "create-erp-task", self._write, ctx, deal["dealName"], deal.get("amount")
        )
        self._held("after-write")
        return {"success": True, "erpTaskId": answer["data"]["id"]}

    def _write(self, ctx: inngest.ContextSync, name: str, price: Any) -> Any:
        if ctx.attempt > 0:
            self._held("write-retry")
        return self._insert(name, price)

    def _insert(self, name: str, price: Any) -> Any:
        items = {"field_1039": name, **({"field_1040": price} if price else {})}
        # The old version wrote with the same ERP account (the fake checks credentials).
        body = {"key": ERP_KEY, "username": "api", "password": ERP_PASSWORD, "action": "insert"}
        response = requests.post(
            self.stack.erp_url, json={**body, "entity_id": ERP_ENTITY, "items": items}, timeout=10
        )
        if not response.ok:
            raise RuntimeError(f"ERP API error {response.status_code}: {response.text[:200]}")
        return response.json()


@pytest.fixture(scope="module")
def switch_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: its app is swapped for the previous version and back."""
    with Stack.started(tmp_path_factory.mktemp("e2e-switch")) as started:
        yield started


@pytest.fixture
def switching(switch_stack: Stack) -> Stack:
    switch_stack.reset()
    return switch_stack


@contextlib.contextmanager
def previous_version_until_switch(stack: Stack, hold: str) -> Iterator[None]:
    """Serve the previous version at the app's URL; on leaving, deploy ours in its place."""
    assert stack.proxy is not None and stack.proxy_server is not None
    server = LoopbackServer(PreviousVersion(stack, hold).app, "previous-version").start()
    stack.proxy.target = server.url
    try:
        synced = requests.put(f"{stack.proxy_server.url}/api/inngest", timeout=30)
        assert synced.status_code == 200, synced.text
        wait_until(
            lambda: (
                stack.api.functions().get("amocrm-webhook-handler", {}).get("triggers")
                == [{"event": LEGACY_EVENT}]
            ),
            timeout=30,
            what="the previous version's functions to be registered",
        )
        yield
    finally:
        stack.proxy.target = stack.app_url
        stack.sync()
        server.stop()


def held_run(stack: Stack, ulid: str) -> str:
    """The run id of event `ulid`'s run once it is held (an attempt failed, step or call)."""

    def held() -> str | None:
        runs = stack.api.event_runs(ulid)
        run_id = str(runs[0]["run_id"]) if runs else ""
        calls = stack.proxy_calls(run_id) if run_id else []
        return run_id if any(c.op == "StepError" or c.status == 500 for c in calls) else None

    return wait_until(held, timeout=30, what=f"the previous version's run of {ulid} to be held")


def resumed(stack: Stack, hold: str, event: dict[str, Any]) -> dict[str, Any]:
    """Start `event` under the previous version, switch while it is held, return the run."""
    with previous_version_until_switch(stack, hold):
        [ulid] = stack.api.send(event)
        run_id = held_run(stack, ulid)
    run = run_of(stack, ulid)
    assert run["run_id"] == run_id
    return run


def old_webhook_event(stack: Stack, lead_id: int, **lead: Any) -> dict[str, Any]:
    """The old intake's event for a stage change of lead `lead_id` (added to the fake amoCRM)."""
    stack.amo.add_lead(lead_id, **lead)
    return {"name": LEGACY_EVENT, "data": old_intake_data(status_change_form(lead_id))}


def assert_token_only_in_the_old_step(stack: Stack, run: dict[str, Any]) -> None:
    outputs = stack.api.step_outputs(run["run_id"])
    holding = {name for name, text in outputs if "old-version-access-token" in text}
    assert holding == {"get-amocrm-token"}  # where the old version put it, nowhere of ours
    assert "old-version-access-token" not in str(run["output"])


def test_old_run_held_before_its_write_is_dispatched_into_one_record(
    switching: Stack, lead_id: int
) -> None:
    stack = switching
    event = old_webhook_event(stack, lead_id, name="Lead after the switch", price=1200)

    run = resumed(stack, "fetch-lead-data", event)

    assert run["status"] == "Completed", run
    output = run["output"]
    assert (output["status"], output["previous_version_run"]) == ("dispatched", True)
    [event_id] = output["event_ids"]
    synced = first_run(stack, event_id)
    assert synced["output"]["action"] == "inserted"
    answer = stack.webhook(status_change_form(lead_id))  # amoCRM redelivers to the new URL
    assert answer["event_ids"] == [event_id]
    sync_barrier(stack, lead_id)
    [handler] = handler_runs(stack, event_id, events=2)
    assert handler["run_id"] == synced["run_id"]
    [record] = stack.records_of_lead(lead_id)  # written by our handler, with the lead id
    assert (record["field_1039"], record["field_1040"]) == ("Lead after the switch", "1200")
    assert len(stack.records()) == 1
    assert_token_only_in_the_old_step(stack, run)


def test_old_run_that_had_written_ends_without_a_second_record(
    switching: Stack, lead_id: int
) -> None:
    stack = switching

    run = resumed(stack, "after-write", old_webhook_event(stack, lead_id))

    assert run["status"] == "Completed", run
    [record] = stack.records()  # the old version's, without a lead id
    assert run["output"] == {
        "status": "done_by_previous_version",
        "reason": "the previous version had already written the ERP record",
        "record_id": record["id"],
        "lead_ids": [lead_id],
    }
    assert record.get(f"field_{LEAD_ID_FIELD}", "") == ""
    assert stack.amo.lead_reads(lead_id) == 0  # nothing fetched, nothing dispatched
    assert_token_only_in_the_old_step(stack, run)


def test_old_run_whose_write_was_failing_fails_clearly_with_one_record(
    switching: Stack, lead_id: int
) -> None:
    stack = switching
    # The old insert lands but its answer is a gateway timeout; the retries are held. The ERP
    # is healthy after the switch: a second write would land.
    stack.erp.fail("insert", GATEWAY_TIMEOUT, after_effect=True)

    run = resumed(stack, "write-retry", old_webhook_event(stack, lead_id))

    assert run["status"] == "Failed", run
    message = run["output"]["message"]
    assert "run started by the previous (TypeScript) version" in message
    assert f"check the ERP for lead {lead_id}; if it has no record, run " in message
    assert message.endswith(f"python -m prometei replay {lead_id}")
    assert len(stack.records()) == 1  # the old attempt's, never a second
    assert len(stack.erp.actions("insert")) == 1
    assert stack.amo.lead_reads(lead_id) == 0
    assert_token_only_in_the_old_step(stack, run)


def test_old_deal_run_whose_write_was_failing_fails_clearly_with_one_record(
    switching: Stack,
) -> None:
    stack = switching
    stack.erp.fail("insert", GATEWAY_TIMEOUT, after_effect=True)  # landed, answer lost
    deal = {"dealName": "Old deal at the switch", "amount": 4200}

    run = resumed(stack, "write-retry", {"name": "erp/task.create", "data": deal})

    assert run["status"] == "Failed", run
    message = run["output"]["message"]
    assert "its create-erp-task step had failed just before the switch" in message
    assert message.endswith(
        "python -m prometei deals send --name 'Old deal at the switch' --amount 4200"
    )
    [record] = stack.records()
    assert record["field_1039"] == "Old deal at the switch"
    assert len(stack.erp.actions("insert")) == 1


def test_old_deal_run_that_had_written_ends_without_a_second_record(switching: Stack) -> None:
    stack = switching
    deal = {"dealName": "Old deal written", "amount": 300, "entityId": ERP_ENTITY}

    run = resumed(stack, "after-write", {"name": "erp/task.create", "data": deal})

    assert run["status"] == "Completed", run
    [record] = stack.records()
    assert run["output"]["status"] == "done_by_previous_version"
    assert run["output"]["record_id"] == record["id"]
    assert len(stack.erp.actions("insert")) == 1


def test_the_old_url_left_in_amocrm_is_refused_naming_the_new_one(stack: Stack, lead_id: int):
    stack.amo.add_lead(lead_id)
    answer = stack.webhook(
        status_change_form(lead_id), path="/api/amocrm-webhook", token=False, status=401
    )
    assert "/api/webhook?token=" in answer["error"]
    assert "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL=1" in answer["error"]
    assert stack.amo.lead_reads(lead_id) == 0 and stack.records_of_lead(lead_id) == []


def test_the_old_url_with_the_opt_in_syncs_one_record_with_the_intakes_ids(make_stack, lead_id):
    """Done-when of the switch-over: amoCRM still posting to the old URL (without and with
    ?token=) and the new one for the same change gives one run and one record."""
    stack = make_stack(AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="1")
    stack.amo.add_lead(lead_id, name="Order #1042", price=15000)
    form = status_change_form(lead_id)

    tokenless = stack.webhook(form, path="/api/amocrm-webhook", token=False)
    with_token = stack.webhook(form, path="/api/amocrm-webhook")
    new_url = stack.webhook(form)

    assert tokenless["event_ids"] == with_token["event_ids"] == new_url["event_ids"]
    ulids = [answer["inngest_ids"][0] for answer in (tokenless, with_token, new_url)]
    # The three arrive within milliseconds: which one the dev server takes first (and which
    # two it drops as repeats of the same event id) is its choice, so look at all three.
    [starter] = wait_until(
        lambda: [ulid for ulid in ulids if stack.api.event_runs(ulid)],
        timeout=60,
        what=f"a run of one of the events {ulids}",
    )
    run = stack.api.wait_for_run(starter)
    assert run["status"] == "Completed" and run["output"]["action"] == "inserted", run
    # A later event of the lead runs after anything the repeats could have started.
    [later] = stack.api.send({"name": "amocrm/lead.sync", "data": {"lead_id": lead_id}})
    assert stack.api.wait_for_run(later)["output"]["action"] == "updated"
    assert sum(len(stack.api.event_runs(ulid)) for ulid in ulids) == 1
    [record] = stack.records_of_lead(lead_id)
    assert record["id"] == run["output"]["record_id"]
