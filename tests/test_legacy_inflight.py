"""Runs the TypeScript version started, resumed by this code after the switch.

Both SDKs name a step by the sha1 of its id, so Inngest hands our `amocrm-webhook-handler` the
old run's memos (parse-webhook, authenticate-amocrm / get-amocrm-token, fetch-lead-data,
create-erp-task) under the step ids we use too. The signed driver starts runs mid-way with
exactly those memos and the attempt number the executor would be at, and every case ends in
one ERP record or a clear non-retriable failure, never two records and never the old token in
anything we answer or log.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import pytest
from inngest._internal.transforms import hash_step_id

from tests.conftest import AMO_BASE
from tests.fixtures.amocrm_bodies import STATUS_LEAD
from tests.support.executor import Run, make_event, run_function
from tests.support.legacy import (
    accept_events,
    hosted_webhook_data,
    intake_events,
    old_intake_data,
    sent_batches,
)
from tests.test_lead_sync import amo_lead

HANDLER = "amocrm-webhook-handler"
LEAD_ID = 25399013
OLD_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.old-layout-access-token.in-clear-7777"

OLD_PARSED = {
    "leadId": LEAD_ID,
    "accountId": 29085955,
    "subdomain": "example",
    "pipelineId": 7012345,
    "statusId": 142,
    "statusChanged": True,
    "pipelineChanged": False,
    "webhookId": "webhook-1756481946366",
    "timestamp": 1756481946366,
}
# What the old steps returned (memos as Inngest stores them: {"data": <output>}).
PARSED = {"parse-webhook": {"data": OLD_PARSED}}
TOKEN = {"get-amocrm-token": {"data": OLD_TOKEN}}
OAUTH_TOKEN = {"authenticate-amocrm": {"data": OLD_TOKEN}}
FETCHED = {"fetch-lead-data": {"data": amo_lead()}}
WRITTEN = {"create-erp-task": {"data": {"status": "success", "data": {"id": "812"}}}}


def resume(app_client, memos: dict[str, Any], *, attempt: int = 0, data=None) -> Run:
    event = make_event("amocrm/webhook", data or old_intake_data(STATUS_LEAD), "01OLDRUNEVENT")
    return run_function(app_client, HANDLER, event, memos=memos, attempt=attempt)


def deliver(app_client, events: list[dict[str, Any]]) -> list[Run]:
    return [
        run_function(app_client, HANDLER, make_event(e["name"], e["data"], e["id"])) for e in events
    ]


def assert_old_token_never_echoed(run: Run, caplog) -> None:
    answered = json.dumps([run.output, run.step_outputs, run.responses, run.steps], default=str)
    assert OLD_TOKEN not in answered
    assert "old-layout-access-token" not in answered
    assert OLD_TOKEN not in "\n".join(r.getMessage() for r in caplog.records)


@pytest.fixture(autouse=True)
def _logs(caplog):
    caplog.set_level(logging.DEBUG)


def test_both_sdks_name_steps_by_sha1_so_the_old_memos_reach_our_steps() -> None:
    for step_id in ("parse-webhook", "get-amocrm-token", "fetch-lead-data", "create-erp-task"):
        assert hash_step_id(step_id) == hashlib.sha1(step_id.encode()).hexdigest()  # noqa: S324


# ---- the old layout had not written: its webhook is dispatched, one record --------------------


@pytest.mark.parametrize(
    ("memos", "attempt"),
    [
        ({}, 0),
        (PARSED, 0),
        ({**PARSED, **OAUTH_TOKEN}, 0),
        ({**PARSED, **TOKEN}, 3),  # the old fetch was failing (amoCRM down, token expired)
        ({**PARSED, **TOKEN, **FETCHED}, 0),  # fetched; the write had not started
    ],
    ids=["event-only", "parsed", "authenticated", "fetch-failing", "fetched"],
)
def test_an_old_run_before_its_write_ends_in_one_record_via_the_intakes_event(
    app_client, mock, erp, caplog, memos, attempt
) -> None:
    accept_events(mock)
    expected = intake_events(mock, STATUS_LEAD)
    mock.get(f"{AMO_BASE}/api/v4/leads/{LEAD_ID}", json=amo_lead())

    run = resume(app_client, memos, attempt=attempt)

    assert run.status == "Completed", run.output
    assert run.output["status"] == "dispatched"
    assert run.output["previous_version_run"] is True
    assert run.output["event_ids"] == [expected[0]["id"]]
    assert sent_batches(mock)[1:] == [expected]
    assert erp.calls == []  # the resumed run itself writes nothing
    # Our steps under the old ids hold markers only, never the old outputs.
    assert run.steps["create-erp-task"] == {"prometei_claimed": True, "attempt": 0}
    assert_old_token_never_echoed(run, caplog)

    [synced] = deliver(app_client, expected)
    assert synced.output["status"] == "synced"
    assert len(erp.rows[70]) == 1


def test_an_old_run_of_the_hosted_webhook_layout_is_dispatched(app_client, mock, caplog) -> None:
    accept_events(mock)
    expected = intake_events(mock, STATUS_LEAD)
    run = resume(app_client, {**PARSED, **OAUTH_TOKEN}, data=hosted_webhook_data(STATUS_LEAD))
    assert run.output["status"] == "dispatched"
    assert sent_batches(mock)[1:] == [expected]
    assert_old_token_never_echoed(run, caplog)


def test_an_old_write_the_erp_refused_is_dispatched_again(app_client, mock, erp, caplog) -> None:
    accept_events(mock)
    refused = {"create-erp-task": {"data": {"status": "error", "error_message": "field_1040"}}}

    run = resume(app_client, {**PARSED, **TOKEN, **FETCHED, **refused})

    assert run.output["status"] == "dispatched"
    assert len(sent_batches(mock)) == 1
    assert erp.calls == []
    assert_old_token_never_echoed(run, caplog)


# ---- the old layout had written: nothing is written again ---------------------------------------


def test_an_old_run_that_had_written_ends_without_a_second_record(
    app_client, mock, erp, caplog
) -> None:
    run = resume(app_client, {**PARSED, **TOKEN, **FETCHED, **WRITTEN})

    assert run.status == "Completed"
    assert run.output == {
        "status": "done_by_previous_version",
        "reason": "the previous version had already written the ERP record",
        "record_id": "812",
        "lead_ids": [LEAD_ID],
    }
    assert run.calls == 1  # both old memos answer: no new step, no new step state
    assert erp.calls == []
    assert sent_batches(mock) == []
    assert len(mock.calls) == 0  # neither amoCRM nor Inngest contacted
    assert_old_token_never_echoed(run, caplog)


# ---- the old write may have landed unseen: a clear failure, no second write --------------------


@pytest.mark.parametrize(
    ("memos", "attempt", "fragment"),
    [
        ({**PARSED, **TOKEN, **FETCHED}, 1, "had failed just before the switch"),
        (
            {**PARSED, **TOKEN, **FETCHED, "create-erp-task": {"data": None}},
            0,
            "returned something that is not a record id",
        ),
        (
            {
                **PARSED,
                **TOKEN,
                **FETCHED,
                "create-erp-task": {
                    "error": {
                        "name": "Error",
                        "message": "ERP API error 504: gateway timeout password=hunter2222",
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
    app_client, mock, erp, caplog, memos, attempt, fragment
) -> None:
    run = resume(app_client, memos, attempt=attempt)

    assert run.status == "Failed"
    assert run.output["name"] == "NonRetriableError"
    message = run.output["message"]
    assert fragment in message
    assert f"check the ERP for lead {LEAD_ID}" in message
    assert f"python -m prometei replay {LEAD_ID}" in message
    assert "hunter2222" not in message
    assert erp.calls == []
    assert sent_batches(mock) == []
    assert_old_token_never_echoed(run, caplog)


def test_an_unreadable_old_event_fails_clearly(app_client, mock, erp, caplog) -> None:
    run = resume(app_client, {**PARSED, **TOKEN}, data={"parsedData": OLD_PARSED})
    assert run.status == "Failed"
    assert "data.originalData is missing" in run.output["message"]
    assert erp.calls == []
    assert sent_batches(mock) == []
    assert_old_token_never_echoed(run, caplog)


def test_a_resumed_run_and_the_same_webhook_through_the_intake_write_once(
    app_client, mock, erp
) -> None:
    """The old run is resumed while amoCRM redelivers the webhook to the new URL."""
    accept_events(mock)
    mock.get(f"{AMO_BASE}/api/v4/leads/{LEAD_ID}", json=amo_lead())
    from_intake = intake_events(mock, STATUS_LEAD)

    resume(app_client, {**PARSED, **TOKEN, **FETCHED})
    from_old_run = sent_batches(mock)[-1]

    unique = {e["id"]: e for e in from_intake + from_old_run}  # Inngest drops a repeated id
    deliver(app_client, list(unique.values()))
    assert len(unique) == 1
    assert len(erp.rows[70]) == 1
