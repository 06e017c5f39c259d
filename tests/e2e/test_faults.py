"""Outside systems failing under the real executor: Rukovoditel's transient and permanent
errors, a closed ERP port, amoCRM's 429. Every case ends with at most one ERP record."""

from __future__ import annotations

import pytest

from prometei.http import DEFAULT_TIMEOUT
from tests.e2e.harness import ERP_ENTITY, ExecutorCall, Stack, status_change_form
from tests.fakes.amocrm import lead_path, rate_limited
from tests.fakes.rukovoditel_http import (
    BAD_GATEWAY,
    EMPTY_500,
    GATEWAY_TIMEOUT,
    HTML_500,
    SERVICE_UNAVAILABLE,
    error_200,
    error_500_json,
)
from tests.fakes.web import Reply

# An answer that arrives after the ERP client stopped waiting (its read timeout).
SLOWER_THAN_THE_CLIENT = DEFAULT_TIMEOUT[1] + 1.0
MAX_ATTEMPTS = 6  # retries=5 on amocrm-webhook-handler


def failed_attempts(calls: list[ExecutorCall]) -> int:
    return sum(1 for call in calls if call.op == "StepError")


def sync_lead(stack: Stack, lead_id: int) -> dict:
    stack.amo.add_lead(lead_id, name=f"Lead {lead_id}", price=700)
    answer = stack.webhook(status_change_form(lead_id))
    return stack.api.wait_for_run(answer["inngest_ids"][0], timeout=120)


@pytest.mark.parametrize(
    ("reply", "times"),
    [
        pytest.param(SERVICE_UNAVAILABLE, 1, id="503"),
        pytest.param(BAD_GATEWAY, 1, id="502"),
        pytest.param(GATEWAY_TIMEOUT, 1, id="504"),
        pytest.param(HTML_500, 2, id="500-html-page-twice"),
    ],
)
def test_transient_erp_answer_is_retried_into_one_record(
    stack: Stack, lead_id: int, reply: Reply, times: int
) -> None:
    stack.erp.fail("insert", reply, times=times)

    run = sync_lead(stack, lead_id)

    assert run["status"] == "Completed", run
    assert run["output"]["action"] == "inserted"
    assert len(stack.records_of_lead(lead_id)) == 1
    calls = stack.proxy_calls(run["run_id"])
    assert failed_attempts(calls) == times
    assert len(calls) == 3 + times  # each failed attempt is one more call, nothing else


def test_answer_slower_than_the_client_timeout_after_the_insert_landed(
    stack: Stack, lead_id: int
) -> None:
    # The insert is written, but its answer comes too late: the retry must find the record.
    stack.erp.fail("insert", delay_s=SLOWER_THAN_THE_CLIENT, after_effect=True)

    run = sync_lead(stack, lead_id)

    assert run["status"] == "Completed", run
    assert run["output"]["action"] == "updated"
    assert len(stack.records_of_lead(lead_id)) == 1
    assert failed_attempts(stack.proxy_calls(run["run_id"])) == 1


def test_connection_refused_then_back(stack: Stack, lead_id: int) -> None:
    stack.amo.add_lead(lead_id)
    stack.erp_server.close_port()
    try:
        answer = stack.webhook(status_change_form(lead_id))
        [ulid] = answer["inngest_ids"]
        run_id = stack.wait_for_failed_attempt(ulid)
    finally:
        stack.erp_server.reopen_port()

    run = stack.api.wait_for_run(ulid)

    assert run["run_id"] == run_id
    assert run["status"] == "Completed", run
    assert len(stack.records_of_lead(lead_id)) == 1


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        pytest.param(error_200("entity 70 not found"), ["ERP_ENTITY_ID"], id="200-status-error"),
        pytest.param(
            error_500_json("field_1040 not exist in entity 70"),
            ["ERP_FIELD_MAP"],
            id="500-json-error",
        ),
        pytest.param(EMPTY_500, ["CRM_API_USERNAME", "CRM_API_PASSWORD"], id="500-empty-body"),
    ],
)
def test_permanent_erp_error_fails_the_run_without_retry(
    stack: Stack, lead_id: int, reply: Reply, words: list[str]
) -> None:
    stack.erp.fail("insert", reply)

    run = sync_lead(stack, lead_id)

    assert run["status"] == "Failed", run
    message = run["output"]["message"]
    for word in words:
        assert word in message
    assert "will retry" not in message
    calls = stack.proxy_calls(run["run_id"])
    assert failed_attempts(calls) == 0
    assert len(calls) == 2  # fetch-lead-data, then the write that failed for good
    assert stack.records_of_lead(lead_id) == []
    assert len(stack.erp.requests("POST")) == 2  # the lookup and the one insert


def test_erp_down_for_every_attempt_ends_with_a_message_saying_what_to_check(
    stack: Stack, lead_id: int
) -> None:
    stack.erp.fail("insert", SERVICE_UNAVAILABLE, times=MAX_ATTEMPTS)

    run = sync_lead(stack, lead_id)

    assert run["status"] == "Failed", run
    message = run["output"]["message"]
    assert "HTTP 503" in message and "check" in message
    assert "will retry" not in message
    assert failed_attempts(stack.proxy_calls(run["run_id"])) == MAX_ATTEMPTS - 1
    assert stack.erp.rows(ERP_ENTITY) == []


def test_amocrm_429_is_retried_after_the_wait(stack: Stack, lead_id: int) -> None:
    wait_s = 3
    stack.amo.fail_next(
        rate_limited(retry_after_s=wait_s), match=lambda r: r.path == lead_path(lead_id)
    )

    run = sync_lead(stack, lead_id)

    assert run["status"] == "Completed", run
    first, second = stack.amo.requests("GET", lead_path(lead_id))
    assert first.status == 429 and second.status == 200
    # Inngest's own retry interval here is 1 s: a longer gap is amoCRM's Retry-After at work.
    assert second.at - first.at >= wait_s - 1
    assert len(stack.records_of_lead(lead_id)) == 1
