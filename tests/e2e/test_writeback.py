"""Write-back through the real executor: a note and the record id on the lead, nothing more on
replays and on the lead changes our own writes cause, one failure note for a run that failed for
good (the `on_failure` function the SDK registers next to amocrm-webhook-handler).

The stack here runs with AMOCRM_SYNC_NOTE, AMOCRM_FAILURE_NOTE and AMOCRM_ERP_ID_FIELD on; the
amoCRM fake changes the lead on a PATCH (field value, `updated_at`) and queues the webhooks the
account would send about our writes (`outbox`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import (
    LEAD_ID_FIELD,
    Stack,
    rfc3339_now,
    status_change_form,
    wait_until,
)
from tests.fakes.amocrm import ERP_ID_FIELD
from tests.fakes.rukovoditel_http import error_500_json

PUBLIC_ERP = "https://crm.example.test"
FAILURE_FN = "amocrm-webhook-handler-failure"


@pytest.fixture(scope="module")
def writeback_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "AMOCRM_SYNC_NOTE": "1",
        "AMOCRM_FAILURE_NOTE": "1",
        "AMOCRM_ERP_ID_FIELD": str(ERP_ID_FIELD),
        "CRM_PUBLIC_URL": PUBLIC_ERP,
    }
    with Stack.started(tmp_path_factory.mktemp("e2e-writeback"), env=env) as started:
        yield started


@pytest.fixture
def stack(writeback_stack: Stack) -> Iterator[Stack]:
    writeback_stack.reset()
    yield writeback_stack
    writeback_stack.amo.notes_touch_lead = False


def synced(stack: Stack, lead_id: int, **lead: Any) -> dict[str, Any]:
    """A new lead moved into the trigger stage; its (completed) run."""
    stack.amo.add_lead(lead_id, **{"name": f"Lead {lead_id}", "price": 700, **lead})
    answer = stack.webhook(status_change_form(lead_id))
    run = stack.api.wait_for_run(answer["inngest_ids"][0])
    assert run["status"] == "Completed", run
    return run


def reconcile_sync(stack: Stack, lead_id: int) -> dict[str, Any]:
    """What the reconcile cron sends for a lead updated since its cursor: `amocrm/lead.sync`
    with an id from the lead id and its updated_at; the run it started, once ended."""
    updated_at = stack.amo.leads[lead_id].updated_at
    event = {"name": "amocrm/lead.sync", "data": {"lead_id": lead_id},
             "id": f"sync-{lead_id}-{updated_at}"}  # fmt: skip
    [ulid] = stack.api.send(event)
    run = stack.api.wait_for_run(ulid)
    assert run["status"] == "Completed", run
    return run


def erp_requests(stack: Stack) -> int:
    return len(stack.erp.requests())


def link(record_id: str) -> str:
    return f"{PUBLIC_ERP}/index.php?module=items/info&path=70-{record_id}"


def test_a_sync_leaves_one_note_and_the_record_id_and_replays_add_nothing(
    stack: Stack, lead_id: int
) -> None:
    run = synced(stack, lead_id, name="Order #1042", price=15000)

    record_id = run["output"]["record_id"]
    assert run["output"]["action"] == "inserted"
    assert stack.amo.notes_of(lead_id) == [f"Запись ERP №{record_id} создана: {link(record_id)}"]
    assert stack.amo.leads[lead_id].field_values(ERP_ID_FIELD) == [record_id]
    # fetch-lead-data, create-erp-task, write-erp-id, add-sync-note: steps + 1 calls
    assert stack.executor_calls(run["run_id"]) == 5

    replay = stack.cli("replay", str(lead_id), "--key", "writeback")
    assert replay.returncode == 0, replay.stderr
    [ulid] = stack.api.ulids_of("amocrm/lead.sync", f"replay-{lead_id}-writeback")
    replayed = stack.api.wait_for_run(ulid)
    assert replayed["output"]["action"] == "updated"  # an operator's replay rewrites the ERP

    before = erp_requests(stack)
    echo = reconcile_sync(stack, lead_id)
    assert echo["output"]["action"] == "unchanged"
    assert erp_requests(stack) == before  # no ERP request at all
    assert stack.executor_calls(echo["run_id"]) == 3

    assert len(stack.amo.notes_of(lead_id)) == 1
    assert stack.amo.writes("PATCH", lead_id) == 1
    [record] = stack.records_of_lead(lead_id)
    assert record["id"] == record_id and record[f"field_{LEAD_ID_FIELD}"] == str(lead_id)


def test_the_webhooks_our_own_writes_cause_start_no_sync(stack: Stack, lead_id: int) -> None:
    synced(stack, lead_id)
    forms = stack.amo.take_outbox()
    assert [form.split("[", 2)[1] for form in forms] == ["update]", "note]"]
    reads, writes = stack.amo.lead_reads(lead_id), erp_requests(stack)

    answers = [stack.webhook(form) for form in forms]
    # A later sync of the same lead runs after anything those webhooks could have started
    # (one run per lead at a time), so once it has ended their fate is known.
    barrier = reconcile_sync(stack, lead_id)

    ulids = [ulid for answer in answers for ulid in answer["inngest_ids"]]
    assert len(ulids) == 2  # accepted as amocrm/lead.update and amocrm/lead.note ...
    assert all(stack.api.event_runs(ulid) == [] for ulid in ulids)  # ... and nothing ran
    assert barrier["output"]["action"] == "unchanged"
    assert stack.amo.lead_reads(lead_id) == reads + 1  # the barrier's read only
    assert erp_requests(stack) == writes
    assert len(stack.amo.notes_of(lead_id)) == 1
    assert stack.amo.take_outbox() == []  # and the barrier wrote nothing to amoCRM


def test_a_changed_value_adds_one_updated_note_and_keeps_the_field(
    stack: Stack, lead_id: int
) -> None:
    first = synced(stack, lead_id, name="Before")
    stack.amo.touch(lead_id, name="After")

    changed = reconcile_sync(stack, lead_id)

    record_id = first["output"]["record_id"]
    assert changed["output"]["action"] == "updated"
    assert stack.amo.notes_of(lead_id)[1] == f"Запись ERP №{record_id} обновлена: {link(record_id)}"
    assert stack.amo.writes("PATCH", lead_id) == 1
    assert stack.records_of_lead(lead_id)[0]["field_1039"] == "After"


def test_notes_that_count_as_a_lead_change_start_no_loop(stack: Stack, lead_id: int) -> None:
    stack.amo.notes_touch_lead = True  # the reading where a note moves updated_at
    synced(stack, lead_id)
    moved_to = stack.amo.leads[lead_id].updated_at

    echo = reconcile_sync(stack, lead_id)

    assert echo["output"]["action"] == "unchanged"
    assert stack.amo.leads[lead_id].updated_at == moved_to  # nothing for a next reconcile
    assert len(stack.amo.notes_of(lead_id)) == 1


def test_a_permanent_erp_error_leaves_one_failure_note(stack: Stack, lead_id: int) -> None:
    since = rfc3339_now()
    stack.erp.fail("insert", error_500_json("field_1040 not exist in entity 70"))
    stack.amo.add_lead(lead_id)

    answer = stack.webhook(status_change_form(lead_id))
    run = stack.api.wait_for_run(answer["inngest_ids"][0])

    assert run["status"] == "Failed", run
    [note] = wait_until(lambda: stack.amo.notes_of(lead_id), timeout=60,
                        what="the failure note on the lead")  # fmt: skip
    assert note.startswith("Сделка не передана в ERP — ERP (Rukovoditel): ")
    assert "field_1040 not exist in entity 70" in note
    assert f"запуск Inngest {run['run_id']}" in note
    assert "Traceback" not in note and "\n" not in note
    for secret in (stack.env["CRM_API_KEY"], stack.env["CRM_API_PASSWORD"],
                   stack.env["AMOCRM_ACCESS_TOKEN"]):  # fmt: skip
        assert secret not in note
    [failure] = wait_until(
        lambda: [
            r
            for r in stack.api.function_runs(FAILURE_FN, since)
            if r["status"] in ("COMPLETED", "FAILED")
        ],
        timeout=30,
        what="the failure handler's run to end",
    )
    assert failure["status"] == "COMPLETED", failure
    assert stack.api.ended_run(failure["id"])["output"]["status"] == "noted"
    assert len(stack.amo.notes_of(lead_id)) == 1
    assert stack.records_of_lead(lead_id) == []
