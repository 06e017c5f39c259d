"""AMOCRM_FAILURE_NOTE: the `on_failure` handler of amocrm-webhook-handler.

The failure event is built the way Inngest builds it (`inngest/function.failed` with the failed
run's error, run id, function id and original event); the first test takes the error straight
from a run that failed for good over the signed executor driver.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from prometei.amocrm.failure_note import failure_note_text
from tests.conftest import TEST_SECRETS
from tests.fakes.amocrm import FakeAmoCRM, server_error
from tests.fakes.web import FakeRequest
from tests.support.executor import make_event, run_function

FN = "amocrm-webhook-handler"
FAILURE_FN = "amocrm-webhook-handler-failure"
LEAD_ID = 25399013
RUN_ID = "01JF0RFA1LEDRUN0000000000"


@pytest.fixture
def amo(amo_account: FakeAmoCRM) -> FakeAmoCRM:
    amo_account.add_lead(LEAD_ID, name="Order #1042", price=15000)
    return amo_account


@pytest.fixture
def failure_note(set_env) -> None:
    set_env(AMOCRM_FAILURE_NOTE="1")


@pytest.fixture
def app_client(failure_note):
    """/api/inngest with AMOCRM_FAILURE_NOTE on: the failure handler is registered only then."""
    from prometei.web.apps import create_inngest_app

    return create_inngest_app().test_client()


def failed_event(error: Any, *, lead_id: Any = LEAD_ID, run_id: str = RUN_ID) -> dict[str, Any]:
    original = make_event("amocrm/lead.sync", {"lead_id": lead_id})
    return make_event(
        "inngest/function.failed",
        {
            "error": error,
            "event": original,
            "function_id": f"prometei-ingest-{FN}",
            "run_id": run_id,
        },
    )


def test_a_permanent_erp_error_leaves_one_note_an_operator_can_act_on(
    app_client, amo, erp, failure_note
) -> None:
    body = {
        "status": "error",
        "error_code": 500,
        "error_message": "field_1040 not exist in entity 70",
    }
    erp.fail_next("insert", (500, {"Content-Type": "text/html"}, json.dumps(body)))
    original = make_event("amocrm/lead.status", {"lead_id": LEAD_ID, "action": "status"})
    failed = run_function(app_client, FN, original)
    assert failed.status == "Failed"
    event = make_event(
        "inngest/function.failed",
        {"error": failed.output, "event": original, "function_id": "x", "run_id": RUN_ID},
    )

    handled = run_function(app_client, FAILURE_FN, event)

    assert handled.status == "Completed", handled.output
    [note] = amo.notes_of(LEAD_ID)
    assert note.startswith("Сделка не передана в ERP — ERP (Rukovoditel): ")
    assert "field_1040 not exist in entity 70" in note
    assert f"запуск Inngest {RUN_ID}" in note
    assert note.endswith(f"python -m prometei replay {LEAD_ID}).")
    assert "\n" not in note and "Traceback" not in note
    assert handled.output["note_id"] and handled.output["text"] == note


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            {"name": "UpstreamAuthError", "message": "amocrm: amoCRM forbids access (403): x"},
            "— amoCRM: amoCRM forbids access (403): x (",
        ),
        (
            {"name": "KeyError", "message": "'price'", "stack": "Traceback ...\n  File x"},
            "— внутренняя ошибка prometei (KeyError: 'price'), сообщите разработчикам (",
        ),
        (None, "— причину Inngest не сообщил, она видна в запуске ("),
        ({"error": "invalid status code: 504", "name": "Error"}, "— invalid status code: 504 ("),
        (
            {"name": "Error", "message": "Traceback (most recent call last):\n  File 'a.py'"},
            "— причину Inngest не сообщил",
        ),
        (
            {"message": "kv: KV answered 503\n  at step fetch-lead-data\n  at ..."},
            "— хранилище KV: KV answered 503 (",
        ),
    ],
    ids=["amocrm", "bug", "no-error", "executor", "stack-only", "multi-line"],
)
def test_every_failure_shape_gives_one_safe_sentence(error: Any, expected: str) -> None:
    text = failure_note_text(error, run_id=RUN_ID, lead_id=LEAD_ID)
    assert expected in text
    assert text.count("\n") == 0 and text.endswith(").")


def test_the_note_never_carries_a_secret_or_too_much(set_env) -> None:
    secret = TEST_SECRETS["CRM_API_PASSWORD"]
    error = {
        "name": "UpstreamRejected",
        "message": f"erp: refused password={secret} Bearer abcdefghijklmnop " + "x" * 2000,
    }
    text = failure_note_text(error, run_id="bad run id!", lead_id=LEAD_ID, secrets=[secret])
    assert secret not in text and "abcdefghijklmnop" not in text
    assert len(text) < 500
    assert "запуск в Inngest;" in text  # an id that is not a run id is left out


def test_the_same_failure_is_noted_once_and_another_one_again(
    app_client, amo, failure_note
) -> None:
    refused = {"name": "NonRetriableError", "message": "erp: entity 70 not found"}
    timeout = {"name": "UpstreamUnavailable", "message": "erp: timed out"}

    runs = [
        run_function(app_client, FAILURE_FN, failed_event(refused, run_id="01RUNA")),
        run_function(app_client, FAILURE_FN, failed_event(refused, run_id="01RUNB")),
        run_function(app_client, FAILURE_FN, failed_event(timeout, run_id="01RUNC")),
    ]

    assert [r.output["status"] for r in runs] == ["noted", "skipped", "noted"]
    assert len(amo.notes_of(LEAD_ID)) == 2


def test_a_note_that_cannot_be_added_fails_the_handler_and_frees_the_reason(
    app_client, amo, failure_note
) -> None:
    def is_note(request: FakeRequest) -> bool:
        return request.path == "/api/v4/leads/notes"

    amo.fail_next(server_error(503), match=is_note)
    error = {"name": "NonRetriableError", "message": "erp: entity 70 not found"}

    first = run_function(app_client, FAILURE_FN, failed_event(error), max_attempts=1)
    second = run_function(app_client, FAILURE_FN, failed_event(error))

    assert first.status == "Failed"
    assert second.output["status"] == "noted"
    assert len(amo.notes_of(LEAD_ID)) == 1


@pytest.mark.parametrize(
    ("env", "lead_id", "reason"),
    [
        # switched off after the app registered the handler (a run of the old deployment)
        ({"AMOCRM_FAILURE_NOTE": None}, LEAD_ID, "AMOCRM_FAILURE_NOTE is off"),
        ({}, None, "the failed run's event names no lead"),
        ({}, "abc", "the failed run's event names no lead"),
    ],
    ids=["off", "no-lead", "not-a-lead-id"],
)
def test_nothing_is_written_without_the_setting_or_a_lead(
    app_client, amo, set_env, env, lead_id, reason
) -> None:
    set_env(**env)
    run = run_function(app_client, FAILURE_FN, failed_event({"message": "x"}, lead_id=lead_id))
    assert run.output["status"] == "skipped" and run.output["reason"] == reason
    assert amo.requests() == []


def test_the_failure_handler_is_registered_only_when_the_note_is_on(set_env) -> None:
    from prometei.config import get_settings
    from prometei.functions import lead_sync

    url = "https://app.example.test/api/inngest"
    assert lead_sync.build(get_settings()).get_config(url).on_failure is None
    set_env(AMOCRM_FAILURE_NOTE="1")
    failure = lead_sync.build(get_settings()).get_config(url).on_failure
    assert failure is not None
    assert failure.id == f"prometei-ingest-{FAILURE_FN}"
    [trigger] = failure.triggers
    assert trigger.event == "inngest/function.failed"
    assert trigger.expression == f"event.data.function_id == 'prometei-ingest-{FN}'"
    assert json.dumps(failure.steps["step"].retries.model_dump()) == '{"attempts": 0}'
