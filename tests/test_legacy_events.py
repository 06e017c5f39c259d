"""`amocrm/webhook` events of the TypeScript version -> the intake's own lead events.

Every shape is compared with what the intake sends for the same webhook body: same names, same
data, same deterministic ids. Then the paths are run together through a stand-in for Inngest's
event-id dedupe and the signed executor, counting ERP records.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from prometei.amocrm.legacy import parse_legacy_event
from prometei.errors import InputError
from tests.conftest import AMO_BASE, EVENT_API
from tests.fixtures.amocrm_bodies import ADD_TWO_LEADS, CONTACT_AND_TASK, STATUS_LEAD, encode
from tests.support.executor import make_event, run_function
from tests.support.legacy import (
    FORM,
    LEGACY_SHAPES,
    SECRET,
    accept_events,
    hosted_webhook_data,
    intake_events,
    old_intake_data,
    sent_batches,
)
from tests.test_lead_sync import amo_lead

FN = "amocrm-legacy-webhook"
HANDLER = "amocrm-webhook-handler"
LEAD_ID = 25399013

# The body `scripts/test-amocrm-webhook.js` of the old project sends, as a form.
SCRIPT_BODY = """\
account[id]=32452514
account[subdomain]=oooprometei
leads[status][0][id]=45721053
leads[status][0][old_pipeline_id]=9679730
leads[status][0][old_status_id]=77186754
leads[status][0][pipeline_id]=9679730
leads[status][0][status_id]=77186758"""


def run_legacy(app_client, data: dict[str, Any]):
    return run_function(app_client, FN, make_event("amocrm/webhook", data))


# ---- the same events as the intake ------------------------------------------------------------


@pytest.mark.parametrize("shape", sorted(LEGACY_SHAPES))
def test_each_legacy_shape_sends_exactly_the_intakes_events(app_client, mock, shape) -> None:
    accept_events(mock)
    expected = intake_events(mock, STATUS_LEAD)

    run = run_legacy(app_client, LEGACY_SHAPES[shape](STATUS_LEAD))

    assert run.status == "Completed", run.output
    assert sent_batches(mock)[1:] == [expected]  # names, data and ids all equal
    assert expected[0]["id"].startswith(f"amocrm-lead-{LEAD_ID}-status-")
    assert run.output == {
        "status": "dispatched",
        "event_ids": [expected[0]["id"]],
        "lead_ids": [LEAD_ID],
        "ignored": 0,
    }
    assert run.calls == 2  # the send step, then the final call


def test_the_old_test_scripts_hosted_webhook_event_matches_the_intake(
    app_client, mock, set_env
) -> None:
    set_env(AMOCRM_SUBDOMAIN="oooprometei", AMOCRM_ACCOUNT_ID="32452514")
    accept_events(mock)
    expected = intake_events(mock, SCRIPT_BODY)
    # Verbatim shape of the old script's event data (ids from the old README).
    data = {
        "data": {
            "account[id]": ["32452514"],
            "account[subdomain]": ["oooprometei"],
            "leads[status][0][id]": ["45721053"],
            "leads[status][0][old_pipeline_id]": ["9679730"],
            "leads[status][0][old_status_id]": ["77186754"],
            "leads[status][0][pipeline_id]": ["9679730"],
            "leads[status][0][status_id]": ["77186758"],
        },
        "id": "01K3V7Q0QYTEM0DMCF9P1SWYTB",
        "name": "webhook/request.received",
        "ts": 1756481946366,
        "v": None,
    }

    run = run_legacy(app_client, data)

    assert run.status == "Completed", run.output
    [sent] = sent_batches(mock)[1:]
    assert sent == expected
    assert sent[0]["data"]["lead_id"] == 45721053
    assert sent[0]["data"]["status_changed"] is True


def test_several_leads_in_one_legacy_event_become_one_event_each(app_client, mock) -> None:
    accept_events(mock)
    expected = intake_events(mock, ADD_TWO_LEADS)
    run = run_legacy(app_client, hosted_webhook_data(ADD_TWO_LEADS))
    assert sent_batches(mock)[1:] == [expected]
    assert run.output["lead_ids"] == [25400001, 25400002]


def test_repeated_form_values_keep_the_last_one_as_the_intake_does(app_client, mock) -> None:
    accept_events(mock)
    body = STATUS_LEAD + "\nleads[status][0][name]=Renamed"
    expected = intake_events(mock, body)
    data = hosted_webhook_data(STATUS_LEAD)
    data["data"]["leads[status][0][name]"] = ["Order #1042", "Renamed"]

    run_legacy(app_client, data)

    assert sent_batches(mock)[1:] == [expected]
    assert expected[0]["data"]["fields"]["name"] == "Renamed"


def test_a_failed_send_is_retried_with_the_same_events(app_client, mock) -> None:
    mock.post(EVENT_API, status=503, body="busy")
    accept_events(mock)

    run = run_legacy(app_client, old_intake_data(STATUS_LEAD))

    assert run.status == "Completed"
    first, second = sent_batches(mock)
    assert first == second
    assert [op["op"] for op in run.step_outputs] == ["StepError", "StepRun"]


# ---- nothing is silently dropped ---------------------------------------------------------------


def test_a_legacy_event_without_leads_is_acknowledged_as_ignored(app_client, mock) -> None:
    run = run_legacy(app_client, hosted_webhook_data(CONTACT_AND_TASK))
    assert run.status == "Completed"
    assert run.output["status"] == "skipped"
    assert run.output["ignored"] == 4  # two contacts, a company, a task
    assert sent_batches(mock) == []


def test_the_trigger_filter_applies_as_in_the_intake(app_client, mock, set_env) -> None:
    set_env(AMOCRM_TRIGGER_STATUSES="7012345:143")
    run = run_legacy(app_client, old_intake_data(STATUS_LEAD))
    assert run.output["status"] == "skipped"
    assert "AMOCRM_TRIGGER_STATUSES" in run.output["reason"]
    assert sent_batches(mock) == []


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({}, "holds no amoCRM webhook"),
        ({"receivedAt": "2025-08-29"}, "holds no amoCRM webhook"),
        ({"originalData": "leads[status][0][id]=1"}, "data.originalData"),
        ({"parsedData": {"leadId": 25399013}}, "data.originalData is missing"),
        ({"data": {"account[id]": ["29085955"]}}, "account[subdomain] is missing"),
        ({"data": {"account[subdomain]": ["example"]}}, "has no lead item"),
        (
            {"data": {"account[subdomain]": ["example"], "leads[status][0][status_id]": ["142"]}},
            "leads[status][0][id] is missing",
        ),
        (
            {"data": {"account[subdomain]": ["example"], "leads[status][0][id]": ["abc"]}},
            "must be a number",
        ),
        (
            {"data": {"account[subdomain]": ["example"], "leads[status][0][id]": [True]}},
            "has a bool value",
        ),
        (
            {"data": {"account[subdomain]": ["elsewhere"], "leads[status][0][id]": ["1"]}},
            "serves 'example'",
        ),
        (
            {
                "data": {
                    "account[subdomain]": ["example"],
                    "account[id]": ["1"],
                    "leads[status][0][id]": ["1"],
                }
            },
            "AMOCRM_ACCOUNT_ID is 29085955",
        ),
        (
            {"originalData": {"account[subdomain]": "example", "leads[status": "1"}},
            "malformed",
        ),
    ],
    ids=[
        "empty",
        "metadata-only",
        "original-not-object",
        "parsed-only",
        "no-subdomain",
        "no-lead",
        "no-lead-id",
        "bad-lead-id",
        "bool-value",
        "other-account",
        "other-account-id",
        "bad-bracket",
    ],
)
def test_malformed_legacy_events_fail_at_once_naming_what_is_missing(
    app_client, mock, data, fragment
) -> None:
    event = make_event("amocrm/webhook", data, event_id="01OLDEVENT")
    run = run_function(app_client, FN, event)

    assert run.status == "Failed"
    assert run.calls == 1  # non-retriable: no retries
    assert run.output["name"] == "NonRetriableError"
    assert run.output["message"].startswith("amocrm/webhook event 01OLDEVENT: ")
    assert fragment in run.output["message"]
    assert sent_batches(mock) == []


def test_parse_legacy_event_names_the_shape_it_read() -> None:
    shapes = {
        name: parse_legacy_event(build(STATUS_LEAD)).shape for name, build in LEGACY_SHAPES.items()
    }
    assert shapes == {
        "old-intake": "old-intake",
        "old-intake-nested": "old-intake",
        "inngest-hosted-webhook": "inngest-webhook",
        "spread-form": "form-fields",
    }
    with pytest.raises(InputError, match="nested more than"):
        deep: dict[str, Any] = {"x": "1"}
        for _ in range(40):
            deep = {"a": deep}
        parse_legacy_event({"originalData": {"leads": deep}})


# ---- every path at once: one ERP record --------------------------------------------------------


class EventBus:
    """Inngest's part, as far as these tests need it: drop an event id seen before, and run
    `amocrm-webhook-handler` for each new `amocrm/lead.status` event (reference inngest.md)."""

    def __init__(self, app_client) -> None:
        self.app_client = app_client
        self.seen: set[str] = set()
        self.runs: list[Any] = []

    def deliver(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["id"] in self.seen:
                continue
            self.seen.add(event["id"])
            if event["name"] == "amocrm/lead.status":
                delivered = make_event(event["name"], event["data"], event["id"])
                self.runs.append(run_function(self.app_client, HANDLER, delivered))


def test_a_lead_arriving_by_every_old_and_new_path_is_written_once(
    app_client, mock, erp, set_env
) -> None:
    set_env(AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="1")
    accept_events(mock)
    mock.get(f"{AMO_BASE}/api/v4/leads/{LEAD_ID}", json=amo_lead())
    bus = EventBus(app_client)

    # The new URL, the old URL without a token (opt-in on), /api/inngest with the token ...
    bus.deliver(intake_events(mock, STATUS_LEAD))
    bus.deliver(intake_events(mock, STATUS_LEAD, url="/api/amocrm-webhook"))
    inngest_form = app_client.post(
        f"/api/inngest?token={SECRET}", data=encode(STATUS_LEAD), content_type=FORM
    )
    assert inngest_form.status_code == 200
    bus.deliver(sent_batches(mock)[-1])
    # ... and the old event shapes, through amocrm-legacy-webhook.
    for build in LEGACY_SHAPES.values():
        before = len(sent_batches(mock))
        run = run_legacy(app_client, build(STATUS_LEAD))
        assert run.status == "Completed"
        bus.deliver(sent_batches(mock)[before])

    batches = sent_batches(mock)
    assert len(batches) == 3 + len(LEGACY_SHAPES)
    assert len({json.dumps(batch, sort_keys=True) for batch in batches}) == 1
    assert [run.output["status"] for run in bus.runs] == ["synced"]
    assert len(erp.rows[70]) == 1
    assert len(erp.actions("insert")) == 1
