"""Runs of the TypeScript version's `create-erp-task` function, resumed by this code.

The old project had a function with our id `create-erp-task` (event `erp/task.create`, data
`{dealName, entityId?, amount?}`, steps `validate-input` then `create-erp-task`: a plain insert).
Both SDKs name a step by the sha1 of its id, so when Inngest resumes such a run after the switch
it hands our function the old memos; our own write step (`write-erp-record`) has none. The
signed driver starts runs exactly there, with the attempt number the executor would be at. A
failed old attempt may have landed (a gateway timeout after the insert), and old inserts carry
no externalId, so no lookup can find them: every case ends in one record or a clear
non-retriable failure, never two records.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import requests

from tests.conftest import BASE_ENV, ERP_URL, TEST_SECRETS
from tests.support.executor import Run, make_event, run_function

FN = "create-erp-task"
OLD_EVENT = "erp/task.create"
DEAL = {"dealName": "Order #1042", "amount": 15000, "entityId": 70}
VALIDATED = {"validate-input": {"data": {"validated": True}}}
OLD_ANSWER = {"status": "success", "data": {"id": "812"}}
WRITTEN = {"create-erp-task": {"data": OLD_ANSWER}}


def old_version_insert(deal: dict[str, Any]) -> None:
    """What the old create-erp-task step sent: a plain insert, no externalId anywhere."""
    items = {"field_1039": deal["dealName"], "field_1040": deal["amount"]}
    body = {
        "key": TEST_SECRETS["CRM_API_KEY"],
        "username": BASE_ENV["CRM_API_USERNAME"],
        "password": TEST_SECRETS["CRM_API_PASSWORD"],
        "action": "insert",
    }
    answer = requests.post(ERP_URL, json={**body, "entity_id": 70, "items": items}, timeout=5)
    assert answer.json()["status"] == "success"


def resume(
    app_client, memos: dict[str, Any], *, attempt: int = 0, data: dict[str, Any] | None = None
) -> Run:
    event = make_event(OLD_EVENT, DEAL if data is None else data, "01OLDDEALEVENT")
    return run_function(app_client, FN, event, memos=memos, attempt=attempt)


def assert_nothing_secret(run: Run, caplog) -> None:
    dumped = json.dumps([run.output, run.step_outputs, run.responses], default=str)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for secret in TEST_SECRETS.values():
        assert secret not in dumped and secret not in logs


@pytest.fixture(autouse=True)
def _logs(caplog):
    caplog.set_level(logging.DEBUG)


def test_an_old_write_that_landed_but_failed_is_not_written_a_second_time(
    app_client, erp, caplog
) -> None:
    """The bug this file is about: the old insert landed, its answer was a 504, the executor
    retries the step against our code, and our write step has no memo of its own."""
    old_version_insert(DEAL)  # the old attempt 0: the record is there, the step failed

    run = resume(app_client, VALIDATED, attempt=1)

    assert len(erp.rows[70]) == 1, "a second record for the same deal"
    assert run.status == "Failed"
    assert run.output["name"] == "NonRetriableError"
    message = run.output["message"]
    assert "run started by the previous (TypeScript) version" in message
    assert "had failed just before the switch" in message
    assert "check ERP entity 70 for a record named 'Order #1042'" in message
    assert "python -m prometei deals send --name 'Order #1042' --amount 15000" in message
    assert len(erp.actions("insert")) == 1  # the old one; nothing else reached the ERP
    assert erp.actions("update") == []
    assert run.steps == {"create-erp-task": {"prometei_claimed": True, "attempt": 1}}
    assert_nothing_secret(run, caplog)


# ---- the old run had written: nothing is written again ------------------------------------------


@pytest.mark.parametrize(
    "data",
    [DEAL, {"dealName": "Order #1042", "amount": "-5"}],  # the old version validated less
    ids=["deal", "data-we-would-refuse"],
)
def test_an_old_run_that_had_written_ends_without_a_second_record(
    app_client, erp, caplog, data
) -> None:
    # The old write's answer is memoised; the switch came before the executor's final call.
    run = resume(app_client, {**VALIDATED, **WRITTEN}, data=data)

    assert run.status == "Completed", run.output
    assert run.output == {
        "status": "done_by_previous_version",
        "reason": "the previous version had already written the ERP record",
        "record_id": "812",
        "entity_id": 70,
        "dealName": "Order #1042",
    }
    assert run.calls == 1  # both old memos answer: no step of ours, no step state
    assert erp.calls == []
    assert_nothing_secret(run, caplog)


# ---- the old run had not written: written once, as usual ----------------------------------------


def test_an_old_run_before_its_write_writes_the_deal_once(app_client, erp, set_env) -> None:
    set_env(ERP_LEAD_ID_FIELD="1041")

    run = resume(app_client, VALIDATED)

    assert run.status == "Completed", run.output
    assert run.output["status"] == "done"
    assert run.output["action"] == "inserted"
    assert run.output["previous_version_run"] is True
    assert run.output["externalId"] == "01OLDDEALEVENT-0"  # derived from the event id
    # Our marker under the old write's id (the executor was at attempt 0: it never ran), then
    # our own write step; the old validate-input memo is read, not repeated.
    assert list(run.steps) == ["create-erp-task", "write-erp-record"]
    assert run.steps["create-erp-task"] == {"prometei_claimed": True, "attempt": 0}
    [record] = erp.rows[70]
    assert (record["field_1039"], record["field_1040"]) == ("Order #1042", "15000")
    assert record["field_1041"] == "01OLDDEALEVENT-0"


def test_an_old_insert_the_erp_refused_is_written_once(app_client, erp) -> None:
    refused = {"create-erp-task": {"data": {"status": "error", "error_message": "field_1040"}}}

    run = resume(app_client, {**VALIDATED, **refused})

    assert run.status == "Completed", run.output
    assert (run.output["action"], run.output["previous_version_run"]) == ("inserted", True)
    assert len(erp.rows[70]) == 1
    # Derived externalIds are not remembered: an old run leaves nothing in the state store.
    from prometei.erp.records import RecordIdentity
    from prometei.services import get_services

    key = RecordIdentity("deal", "01OLDDEALEVENT-0").memory_key(70)
    assert get_services().state.get(key) is None


def test_an_old_run_whose_validation_had_failed_fails_on_our_validation(app_client, erp) -> None:
    failed = {"validate-input": {"error": {"name": "Error", "message": "dealName is required"}}}

    run = resume(app_client, failed, data={"amount": 5})

    assert run.status == "Failed"
    assert "invalid deal: dealName" in run.output["message"]
    assert erp.calls == []


# ---- the old write may have landed unseen: a clear failure, no second write ---------------------


@pytest.mark.parametrize(
    ("memos", "attempt", "fragment"),
    [
        # A failed attempt that did not land looks the same from here: nothing to tell them apart.
        (VALIDATED, 3, "create-erp-task step had failed just before the switch"),
        (
            {**VALIDATED, "create-erp-task": {"data": None}},
            0,
            "returned something that is not a record id",
        ),
        (
            {
                **VALIDATED,
                "create-erp-task": {
                    "error": {
                        "name": "Error",
                        "message": "ERP API error 504: <html>gateway timeout</html> "
                        f"password={TEST_SECRETS['CRM_API_PASSWORD']}",
                        "stack": "Error: ...",
                    }
                },
            },
            0,
            "create-erp-task step failed (ERP API error 504",
        ),
    ],
    ids=["write-was-failing", "unknown-answer", "write-failed-for-good"],
)
def test_an_old_write_of_unknown_outcome_fails_clearly_without_writing(
    app_client, erp, caplog, memos, attempt, fragment
) -> None:
    run = resume(
        app_client, memos, attempt=attempt, data={**DEAL, "entityId": 25, "amount": "99.5"}
    )

    assert run.status == "Failed"
    assert run.output["name"] == "NonRetriableError"
    message = run.output["message"]
    assert fragment in message
    assert "check ERP entity 25 for a record named 'Order #1042' (amount 99.5)" in message
    assert message.endswith(
        "python -m prometei deals send --name 'Order #1042' --amount 99.5 --entity-id 25"
    )
    assert erp.calls == []
    assert_nothing_secret(run, caplog)


# ---- new runs: the check costs one step where it applies, none elsewhere ------------------------


def test_a_new_run_in_the_old_shape_is_not_mistaken_for_an_old_one(app_client, erp) -> None:
    # Our own first call failed before any step (attempt 1): our marker holds attempt 1, but
    # without the old validate-input memo it is a new run and writes.
    run = resume(app_client, {}, attempt=1)

    assert run.status == "Completed", run.output
    assert "previous_version_run" not in run.output
    assert list(run.steps) == ["validate-input", "write-erp-record"]
    assert run.steps["validate-input"] == {"prometei_claimed": True, "attempt": 1}
    assert len(erp.rows[70]) == 1


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("crm/create-deal", DEAL),  # the old function of this event had another id
        (OLD_EVENT, {**DEAL, "externalId": "shop-1042"}),  # keys the old version never sent
        (OLD_EVENT, {**DEAL, "fields": {"field_1041": "x"}}),
    ],
    ids=["other-event", "externalId", "fields"],
)
def test_events_the_old_function_never_took_skip_the_check(app_client, erp, name, data) -> None:
    run = run_function(app_client, FN, make_event(name, data))

    assert run.status == "Completed", run.output
    assert list(run.steps) == ["write-erp-record"]
    assert run.calls == 2
    assert len(erp.rows[70]) == 1
