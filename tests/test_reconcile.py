"""amocrm-reconcile: the engine against the paging fake (cursor in the real file state store),
then the cron function over the signed executor protocol with its webhook check."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import responses

from prometei.errors import UpstreamUnavailable
from prometei.store.base import StateStore
from prometei.sync.reconcile import CURSOR_KEY, FIRST_RUN_LOOKBACK_S, reconcile_leads
from tests.conftest import EVENT_API, TEST_SECRETS
from tests.support.amo_listing import BASE_TIME, WiredAmo, fake_amo
from tests.support.executor import make_event, run_function

FN = "amocrm-reconcile"
TRIGGER = ((7012345, 142),)
NOW = BASE_TIME + 600  # "now" for the engine: ten minutes after the first lead changed


class Sink:
    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.calls = 0
        self.fail_on = fail_on

    def __call__(self, events: list[dict[str, Any]]) -> list[str]:
        self.calls += 1
        if self.calls == self.fail_on:
            raise UpstreamUnavailable("inngest", "event API answered 502")
        self.batches.append(events)
        return ["01J"] * len(events)

    @property
    def ids(self) -> list[str]:
        return [event["id"] for batch in self.batches for event in batch]


class CountingState:
    """The real state store, counting writes (the steady state must not write)."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.puts = 0

    def get(self, key: str) -> str | None:
        return self.inner.get(key)

    def put(self, key: str, value: str, *, ttl_s: int | None = None) -> None:
        self.puts += 1
        self.inner.put(key, value, ttl_s=ttl_s)


@pytest.fixture
def wired() -> Iterator[WiredAmo]:
    with fake_amo() as wired:
        yield wired


@pytest.fixture
def state() -> CountingState:
    from prometei.services import get_services

    return CountingState(get_services().state)


def reconcile(wired: WiredAmo, state: CountingState, sink: Sink, **options: Any) -> dict:
    return reconcile_leads(
        wired.client(),
        state,
        sink,
        TRIGGER,
        now=lambda: float(NOW),
        **options,
    )


def stored_cursor(state: CountingState) -> dict:
    raw = state.get(CURSOR_KEY)
    assert raw is not None
    return json.loads(raw)


def test_first_run_syncs_trigger_stage_leads_of_the_last_hour(wired, state) -> None:
    wired.amo.add_lead(1, updated_at=NOW - FIRST_RUN_LOOKBACK_S - 5)  # older: the backfill's
    wired.amo.add_lead(2, updated_at=BASE_TIME + 10)
    wired.amo.add_lead(3, updated_at=BASE_TIME + 20, status_id=143)  # not a trigger stage
    wired.amo.add_lead(4, updated_at=BASE_TIME + 30)
    sink = Sink()

    out = reconcile(wired, state, sink)

    assert sink.ids == [f"sync-2-{BASE_TIME + 10}", f"sync-4-{BASE_TIME + 30}"]
    assert sink.batches[0][0]["data"] == {"lead_id": 2, "source": "reconcile"}
    assert (out["listed"], out["sent"], out["filtered"], out["first_run"]) == (3, 2, 1, True)
    assert stored_cursor(state)["second"] == BASE_TIME + 30
    query = wired.amo.log[0].query
    assert query["filter[updated_at][from]"] == [str(NOW - FIRST_RUN_LOOKBACK_S - 1)]
    assert not any(key.startswith("filter[statuses]") for key in query)  # checked here


def test_nothing_changed_costs_one_request_and_no_store_write(wired, state) -> None:
    wired.add_leads(3)
    reconcile(wired, state, Sink())
    writes, requests = state.puts, wired.amo.list_requests()
    sink = Sink()

    out = reconcile(wired, state, sink)

    assert wired.amo.list_requests() - requests == 1 == out["requests"]
    assert state.puts == writes
    assert sink.calls == 0 and (out["listed"], out["sent"]) == (0, 0)


def test_a_changed_lead_runs_once_per_change(wired, state) -> None:
    """Also the write-back loop: our own PATCH changes `updated_at`, so the lead comes back
    once more (with a new id), and then not again."""
    wired.add_leads(3)
    sink = Sink()
    reconcile(wired, state, sink)
    changed = wired.amo.touch(2, name="edited in amoCRM")

    reconcile(wired, state, sink)
    reconcile(wired, state, sink)

    assert sink.ids[3:] == [f"sync-2-{changed.updated_at}"]


def test_the_cursor_moves_only_past_accepted_events(wired, state) -> None:
    wired.add_leads(12)
    with pytest.raises(UpstreamUnavailable):
        reconcile(wired, state, Sink(fail_on=2), batch_size=5)
    assert stored_cursor(state) == {
        "second": BASE_TIME + 4,
        "seen": [5],
        "saved_at": NOW,
    }
    retry = Sink()
    out = reconcile(wired, state, retry, batch_size=5)
    assert [event["data"]["lead_id"] for batch in retry.batches for event in batch] == list(
        range(6, 13)
    )
    assert out["first_run"] is False


def test_a_page_of_leads_outside_the_trigger_stages_costs_one_cursor_write(wired, state) -> None:
    """Leads the filter drops are passed by the cursor, saved once with the batch, not once
    per lead (each save is a KV round trip on Vercel)."""
    wired.add_leads(200, status_id=143)  # none in a trigger stage, the older ones
    for lead_id in (201, 202):
        wired.amo.add_lead(lead_id, updated_at=BASE_TIME + lead_id)
    before = state.puts
    out = reconcile(wired, state, Sink())
    assert (out["listed"], out["filtered"], out["sent"]) == (202, 200, 2)
    assert state.puts - before <= 3


def test_a_thousand_changed_leads_cost_one_list_request_per_250(wired, state) -> None:
    wired.add_leads(1000)
    out = reconcile(wired, state, Sink())
    assert out["sent"] == 1000
    assert out["requests"] <= 1000 // 250 + 1


def test_reconcile_and_backfill_send_the_same_ids_for_one_lead_version(wired, state) -> None:
    from prometei.sync.backfill import Backfill, BackfillFilters

    wired.add_leads(4)
    from_reconcile, from_backfill = Sink(), Sink()
    reconcile(wired, state, from_reconcile)
    Backfill(wired.client(), from_backfill, None).run(BackfillFilters())
    assert from_reconcile.ids == from_backfill.ids


# ---- the cron function ----------------------------------------------------------------------


OUR_HOOK = f"https://prometei.example.com/api/webhook?token={TEST_SECRETS['AMOCRM_WEBHOOK_SECRET']}"


@pytest.fixture
def fn_env(set_env) -> None:
    # More than the default share, so the test's few requests do not wait on a real clock.
    set_env(AMOCRM_BUDGET_RECONCILE="5", AMOCRM_BUDGET_RUNS="1", AMOCRM_BUDGET_BACKFILL="1")


@pytest.fixture
def live(mock, fn_env) -> Iterator[tuple[WiredAmo, list]]:
    with fake_amo(mock) as wired:
        sent: list = []

        def event_api(request):
            events = json.loads(request.body)
            sent.extend(events)
            return 200, {}, json.dumps({"ids": ["01J"] * len(events), "status": 200})

        mock.add_callback(responses.POST, EVENT_API, callback=event_api)
        yield wired, sent


def cron() -> dict:
    return make_event("inngest/scheduled.timer", {"cron": "*/10 * * * *"})


def test_the_function_is_served_on_its_schedule_and_off_means_absent(set_env) -> None:
    from prometei.config import get_settings
    from prometei.functions import all_functions

    [fn] = [f for f in all_functions(get_settings()) if f.local_id == FN]
    assert fn.get_config("http://app/api/inngest").main.triggers[0].cron == "*/10 * * * *"
    set_env(AMOCRM_RECONCILE_CRON="off")
    assert FN not in {f.local_id for f in all_functions(get_settings())}


def test_a_run_heals_a_lost_webhook_and_reports_a_missing_subscription(
    app_client, live, set_env, caplog
) -> None:
    wired, sent = live
    set_env(PUBLIC_URL="https://prometei.example.com")
    import time

    wired.amo.add_lead(25399013, updated_at=int(time.time()) - 60)  # its webhook never came

    run = run_function(app_client, FN, cron())

    assert run.status == "Completed", run.output
    assert [event["data"]["lead_id"] for event in sent] == [25399013]
    assert run.output["sent"] == 1 and run.output["webhook"]["state"] == "missing"
    assert "none of them to" in caplog.text
    assert wired.amo.webhooks == {}  # no repair without AMOCRM_WEBHOOK_AUTOREPAIR
    assert TEST_SECRETS["AMOCRM_WEBHOOK_SECRET"] not in json.dumps(run.output)


@pytest.mark.parametrize("post_reenables", [True, False], ids=["post-enables", "delete-then-post"])
def test_autorepair_enables_a_disabled_subscription_again(
    app_client, live, set_env, post_reenables
) -> None:
    wired, _ = live
    set_env(PUBLIC_URL="https://prometei.example.com", AMOCRM_WEBHOOK_AUTOREPAIR="1")
    wired.amo.subscribe(OUR_HOOK, ["status_lead"], disabled=True)
    wired.amo.post_reenables_webhook = post_reenables

    run = run_function(app_client, FN, cron())

    assert run.status == "Completed", run.output
    webhook = run.output["webhook"]
    assert (webhook["before"], webhook["state"], webhook["repaired"]) == ("disabled", "ok", True)
    hook = wired.amo.webhooks[OUR_HOOK]
    assert not hook.disabled and hook.settings == ["status_lead"]


def test_autorepair_leaves_a_switch_over_to_the_operator(app_client, live, set_env) -> None:
    wired, _ = live
    set_env(
        PUBLIC_URL="https://prometei.example.com",
        AMOCRM_WEBHOOK_AUTOREPAIR="1",
        AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="1",
    )
    old_url = "https://prometei.example.com/api/amocrm-webhook"
    wired.amo.subscribe(old_url, ["status_lead"])

    run = run_function(app_client, FN, cron())

    assert run.status == "Completed", run.output
    assert run.output["webhook"]["state"] == "temporary"
    assert list(wired.amo.webhooks) == [old_url]  # nothing subscribed behind the operator's back


def test_without_a_public_url_the_webhook_check_is_skipped_not_failed(app_client, live) -> None:
    wired, _ = live
    run = run_function(app_client, FN, cron())
    assert run.status == "Completed", run.output
    assert run.output["webhook"]["state"] == "not_configured"
    assert "PUBLIC_URL" in run.output["webhook"]["fix"]
    assert [(e.method, e.path) for e in wired.amo.log] == [("GET", "/api/v4/leads")]


def test_a_quiet_run_costs_one_list_request_and_one_webhook_list(app_client, live, set_env) -> None:
    """The README's arithmetic: nothing changed, PUBLIC_URL set, our webhook fine."""
    wired, sent = live
    set_env(PUBLIC_URL="https://prometei.example.com")
    wired.amo.subscribe(OUR_HOOK, ["status_lead"])
    assert run_function(app_client, FN, cron()).status == "Completed"  # fixes the cursor
    before = len(wired.amo.log)

    run = run_function(app_client, FN, cron())

    assert run.status == "Completed", run.output
    assert run.output["webhook"]["state"] == "ok" and sent == []
    assert sorted((e.method, e.path) for e in wired.amo.log[before:]) == [
        ("GET", "/api/v4/leads"),
        ("GET", "/api/v4/webhooks"),
    ]
