"""create-erp-task over the signed executor protocol (and its pure branches with `mocked`).

Rukovoditel is the stateful `responses` fake (tests.fakes.rukovoditel): records are counted,
not assumed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import inngest
import pytest
import requests
from inngest.experimental import mocked

from tests.conftest import TEST_SECRETS
from tests.support.executor import make_event, run_function, sign

FN = "create-erp-task"
HTML = {"Content-Type": "text/html; charset=UTF-8"}
EN = "\u2013"


def deal_event(data: dict[str, Any], name: str = "crm/create-deal") -> dict[str, Any]:
    return make_event(name, data)


def assert_no_secrets(run, caplog) -> None:
    dumped = json.dumps([run.output, run.step_outputs, run.responses], default=str)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for name, secret in TEST_SECRETS.items():
        assert secret not in dumped, f"{name} leaked into a step output"
        assert secret not in logs, f"{name} leaked into a log line"


@pytest.mark.parametrize(
    ("event_name", "steps"),
    [
        ("crm/create-deal", ["write-erp-record"]),
        # The TypeScript version's shape on its event: first a look for an old run's memo
        # (tests/test_legacy_deal_runs.py).
        ("erp/task.create", ["validate-input", "write-erp-record"]),
    ],
)
def test_deal_event_writes_one_record(app_client, erp, event_name, steps, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    event = deal_event({"dealName": "  Order #1042 ", "amount": "15000.50"}, event_name)
    run = run_function(app_client, FN, event)

    assert run.status == "Completed", run.output
    assert run.calls == len(steps) + 1  # one call per step + the final call
    assert [op["userland"]["id"] for op in run.step_outputs] == steps
    (insert,) = erp.actions("insert")
    assert insert["entity_id"] == 70  # ERP_ENTITY_ID default
    assert insert["items"] == {"field_1039": "Order #1042", "field_1040": "15000.5"}
    assert run.output == {
        "status": "done",
        "dealName": "Order #1042",
        "action": "inserted",
        "record_id": erp.rows[70][0]["id"],
        "entity_id": 70,
        "duplicates": [],
        # derived from the event id when the sender gave none (see the next test)
        "externalId": f"{event['id']}-0",
    }
    assert_no_secrets(run, caplog)


def test_entity_id_extra_fields_and_zero_amount(app_client, erp) -> None:
    run = run_function(
        app_client,
        FN,
        deal_event({"dealName": "A", "amount": 0, "entityId": 25, "fields": {"field_216": "68"}}),
    )
    assert run.status == "Completed", run.output
    (insert,) = erp.actions("insert")
    assert insert["entity_id"] == 25
    # entity 25's heading field takes the name: field_1039 belongs to ERP_ENTITY_ID (70)
    assert insert["items"] == {"field_213": "A", "field_216": "68"}  # amount 0 left out
    assert [c["entity_id"] for c in erp.actions("get_entity_fields")] == [25]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        # field_1039 is ERP_ENTITY_ID's name field; entity 25 has no such field
        ({"fields": {"field_1039": "x"}}, ["fields.field_1039", "not a field of entity 25"]),
        ({"amount": 15000}, ["amount: entity 25 is not ERP_ENTITY_ID", "fields"]),
        ({"fields": {"field_216": "Won"}}, ["fields.field_216", "'Won' is not a choice"]),
        ({"fields": {"field_213": "x"}}, ["fields.field_213: is set from dealName"]),
    ],
    ids=["field_of_another_entity", "amount_without_field", "bad_choice", "name_twice"],
)
def test_a_deal_for_another_entity_is_checked_against_that_entity(
    app_client, erp, data, words
) -> None:
    run = run_function(app_client, FN, deal_event({"dealName": "A", "entityId": 25, **data}))
    assert run.status == "Failed" and run.calls == 1  # permanent: no retry
    for word in words:
        assert word in run.output["message"]
    assert erp.actions("insert") == [] and erp.actions("update") == []


def test_a_deal_for_an_entity_that_does_not_exist_fails_naming_it(app_client, erp) -> None:
    run = run_function(app_client, FN, deal_event({"dealName": "A", "entityId": 9999}))
    assert run.status == "Failed"
    assert "Entity #9999 does not exist" in run.output["message"]
    assert erp.actions("insert") == []


def test_a_resent_deal_updates_its_record_without_a_lookup_field(app_client, erp) -> None:
    # No ERP_LEAD_ID_FIELD: the state store remembers externalId -> record id.
    first = run_function(app_client, FN, deal_event({"dealName": "A", "externalId": "shop-9"}))
    again = run_function(app_client, FN, deal_event({"dealName": "A2", "externalId": "shop-9"}))
    assert (first.output["action"], again.output["action"]) == ("inserted", "updated")
    assert [row["field_1039"] for row in erp.rows[70]] == ["A2"]


def test_invalid_data_fails_at_once_listing_every_problem(app_client, erp) -> None:
    run = run_function(
        app_client,
        FN,
        deal_event({"dealName": "   ", "amount": "-3", "entityId": 0, "colour": "red"}),
    )

    assert run.status == "Failed"
    assert run.calls == 1  # no retry: the executor got x-inngest-no-retry
    status, body = run.responses[-1]
    assert status == 500
    assert body["name"] == "NonRetriableError"
    message = body["message"]
    assert f"dealName: must be 1{EN}255 characters after trimming" in message
    assert "amount: must not be negative" in message
    assert "entityId: must be a positive integer" in message
    assert "colour: unknown key" in message
    assert erp.calls == []


def test_transient_erp_errors_are_retried_without_duplicates(app_client, erp) -> None:
    erp.fail_next("insert", (503, HTML, "<html>Service Unavailable</html>"), times=2)

    run = run_function(app_client, FN, deal_event({"dealName": "A"}))

    assert run.status == "Completed", run.output
    assert [op["op"] for op in run.step_outputs] == ["StepError", "StepError", "StepRun"]
    assert len(erp.rows[70]) == 1


def test_lost_insert_answer_with_external_id_updates_instead_of_inserting_twice(
    app_client, erp, set_env
) -> None:
    set_env(ERP_LEAD_ID_FIELD="1041")
    erp.fail_next("insert", requests.exceptions.ReadTimeout, after_effect=True)

    run = run_function(app_client, FN, deal_event({"dealName": "A", "externalId": "shop-1"}))

    assert run.status == "Completed", run.output
    assert run.output["action"] == "updated"
    assert run.output["externalId"] == "shop-1"
    assert len(erp.rows[70]) == 1
    assert erp.rows[70][0]["field_1041"] == "shop-1"
    # and a second event for the same externalId updates the same record
    again = run_function(app_client, FN, deal_event({"dealName": "A v2", "externalId": "shop-1"}))
    assert again.output["action"] == "updated"
    assert [r["field_1039"] for r in erp.rows[70]] == ["A v2"]


def test_without_external_id_the_event_id_guards_a_lost_insert_answer(
    app_client, erp, set_env
) -> None:
    set_env(ERP_LEAD_ID_FIELD="1041")
    erp.fail_next("insert", requests.exceptions.ReadTimeout, after_effect=True)
    event = deal_event({"dealName": "A"})
    run = run_function(app_client, FN, event)
    assert run.status == "Completed"
    assert len(erp.rows[70]) == 1  # the retry found the landed record and updated it
    assert erp.rows[70][0]["field_1041"] == f"{event['id']}-0"
    assert run.output["action"] == "updated"


def test_permanent_erp_error_fails_without_retry_or_secrets(app_client, erp, caplog) -> None:
    erp.fail_next("insert", (500, HTML, ""))  # Rukovoditel 3.6: bad login / no access

    run = run_function(app_client, FN, deal_event({"dealName": "A"}))

    assert run.status == "Failed"
    assert run.calls == 1
    assert "CRM_API_USERNAME" in run.output["message"]
    assert len(erp.actions("insert")) == 1
    assert_no_secrets(run, caplog)


def test_unsigned_calls_are_refused(app_client, erp) -> None:
    response = app_client.post(
        f"/api/inngest?fnId=prometei-ingest-{FN}&stepId=step",
        json={"event": deal_event({"dealName": "A"})},
    )
    assert response.status_code == 401
    assert erp.calls == []


def _synced_functions(app_client) -> dict[str, dict[str, Any]]:
    body = {"url": "https://prometei.example/api/inngest"}
    raw, signature = sign(body)
    response = app_client.put(
        "/api/inngest",
        data=raw,
        headers={
            "X-Inngest-Signature": signature,
            "X-Inngest-Sync-Kind": "in_band",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200, response.data
    return {f["id"]: f for f in response.get_json()["functions"]}


def test_sync_advertises_triggers_and_the_default_erp_concurrency(app_client) -> None:
    fn = _synced_functions(app_client)[f"prometei-ingest-{FN}"]
    assert [t["event"] for t in fn["triggers"]] == ["crm/create-deal", "erp/task.create"]
    assert fn["concurrency"] == [{"limit": 4}]


def test_erp_concurrency_is_configurable(set_env) -> None:
    set_env(ERP_CONCURRENCY="2")
    from prometei.web.apps import create_inngest_app

    fn = _synced_functions(create_inngest_app().test_client())[f"prometei-ingest-{FN}"]
    assert fn["concurrency"] == [{"limit": 2}]


# ---- pure branch logic with inngest.experimental.mocked -------------------------------------
def _mocked_fn():
    from prometei.functions import create_deal
    from prometei.services import get_services

    return create_deal.build(get_services().settings)


def test_mocked_invalid_payload_never_reaches_the_step() -> None:
    client = mocked.Inngest(app_id="prometei-ingest")
    result = mocked.trigger(
        _mocked_fn(),
        inngest.Event(name="crm/create-deal", data={"amount": "abc"}),
        client,
    )
    assert result.status is mocked.Status.FAILED
    assert isinstance(result.error, inngest.NonRetriableError)
    assert "dealName: is required" in str(result.error)


def test_mocked_output_carries_batch_origin() -> None:
    client = mocked.Inngest(app_id="prometei-ingest")
    written = {"action": "inserted", "record_id": "812", "entity_id": 70, "duplicates": []}
    result = mocked.trigger(
        _mocked_fn(),
        inngest.Event(
            name="crm/create-deal",
            data={"dealName": "A", "externalId": "B1-4", "batchId": "B1", "batchIndex": 4},
        ),
        client,
        step_stubs={"write-erp-record": written},
    )
    assert result.status is mocked.Status.COMPLETED, result.error
    assert result.output == {
        "status": "done",
        "dealName": "A",
        **written,
        "externalId": "B1-4",
        "batchId": "B1",
        "batchIndex": 4,
    }


def test_only_the_senders_external_ids_are_remembered(app_client, erp, project_env) -> None:
    from pathlib import Path

    from prometei.deals import derived_external_id

    batch = "01BATCHEVENT"
    run_function(app_client, FN, deal_event({"dealName": "A"}))  # id derived from the event
    derived = derived_external_id(batch, 1)
    run_function(
        app_client,
        FN,
        deal_event({"dealName": "B", "externalId": derived, "batchId": batch, "batchIndex": 1}),
    )
    run_function(app_client, FN, deal_event({"dealName": "C", "externalId": "shop-3"}))
    state = json.loads((Path(project_env["PROMETEI_STATE_DIR"]) / "state.json").read_text())
    remembered = [key for key in json.dumps(state).split('"') if key.startswith("erp:record")]
    assert remembered == ["erp:record:70:deal:shop-3"]
    assert len(erp.rows[70]) == 3
