"""Write-back (AMOCRM_SYNC_NOTE, AMOCRM_ERP_ID_FIELD) through the signed executor driver.

amoCRM is the stateful `FakeAmoCRM` answered through `responses` (a PATCH changes the lead and
its `updated_at`, a note lands on the lead), Rukovoditel the stateful `FakeRukovoditel`: notes,
field values and ERP requests are counted on the fakes, not assumed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import TEST_SECRETS
from tests.fakes.amocrm import ERP_ID_FIELD, FakeAmoCRM, server_error
from tests.fakes.web import FakeRequest, Reply
from tests.support.executor import make_event, run_function

FN = "amocrm-webhook-handler"
LEAD_ID = 25399013
ERP_BASE = "https://erp.example.test"  # CRM_API_URL without api/rest.php
WRITEBACK_ENV = {"AMOCRM_SYNC_NOTE": "1", "AMOCRM_ERP_ID_FIELD": str(ERP_ID_FIELD)}


@pytest.fixture
def amo(amo_account: FakeAmoCRM) -> FakeAmoCRM:
    amo_account.add_lead(LEAD_ID, name="Order #1042", price=15000)
    return amo_account


@pytest.fixture
def writeback(set_env) -> None:
    set_env(**WRITEBACK_ENV)


def status_event() -> dict[str, Any]:
    return make_event(
        "amocrm/lead.status",
        {"lead_id": LEAD_ID, "action": "status", "pipeline_id": 7012345, "status_id": 142},
    )


def sync_event(**data: Any) -> dict[str, Any]:
    return make_event("amocrm/lead.sync", {"lead_id": LEAD_ID, **data})


def amo_calls(amo: FakeAmoCRM) -> list[str]:
    return [f"{entry.method} {entry.path}" for entry in amo.requests()]


def is_note(request: FakeRequest) -> bool:
    return request.method == "POST" and request.path == "/api/v4/leads/notes"


def is_patch(request: FakeRequest) -> bool:
    return request.method == "PATCH"


def link(record_id: str) -> str:
    return f"{ERP_BASE}/index.php?module=items/info&path=70-{record_id}"


# ---- the happy path and the "changed" rule -------------------------------------------------------
def test_a_created_record_leaves_one_note_with_its_link_and_the_id_in_the_field(
    app_client, amo, erp, writeback
) -> None:
    run = run_function(app_client, FN, status_event())

    assert run.status == "Completed", run.output
    record_id = run.output["record_id"]
    assert run.output["action"] == "inserted"
    assert (run.output["erp_id_field"], run.output["sync_note"]) == ("written", "added")
    assert amo.notes_of(LEAD_ID) == [f"Запись ERP №{record_id} создана: {link(record_id)}"]
    assert amo.leads[LEAD_ID].field_values(ERP_ID_FIELD) == [record_id]
    assert amo_calls(amo) == [
        f"GET /api/v4/leads/{LEAD_ID}",
        f"PATCH /api/v4/leads/{LEAD_ID}",
        "POST /api/v4/leads/notes",
    ]
    # fetch-lead-data, create-erp-task, write-erp-id, add-sync-note: steps + 1 calls
    assert run.calls == 5
    assert "warnings" not in run.output


def test_the_sync_our_own_update_causes_writes_nothing_anywhere(
    app_client, amo, erp, writeback
) -> None:
    """Our PATCH moved the lead's updated_at: the reconcile cron (or a webhook) hands the lead
    back as `amocrm/lead.sync`. That run must not write the ERP, add a note or PATCH again."""
    first = run_function(app_client, FN, status_event())
    echo_of = amo.leads[LEAD_ID].updated_at
    erp_before, amo.log[:] = len(erp.calls), []

    echo = run_function(app_client, FN, sync_event(), run_id=None)

    assert echo.status == "Completed", echo.output
    assert echo.output["action"] == "unchanged"
    assert echo.output["record_id"] == first.output["record_id"]
    assert len(erp.calls) == erp_before  # not even a lookup
    assert amo_calls(amo) == [f"GET /api/v4/leads/{LEAD_ID}"]
    assert echo.calls == 3  # no write-back steps at all
    assert len(amo.notes_of(LEAD_ID)) == 1
    assert amo.leads[LEAD_ID].updated_at == echo_of  # nothing changed the lead


def test_a_forced_replay_rewrites_the_erp_but_adds_nothing_to_the_lead(
    app_client, amo, erp, writeback
) -> None:
    run_function(app_client, FN, status_event())
    amo.log[:] = []

    replay = run_function(app_client, FN, sync_event(force=True))

    assert replay.output["action"] == "updated"
    assert len(erp.actions("update")) == 1
    assert amo_calls(amo) == [f"GET /api/v4/leads/{LEAD_ID}"]
    assert len(amo.notes_of(LEAD_ID)) == 1


def test_a_changed_mapped_value_adds_an_updated_note_and_no_second_field_write(
    app_client, amo, erp, writeback
) -> None:
    first = run_function(app_client, FN, status_event())
    amo.touch(LEAD_ID, name="Order #1042, 2 pcs")
    amo.log[:] = []

    changed = run_function(app_client, FN, sync_event())

    record_id = first.output["record_id"]
    assert changed.output["action"] == "updated"
    assert amo.notes_of(LEAD_ID)[1] == f"Запись ERP №{record_id} обновлена: {link(record_id)}"
    assert amo_calls(amo) == [f"GET /api/v4/leads/{LEAD_ID}", "POST /api/v4/leads/notes"]
    assert erp.rows[70][0]["field_1039"] == "Order #1042, 2 pcs"


def test_a_change_outside_the_map_is_no_change(app_client, amo, erp, writeback) -> None:
    run_function(app_client, FN, status_event())
    amo.touch(LEAD_ID, responsible_user_id=111)  # not in ERP_FIELD_MAP
    erp_before = len(erp.calls)

    again = run_function(app_client, FN, sync_event())

    assert again.output["action"] == "unchanged"
    assert len(erp.calls) == erp_before
    assert len(amo.notes_of(LEAD_ID)) == 1


def test_a_lead_synced_before_write_back_was_on_gets_one_updated_note(
    app_client, amo, erp, set_env
) -> None:
    run_function(app_client, FN, status_event())  # write-back off: nothing remembered
    set_env(**WRITEBACK_ENV)

    runs = [run_function(app_client, FN, sync_event()) for _ in range(2)]

    assert [r.output["action"] for r in runs] == ["updated", "unchanged"]
    assert [note.split(":")[0] for note in amo.notes_of(LEAD_ID)] == [
        f"Запись ERP №{runs[0].output['record_id']} обновлена"
    ]


def test_the_field_is_not_written_when_the_lead_already_holds_the_id(
    app_client, amo, erp, set_env
) -> None:
    set_env(AMOCRM_ERP_ID_FIELD=str(ERP_ID_FIELD))
    next_id = str(erp.next_id + 1)  # the id the fake ERP gives the next insert
    amo.leads[LEAD_ID].custom_fields_values = [
        {"field_id": ERP_ID_FIELD, "values": [{"value": next_id}]}
    ]

    run = run_function(app_client, FN, status_event())

    assert run.output["record_id"] == next_id
    assert "erp_id_field" not in run.output
    assert amo.writes("PATCH", LEAD_ID) == 0


# ---- write-backs that fail ------------------------------------------------------------------
def test_a_failing_note_is_retried_alone_and_never_repeats_the_erp_write(
    app_client, amo, erp, writeback
) -> None:
    amo.fail_next(server_error(503), times=2, match=is_note)

    run = run_function(app_client, FN, status_event())

    assert run.output["sync_note"] == "added"
    assert len(erp.actions("insert")) == 1
    assert amo.writes("PATCH", LEAD_ID) == 1  # the field step is memoised, not repeated
    assert amo.writes("POST") == 3
    assert len(amo.notes_of(LEAD_ID)) == 1


def test_a_note_amocrm_refuses_leaves_the_run_synced_and_the_next_sync_catches_up(
    app_client, amo, erp, writeback
) -> None:
    forbidden = Reply.json({"title": "Forbidden", "status": 403, "detail": "Access denied"}, 403)
    amo.fail_next(forbidden, match=is_note)

    run = run_function(app_client, FN, status_event())

    assert run.status == "Completed"
    assert (run.output["status"], run.output["sync_note"]) == ("synced", "failed")
    assert any("note was not added" in w and "403" in w for w in run.output["warnings"])
    assert amo.notes_of(LEAD_ID) == []
    later = run_function(app_client, FN, sync_event())
    assert later.output["action"] == "unchanged"  # no second ERP write for a note
    assert later.output["sync_note"] == "added"
    assert "создана" in amo.notes_of(LEAD_ID)[0]


def test_a_field_amocrm_does_not_keep_is_written_at_most_twice(
    app_client, amo, erp, set_env
) -> None:
    set_env(AMOCRM_ERP_ID_FIELD=str(ERP_ID_FIELD))
    accepted_not_kept = Reply.json({"id": LEAD_ID, "updated_at": 1})
    amo.fail_next(accepted_not_kept, times=5, match=is_patch)

    runs = [run_function(app_client, FN, sync_event()) for _ in range(3)]

    assert amo.writes("PATCH", LEAD_ID) == 2
    assert "not writing it again" in " ".join(runs[2].output["warnings"])


def test_an_unknown_field_fails_the_write_back_not_the_sync(app_client, amo, erp, set_env) -> None:
    set_env(AMOCRM_ERP_ID_FIELD="424242")

    run = run_function(app_client, FN, status_event())

    assert run.status == "Completed"
    assert run.output["erp_id_field"] == "failed"
    warning = " ".join(run.output["warnings"])
    assert "NotSupportedChoice at custom_fields_values.0.field_id" in warning
    assert amo.writes("PATCH", LEAD_ID) == 1  # a 400 is final: no retry


def test_without_a_state_store_the_field_is_written_and_the_note_says_why_not(
    app_client, amo, erp, set_env
) -> None:
    set_env(VERCEL="1", ERP_LEAD_ID_FIELD="1041", **WRITEBACK_ENV)

    run = run_function(app_client, FN, status_event())

    assert run.status == "Completed", run.output
    assert run.output["erp_id_field"] == "written"
    assert amo.notes_of(LEAD_ID) == []
    assert any("AMOCRM_SYNC_NOTE needs a state store" in w for w in run.output["warnings"])


def test_write_back_makes_no_amocrm_write_when_it_is_off(app_client, amo, erp) -> None:
    run = run_function(app_client, FN, status_event())
    assert run.calls == 3
    assert amo_calls(amo) == [f"GET /api/v4/leads/{LEAD_ID}"]
    assert not {"sync_note", "erp_id_field"} & set(run.output)


def test_notes_and_field_carry_no_secret(app_client, amo, erp, writeback) -> None:
    run = run_function(app_client, FN, status_event())
    dumped = json.dumps([run.output, run.step_outputs, amo.notes_of(LEAD_ID)])
    for name, secret in TEST_SECRETS.items():
        assert secret not in dumped, name


# ---- what Inngest is told -----------------------------------------------------------------------
def test_the_throttle_counts_one_request_per_write_back(set_env) -> None:
    from prometei.config import get_settings
    from prometei.functions import lead_sync

    assert lead_sync.runs_per_second(get_settings()) == 5  # the lead only
    set_env(AMOCRM_SYNC_NOTE="1")
    assert lead_sync.runs_per_second(get_settings()) == 2  # lead + note: 5 // 2
    set_env(AMOCRM_SYNC_NOTE="1", AMOCRM_ERP_ID_FIELD=str(ERP_ID_FIELD))
    assert lead_sync.runs_per_second(get_settings()) == 1  # lead + note + field: 5 // 3


def test_the_webhooks_our_writes_cause_trigger_no_lead_sync(
    app_client, amo, erp, writeback
) -> None:
    from prometei.amocrm.webhook import parse_webhook
    from prometei.config import get_settings
    from prometei.events import build_lead_events
    from prometei.functions import lead_sync
    from tests.fixtures.amocrm_bodies import encode

    run_function(app_client, FN, status_event())
    forms = amo.take_outbox()  # what amoCRM posts about our PATCH and our note

    events = [e for form in forms for e in build_lead_events(parse_webhook(encode(form))).events]
    config = lead_sync.build(get_settings()).get_config("https://app.example.test/api/inngest")

    assert [e["name"] for e in events] == ["amocrm/lead.update", "amocrm/lead.note"]
    assert {e["data"]["lead_id"] for e in events} == {LEAD_ID}
    triggers = {trigger.event for trigger in config.main.triggers}
    assert triggers == {"amocrm/lead.status", "amocrm/lead.sync"}


def test_switching_the_lookup_field_on_counts_as_a_change(app_client, amo, erp, set_env) -> None:
    set_env(**WRITEBACK_ENV)
    run_function(app_client, FN, status_event())
    set_env(**WRITEBACK_ENV, ERP_LEAD_ID_FIELD="1041")

    run = run_function(app_client, FN, sync_event())

    # Not skipped as "unchanged": the lead id must reach the ERP. The record written before
    # (remembered in the state store) is the one that gets it: still one record per lead.
    assert run.output["action"] == "updated"
    assert len(erp.rows[70]) == 1
    assert erp.rows[70][0]["field_1041"] == str(LEAD_ID)


def test_unreadable_memory_counts_as_nothing_remembered(app_client, amo, erp, writeback) -> None:
    from prometei.amocrm.writeback import LastWrites
    from prometei.services import get_services

    run_function(app_client, FN, status_event())
    get_services().state.put(LastWrites.key(70, LEAD_ID), "{not json")

    run = run_function(app_client, FN, sync_event())

    assert run.output["action"] == "updated"
    assert len(amo.notes_of(LEAD_ID)) == 2  # a second ("updated") note, never a failure


def test_two_runs_of_a_lead_interleaving_between_steps_leave_one_note(
    app_client, amo, erp, writeback
) -> None:
    """Inngest's concurrency key serialises the steps of a lead, not its runs: a webhook run
    and a backfill run can both pass `create-erp-task` before either adds its note (seen on the
    real dev server). Here the step bodies run in that order; one note must come of it."""
    from prometei.functions.lead_sync import fetch_lead
    from prometei.functions.lead_writeback import add_sync_note, write_remembered

    lead = fetch_lead(LEAD_ID)
    assert lead is not None
    first = write_remembered(lead)
    second = write_remembered(lead)  # the other run's ERP step: unchanged, but nothing noted yet
    assert (first["action"], second["action"]) == ("inserted", "unchanged")
    assert first["writeback"]["note"] == second["writeback"]["note"] == "inserted"

    entity_id, record_id = first["entity_id"], first["record_id"]
    done = [
        add_sync_note(LEAD_ID, entity_id, "inserted", run["writeback"]["memory"])
        for run in (first, second)
    ]

    assert [d["ok"] for d in done] == [True, True] and done[1].get("already") is True
    assert amo.notes_of(LEAD_ID) == [f"Запись ERP №{record_id} создана: {link(record_id)}"]
