"""amocrm-webhook-handler end to end over the signed executor protocol.

amoCRM and Rukovoditel are `responses` mocks; the ERP one keeps state (tests.fakes.rukovoditel),
so "exactly one record" is counted, not assumed.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
import requests

from tests.conftest import AMO_BASE, TEST_SECRETS
from tests.support.executor import make_event, run_function

FN = "amocrm-webhook-handler"
LEAD_ID = 25399013


def amo_lead(lead_id: int = LEAD_ID, **overrides: Any) -> dict[str, Any]:
    lead = {
        "id": lead_id,
        "name": "Order #1042",
        "price": 15000,
        "responsible_user_id": 938348,
        "status_id": 142,
        "pipeline_id": 7012345,
        "created_at": 1711900000,
        "updated_at": 1712056800,
        "account_id": 29085955,
        "custom_fields_values": [
            {"field_id": 66339, "field_name": "Source", "values": [{"value": "Website"}]}
        ],
        "_embedded": {"contacts": [{"id": 5551, "is_main": True}], "tags": []},
    }
    lead.update(overrides)
    return lead


def status_event(lead_id: int = LEAD_ID, **data: Any) -> dict[str, Any]:
    payload = {
        "lead_id": lead_id,
        "account_id": 29085955,
        "subdomain": "example",
        "action": "status",
        "pipeline_id": 7012345,
        "status_id": 142,
        "old_pipeline_id": 7012345,
        "old_status_id": 32392156,
        "status_changed": True,
        "pipeline_changed": False,
        **data,
    }
    return make_event("amocrm/lead.status", payload)


def lead_url(lead_id: int = LEAD_ID) -> str:
    return f"{AMO_BASE}/api/v4/leads/{lead_id}"


def assert_no_secrets(run, caplog) -> None:
    dumped = json.dumps([run.output, run.step_outputs, run.responses], default=str)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for name, secret in TEST_SECRETS.items():
        assert secret not in dumped, f"{name} leaked into step output"
        assert secret not in logs, f"{name} leaked into a log line"


def test_status_event_creates_one_erp_record_with_mapped_fields(
    app_client, mock, erp, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    mock.get(lead_url(), json=amo_lead())

    run = run_function(app_client, FN, status_event())

    assert run.status == "Completed", run.output
    assert run.output["status"] == "synced"
    assert run.calls == 3  # two steps + the final call (no checkpointing in Python)
    inserts = erp.actions("insert")
    assert len(inserts) == 1
    assert inserts[0]["items"] == {"field_1039": "Order #1042", "field_1040": "15000"}
    assert inserts[0]["entity_id"] == 70
    # amoCRM was asked for the lead with its contacts, with the long-lived token
    request = mock.calls[0].request
    assert "with=contacts" in request.url
    assert request.headers["Authorization"] == "Bearer " + TEST_SECRETS["AMOCRM_ACCESS_TOKEN"]
    assert_no_secrets(run, caplog)


def test_erp_timeout_after_the_insert_landed_still_leaves_one_record(
    app_client, mock, erp, set_env, caplog
) -> None:
    set_env(ERP_LEAD_ID_FIELD="1041")
    mock.get(lead_url(), json=amo_lead())
    # The insert reaches the database, but the answer never comes back: Inngest retries.
    erp.fail_next("insert", requests.exceptions.ReadTimeout, after_effect=True)

    run = run_function(app_client, FN, status_event())

    assert run.status == "Completed", run.output
    assert len(erp.rows[70]) == 1
    assert erp.rows[70][0]["field_1041"] == str(LEAD_ID)
    assert len(erp.actions("insert")) == 1
    assert len(erp.actions("update")) == 1  # the retry found the landed row
    assert run.output["action"] == "updated"
    assert_no_secrets(run, caplog)


def test_redelivered_lead_updates_instead_of_duplicating(app_client, mock, erp, set_env) -> None:
    set_env(ERP_LEAD_ID_FIELD="1041")
    mock.get(lead_url(), json=amo_lead())
    first = run_function(app_client, FN, status_event())
    second = run_function(app_client, FN, make_event("amocrm/lead.sync", {"lead_id": LEAD_ID}))
    assert (first.output["action"], second.output["action"]) == ("inserted", "updated")
    assert len(erp.rows[70]) == 1


HTML = {"Content-Type": "text/html; charset=UTF-8"}


@pytest.mark.parametrize(
    ("reply", "expected_words"),
    [
        (
            (200, HTML, '{"status":"error","error_code":"","error_message":"entity 70 not found"}'),
            "entity 70 not found",
        ),
        (
            (
                500,
                HTML,
                '{"status":"error","error_code":500,"error_message":"field_1040 not exist in entity 70"}',
            ),
            "field_1040",
        ),
        ((500, HTML, ""), "CRM_API_USERNAME"),
        (
            (200, HTML, "<app_db_error>1054 - Unknown column 'abc' in 'WHERE'</app_db_error>"),
            "1054",
        ),
        ((404, HTML, "<html>Not Found</html>"), "CRM_API_URL"),
    ],
    ids=["200-status-error", "500-json", "500-empty", "app-db-error", "wrong-url"],
)
def test_each_erp_error_shape_fails_the_run_with_a_clear_message(
    app_client, mock, erp, reply, expected_words, caplog
) -> None:
    mock.get(lead_url(), json=amo_lead())
    erp.fail_next("insert", reply)

    run = run_function(app_client, FN, status_event())

    assert run.status == "Failed"
    assert run.calls == 2  # fetch, then the write fails at once: no retry of a permanent error
    assert expected_words.lower() in run.output["message"].lower()
    assert erp.rows.get(70, []) == []
    assert_no_secrets(run, caplog)


def test_an_answer_that_is_not_rukovoditel_is_retried(app_client, mock, erp) -> None:
    # The web server's own error page (PHP-FPM restarting): not a verdict of Rukovoditel.
    mock.get(lead_url(), json=amo_lead())
    erp.fail_next("insert", (500, HTML, "<html><h1>500 Internal Server Error</h1></html>"))
    erp.fail_next("insert", (200, HTML, "<html>Gateway says hi</html>"))

    run = run_function(app_client, FN, status_event())

    assert run.status == "Completed", run.output
    assert [op["op"] for op in run.step_outputs].count("StepError") == 2
    assert len(erp.rows[70]) == 1


def test_erp_503_is_retried_and_then_succeeds(app_client, mock, erp) -> None:
    mock.get(lead_url(), json=amo_lead())
    erp.fail_next("insert", (503, HTML, "<html>Service Unavailable</html>"), times=2)

    run = run_function(app_client, FN, status_event())

    assert run.status == "Completed"
    assert len(erp.rows[70]) == 1
    assert [op["op"] for op in run.step_outputs].count("StepError") == 2


@pytest.mark.parametrize("status", [204, 404])
def test_missing_lead_ends_as_skipped(app_client, mock, erp, status) -> None:
    mock.get(lead_url(), status=status, body="" if status == 204 else '{"title":"Not Found"}')
    run = run_function(app_client, FN, status_event())
    assert run.status == "Completed"
    assert run.output["status"] == "skipped"
    assert erp.calls == []


def test_deleted_lead_ends_as_skipped(app_client, mock, erp) -> None:
    mock.get(lead_url(), json=amo_lead(is_deleted=True))
    run = run_function(app_client, FN, status_event())
    assert run.output == {
        "status": "skipped",
        "reason": "lead is deleted in amoCRM",
        "lead_id": LEAD_ID,
    }
    assert erp.calls == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (204, "lead not found in amoCRM (deleted or no access)"),
        (404, "lead not found in amoCRM (deleted or no access)"),
        ("lead", "lead is deleted in amoCRM"),
    ],
)
def test_a_lead_deleted_after_its_webhook_ends_as_skipped_in_every_reading(
    app_client, amo_account, erp, answer, reason
) -> None:
    """What amoCRM answers for a deleted lead by id is an open question of the reference
    (amocrm.md §6.5: 204 or 404); the fake can also serve it with `is_deleted: true`."""
    amo_account.add_lead(LEAD_ID)
    amo_account.delete_lead(LEAD_ID)
    amo_account.deleted_lead_answer = answer

    run = run_function(app_client, FN, status_event())

    assert run.output == {"status": "skipped", "reason": reason, "lead_id": LEAD_ID}
    assert amo_account.lead_reads(LEAD_ID) == 1
    assert erp.calls == []


def test_amocrm_401_with_a_long_lived_token_fails_without_retrying(app_client, mock, erp) -> None:
    mock.get(lead_url(), status=401, json={"title": "Unauthorized", "status": 401})
    run = run_function(app_client, FN, status_event())
    assert run.status == "Failed"
    assert run.calls == 1
    assert (
        "AMOCRM_ACCESS_TOKEN" in run.output["message"]
        or "reconnect" in run.output["message"].lower()
    )
    assert erp.calls == []


def test_amocrm_429_html_is_retried(app_client, mock, erp) -> None:
    mock.get(lead_url(), status=429, body="<html><body>Too Many Requests</body></html>")
    mock.get(lead_url(), json=amo_lead())
    run = run_function(app_client, FN, status_event())
    assert run.status == "Completed"
    assert len(erp.rows[70]) == 1
    assert len([c for c in mock.calls if "/api/v4/leads/" in c.request.url]) == 2


def test_lead_moved_out_of_trigger_stage_is_skipped(app_client, mock, erp, set_env) -> None:
    set_env(AMOCRM_TRIGGER_STATUSES="7012345:142")
    mock.get(lead_url(), json=amo_lead(status_id=143))
    run = run_function(app_client, FN, status_event())
    assert run.output["status"] == "skipped"
    assert "trigger stage" in run.output["reason"]
    assert erp.calls == []


def test_sync_event_ignores_the_trigger_filter(app_client, mock, erp, set_env) -> None:
    set_env(AMOCRM_TRIGGER_STATUSES="7012345:142")
    mock.get(lead_url(), json=amo_lead(status_id=143))
    run = run_function(app_client, FN, make_event("amocrm/lead.sync", {"lead_id": LEAD_ID}))
    assert run.output["status"] == "synced"
    assert len(erp.rows[70]) == 1


@pytest.mark.parametrize("data", [{}, {"lead_id": "abc"}, {"lead_id": -4}])
def test_event_without_a_usable_lead_id_fails_at_once(app_client, erp, data) -> None:
    run = run_function(app_client, FN, make_event("amocrm/lead.sync", data))
    assert run.status == "Failed"
    assert run.calls == 1
    assert "lead_id" in run.output["message"]


def test_sync_config_limits_per_lead_concurrency_and_amocrm_rate(app_client) -> None:
    """What Inngest is told at sync: one run per lead, and a throttle under amoCRM's 7/s."""
    from prometei.config import get_settings
    from prometei.functions import all_functions

    (fn,) = [f for f in all_functions(get_settings()) if f.local_id == FN]
    config = fn.get_config("https://app.example.test/api/inngest").main
    assert [(c.key, c.limit) for c in config.concurrency] == [("event.data.lead_id", 1)]
    assert config.throttle.limit <= 6
    assert config.throttle.period == timedelta(seconds=1)
    assert config.steps["step"].retries.attempts == 5


def test_throttle_follows_the_amocrm_requests_the_map_needs(set_env) -> None:
    from prometei.config import get_settings
    from prometei.functions import lead_sync

    set_env(
        ERP_FIELD_MAP='{"field_1039": "name", "field_1043": "contact_phone", '
        '"field_1044": "company_name", "field_1042": "status_name"}'
    )
    config = lead_sync.build(get_settings()).get_config("https://app.example.test/api/inngest")
    # lead + contact + company = 3 requests per run (names are cached): 5 // 3 runs/s
    assert config.main.throttle.limit == 1


# ---- one record per lead, checked writes (issue: schema-aware ERP writes) -------------------
def test_resyncs_without_lookup_field_keep_one_record(app_client, mock, erp) -> None:
    # No ERP_LEAD_ID_FIELD: the state store (state.json here) remembers lead -> record id.
    mock.get(lead_url(), json=amo_lead())
    runs = [
        run_function(app_client, FN, status_event()),
        run_function(app_client, FN, make_event("amocrm/lead.sync", {"lead_id": LEAD_ID})),
        run_function(app_client, FN, make_event("amocrm/lead.sync", {"lead_id": LEAD_ID})),
    ]
    assert [r.output["action"] for r in runs] == ["inserted", "updated", "updated"]
    assert len(erp.rows[70]) == 1
    assert {r.output["record_id"] for r in runs} == {erp.rows[70][0]["id"]}


def test_a_wrong_map_never_reports_synced_for_an_existing_record(
    app_client, mock, erp, set_env
) -> None:
    set_env(ERP_LEAD_ID_FIELD="1041")
    mock.get(lead_url(), json=amo_lead())
    assert run_function(app_client, FN, status_event()).output["action"] == "inserted"

    set_env(ERP_FIELD_MAP='{"field_1039": "name", "field_9999": "price"}', ERP_LEAD_ID_FIELD="1041")
    run = run_function(app_client, FN, make_event("amocrm/lead.sync", {"lead_id": LEAD_ID}))

    assert run.status == "Failed" and run.calls == 2  # permanent: no retry
    assert "field_9999 is not a field of entity 70" in run.output["message"]
    assert "ERP_FIELD_MAP" in run.output["message"]
    assert erp.actions("update") == []


def test_on_vercel_without_kv_or_lookup_field_the_lead_fails_naming_both_fixes(
    app_client, mock, erp, set_env
) -> None:
    set_env(VERCEL="1")
    mock.get(lead_url(), json=amo_lead())
    run = run_function(app_client, FN, status_event())
    assert run.status == "Failed"
    assert "ERP_LEAD_ID_FIELD" in run.output["message"] and "KV" in run.output["message"]
    assert erp.actions("insert") == []


def test_map_sources_from_the_contact_and_stage_names(app_client, mock, erp, set_env) -> None:
    from tests.fakes.rukovoditel import FakeField
    from tests.fixtures.amocrm_api import pipelines_body

    erp.add_field(70, FakeField(1043, "phone", "Телефон"))
    set_env(
        ERP_FIELD_MAP='{"field_1039": "contact_name", "field_1043": "contact_phone", '
        '"field_1042": "status_name"}'
    )
    erp.entities[70].fields[1042].choices.append((70, "Успешно реализовано"))
    mock.get(lead_url(), json=amo_lead())
    mock.get(
        f"{AMO_BASE}/api/v4/contacts/5551",
        json={
            "id": 5551,
            "name": "Иван Петров",
            "custom_fields_values": [
                {"field_code": "PHONE", "values": [{"value": "+7 900 000-00-01"}]}
            ],
        },
    )
    mock.get(
        f"{AMO_BASE}/api/v4/leads/pipelines", json=pipelines_body((142, "Успешно реализовано"))
    )
    first = run_function(app_client, FN, status_event())
    second = run_function(app_client, FN, make_event("amocrm/lead.sync", {"lead_id": LEAD_ID}))

    assert (first.output["status"], second.output["status"]) == ("synced", "synced")
    row = erp.rows[70][0]
    assert (row["field_1039"], row["field_1043"], row["field_1042"]) == (
        "Иван Петров",
        "+7 900 000-00-01",
        "70",  # the stage name, translated to its choice id
    )
    paths = [c.request.url.split("?")[0].removeprefix(AMO_BASE) for c in mock.calls]
    amo = [p for p in paths if p.startswith("/api/v4/")]
    # per lead: the lead + its main contact; the pipelines once for both runs
    assert amo.count(f"/api/v4/leads/{LEAD_ID}") == 2
    assert amo.count("/api/v4/contacts/5551") == 2
    assert amo.count("/api/v4/leads/pipelines") == 1


def test_a_huge_price_keeps_every_digit_and_a_long_name_reports_its_cut(
    app_client, mock, erp
) -> None:
    mock.get(lead_url(), json=amo_lead(price=2**60 + 1, name="Ж" * 300))
    run = run_function(app_client, FN, status_event())
    assert run.status == "Completed", run.output
    (insert,) = erp.actions("insert")
    assert insert["items"]["field_1040"] == "1152921504606846977"
    assert insert["items"]["field_1039"] == "Ж" * 255
    assert run.output["warnings"] == ["field_1039: text cut from 300 to 255 characters"]
