"""amoCRM lead -> ERP record through the real executor: the README webhook, both intake paths,
redelivery, and `replay` through the CLI."""

from __future__ import annotations

import pytest

from tests.e2e.harness import LEAD_ID_FIELD, Stack, status_change_form


@pytest.mark.parametrize("path", ["/api/webhook", "/api/inngest"])
def test_readme_webhook_writes_one_record(stack: Stack, lead_id: int, path: str) -> None:
    stack.amo.add_lead(lead_id, name="Order #1042", price=15000)

    answer = stack.webhook(status_change_form(lead_id), path=path)

    assert answer["accepted"] == 1 and answer["ignored"] == 0
    [event_id] = answer["event_ids"]
    [ulid] = answer["inngest_ids"]
    assert event_id.startswith(f"amocrm-lead-{lead_id}-status-")
    # The id an operator searches for is the one Inngest stored with the event.
    assert stack.api.event(ulid)["id"] == event_id
    run = stack.api.wait_for_run(ulid)
    assert run["status"] == "Completed", run
    assert run["output"]["status"] == "synced"
    assert run["output"]["action"] == "inserted"
    [record] = stack.records_of_lead(lead_id)
    assert record["id"] == run["output"]["record_id"]
    assert (record["field_1039"], record["field_1040"]) == ("Order #1042", "15000")
    # Two steps (fetch-lead-data, create-erp-task): steps + 1 calls to /api/inngest.
    assert stack.executor_calls(run["run_id"]) == 3


def test_redelivered_webhook_starts_no_new_run(stack: Stack, lead_id: int) -> None:
    stack.amo.add_lead(lead_id)
    form = status_change_form(lead_id)
    first = stack.webhook(form)
    stack.api.wait_for_run(first["inngest_ids"][0])

    again = stack.webhook(form)
    # A later event for the same lead: concurrency 1 per lead runs it after any run the
    # redelivery could have started, so once it has ended, the redelivery's fate is known.
    [later] = stack.api.send({"name": "amocrm/lead.sync", "data": {"lead_id": lead_id}})
    barrier = stack.api.wait_for_run(later)

    assert again["event_ids"] == first["event_ids"]
    assert again["inngest_ids"] != first["inngest_ids"]
    assert stack.api.event_runs(again["inngest_ids"][0]) == []
    assert barrier["output"]["action"] == "updated"
    assert stack.amo.lead_reads(lead_id) == 2  # the first run and the later sync, no third
    assert len(stack.records_of_lead(lead_id)) == 1


def test_replay_through_the_cli_updates_the_record(stack: Stack, lead_id: int) -> None:
    stack.amo.add_lead(lead_id, name="Before", price=100)
    first = stack.webhook(status_change_form(lead_id))
    stack.api.wait_for_run(first["inngest_ids"][0])
    stack.amo.touch(lead_id, name="After", price=250)

    done = stack.cli("replay", str(lead_id), "--key", "e2e")

    assert done.returncode == 0, done.stderr
    event_id = f"replay-{lead_id}-e2e"
    assert event_id in done.stdout
    [ulid] = stack.api.ulids_of("amocrm/lead.sync", event_id)
    run = stack.api.wait_for_run(ulid)
    assert run["status"] == "Completed", run
    assert run["output"]["action"] == "updated"
    [record] = stack.records_of_lead(lead_id)
    assert (record["field_1039"], record["field_1040"]) == ("After", "250")
    assert record[f"field_{LEAD_ID_FIELD}"] == str(lead_id)
