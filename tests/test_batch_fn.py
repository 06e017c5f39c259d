"""batch-create-crm-deals end to end: batch run -> event API -> one create-erp-task run per deal.

The Inngest event API is a small fake bus on `responses`: it records what the batch run posts,
drops ids it has already seen (Inngest's 24 h event-id dedupe) and queues the rest; `deliver()`
then plays Inngest starting one create-erp-task run per queued event, over the signed protocol.
Rukovoditel is the stateful fake from tests.fakes.rukovoditel.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import inngest
import pytest
import requests
import responses
from inngest.experimental import mocked

from tests.conftest import EVENT_API, TEST_SECRETS
from tests.support.executor import Run, make_event, run_function

BATCH_FN = "batch-create-crm-deals"
DEAL_FN = "create-erp-task"
BATCH_ID = "01JBATCH0000000000000000AB"
HTML = {"Content-Type": "text/html; charset=UTF-8"}


@dataclass
class FakeBus:
    """Inngest's event API as far as these functions can tell."""

    seen: set[str] = field(default_factory=set)
    queue: list[dict[str, Any]] = field(default_factory=list)
    posts: list[list[dict[str, Any]]] = field(default_factory=list)
    # faults for the next posts: "502" (nothing accepted) or "lost" (accepted, answer lost)
    faults: list[str] = field(default_factory=list)

    def install(self, mock: responses.RequestsMock) -> FakeBus:
        mock.add_callback(responses.POST, EVENT_API, callback=self._handle)
        return self

    def _handle(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        events = json.loads(request.body or b"[]")
        self.posts.append(events)
        fault = self.faults.pop(0) if self.faults else None
        if fault == "502":
            return 502, {}, "Bad Gateway"
        for event in events:
            if event.get("id") and event["id"] in self.seen:
                continue  # a repeated id is accepted but starts nothing
            self.seen.add(event["id"])
            self.queue.append(event)
        if fault == "lost":
            raise requests.exceptions.ReadTimeout("answer lost")
        ids = [f"01INTERNAL{i:06d}" for i in range(len(events))]
        return 200, {}, json.dumps({"ids": ids, "status": 200})

    def take(self) -> list[dict[str, Any]]:
        events, self.queue = self.queue, []
        return events


@pytest.fixture
def bus(mock) -> FakeBus:
    return FakeBus().install(mock)


def deliver(app_client, bus: FakeBus) -> list[Run]:
    """Start one create-erp-task run per event the bus accepted (as Inngest would)."""
    runs = []
    for event in bus.take():
        delivered = {**event, "ts": 1_763_700_000_000}
        runs.append(run_function(app_client, DEAL_FN, delivered))
    return runs


def batch_of(n: int, **extra: Any) -> dict[str, Any]:
    deals = [{"dealName": f"Deal {i}", "amount": i * 100} for i in range(1, n + 1)]
    return make_event("crm/batch-create-deals", {"deals": deals, **extra}, BATCH_ID)


def name_is(*names: str):
    return lambda params: params.get("items", {}).get("field_1039") in names


def test_fifty_deals_with_two_flaky_ones_make_exactly_fifty_records(app_client, erp, bus) -> None:
    # Deals 7 and 23 fail twice each (503, then a timeout) before the ERP takes them.
    for name in ("Deal 7", "Deal 23"):
        erp.fail_next("insert", (503, HTML, "<html>busy</html>"), match=name_is(name))
        erp.fail_next("insert", requests.exceptions.ConnectTimeout, match=name_is(name))

    batch = run_function(app_client, BATCH_FN, batch_of(50))

    assert batch.status == "Completed", batch.output
    assert batch.output["totals"] == {"deals": 50, "queued": 50, "invalid": 0, "events_sent": 50}
    assert list(batch.steps) == ["send-deals-1"]
    assert erp.calls == []  # the batch itself never writes

    runs = deliver(app_client, bus)

    assert len(runs) == 50
    assert all(r.status == "Completed" for r in runs), [r.output for r in runs]
    names = [row["field_1039"] for row in erp.rows[70]]
    assert len(names) == 50
    assert Counter(names) == Counter(f"Deal {i}" for i in range(1, 51))
    assert len({row["id"] for row in erp.rows[70]}) == 50
    assert len(erp.actions("insert")) == 54  # 50 that landed + 4 refused attempts
    retried = {r.output["dealName"]: r for r in runs if r.calls > 2}
    assert set(retried) == {"Deal 7", "Deal 23"}
    for run in retried.values():
        assert [op["op"] for op in run.step_outputs] == ["StepError", "StepError", "StepRun"]
    # each deal's run output points back at the batch
    assert {(r.output["batchId"], r.output["batchIndex"]) for r in runs} == {
        (BATCH_ID, i) for i in range(50)
    }


def test_same_batch_event_twice_creates_nothing_new(app_client, erp, bus) -> None:
    event = batch_of(50)
    first = run_function(app_client, BATCH_FN, event)
    assert first.status == "Completed"
    assert len(deliver(app_client, bus)) == 50
    assert len(erp.rows[70]) == 50

    second = run_function(app_client, BATCH_FN, event)  # redelivery / rerun of the same event

    assert second.status == "Completed"
    assert [e["id"] for e in bus.posts[1]] == [e["id"] for e in bus.posts[0]]
    assert deliver(app_client, bus) == []
    assert len(erp.rows[70]) == 50
    assert len(erp.actions("insert")) == 50


def test_a_lost_send_answer_is_retried_with_the_same_ids(app_client, erp, bus) -> None:
    bus.faults = ["502", "lost"]  # first post refused, second accepted but the answer lost

    batch = run_function(app_client, BATCH_FN, batch_of(5))

    assert batch.status == "Completed", batch.output
    assert len(bus.posts) == 3
    assert [e["id"] for e in bus.posts[2]] == [e["id"] for e in bus.posts[1]]
    runs = deliver(app_client, bus)
    assert len(runs) == 5
    assert len(erp.rows[70]) == 5


def test_lost_erp_answer_in_a_batch_updates_with_the_derived_external_id(
    app_client, erp, bus, set_env
) -> None:
    set_env(ERP_LEAD_ID_FIELD="1041")
    erp.fail_next(
        "insert", requests.exceptions.ReadTimeout, after_effect=True, match=name_is("Deal 7")
    )

    run_function(app_client, BATCH_FN, batch_of(10))
    runs = deliver(app_client, bus)

    assert all(r.status == "Completed" for r in runs)
    assert len(erp.rows[70]) == 10
    external_ids = [row["field_1041"] for row in erp.rows[70]]
    assert sorted(external_ids) == sorted(f"{BATCH_ID}-{i}" for i in range(10))
    by_name = {r.output["dealName"]: r.output for r in runs}
    assert by_name["Deal 7"]["action"] == "updated"
    assert by_name["Deal 8"]["action"] == "inserted"


def test_mixed_valid_and_invalid_items(app_client, erp, bus) -> None:
    deals = [
        {"dealName": "A", "amount": 10},
        {"dealName": "  ", "amount": -1},
        {"dealName": "C", "externalId": "crm-3"},
        {"amount": "x"},
        {"dealName": "E", "entityId": 25},
    ]
    batch = run_function(
        app_client, BATCH_FN, make_event("crm/batch-create-deals", {"deals": deals}, BATCH_ID)
    )

    assert batch.status == "Completed", batch.output
    out = batch.output
    assert out["status"] == "dispatched_with_invalid"
    assert out["totals"] == {"deals": 5, "queued": 3, "invalid": 2, "events_sent": 3}
    assert [d["status"] for d in out["deals"]] == [
        "queued",
        "invalid",
        "queued",
        "invalid",
        "queued",
    ]
    assert out["deals"][0]["eventId"] == f"{BATCH_ID}-0"
    assert out["deals"][2]["externalId"] == "crm-3"
    assert out["deals"][1]["problems"][0].startswith("deals[1].dealName: must be 1")
    assert out["deals"][3]["problems"][0].startswith("deals[3].dealName: is required")
    assert "deals[3].amount" in out["deals"][3]["problems"][1]

    runs = deliver(app_client, bus)
    assert sorted(r.output["batchIndex"] for r in runs) == [0, 2, 4]
    assert sorted(row["field_1039"] for row in erp.rows[70]) == ["A", "C"]
    # entity 25's own heading field takes the name (field ids belong to one entity)
    assert [row["field_213"] for row in erp.rows[25]] == ["E"]


def test_all_invalid_fails_the_batch_at_once(app_client, erp, bus) -> None:
    batch = run_function(
        app_client,
        BATCH_FN,
        make_event("crm/batch-create-deals", {"deals": [{"dealName": ""}, {}]}, BATCH_ID),
    )
    assert batch.status == "Failed"
    assert batch.calls == 1
    assert batch.output["message"].startswith("no valid deal in the batch: deals[0].dealName")
    assert "deals[1].dealName: is required" in batch.output["message"]
    assert bus.posts == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "deals: is required"),
        ({"deals": {"dealName": "A"}}, "deals: must be a list"),
        ({"deals": [{"dealName": "A"}] * 1001}, "at most 1000 deals (got 1001)"),
    ],
)
def test_bad_container_fails_without_sending(app_client, bus, data, expected) -> None:
    batch = run_function(app_client, BATCH_FN, make_event("crm/batch-create-deals", data))
    assert batch.status == "Failed"
    assert batch.calls == 1
    assert expected in batch.output["message"]
    assert bus.posts == []


def test_thousand_deals_go_out_in_chunks_of_at_most_100(app_client, bus) -> None:
    batch = run_function(app_client, BATCH_FN, batch_of(1000))

    assert batch.status == "Completed", batch.output
    assert list(batch.steps) == [f"send-deals-{n}" for n in range(1, 11)]
    assert [len(p) for p in bus.posts] == [100] * 10
    ids = [e["id"] for p in bus.posts for e in p]
    assert ids == [f"{BATCH_ID}-{i}" for i in range(1000)]
    assert batch.steps["send-deals-10"] == {"sent": 100, "first_index": 900, "last_index": 999}
    assert batch.output["totals"]["events_sent"] == 1000
    assert len(batch.output["deals"]) == 1000
    assert batch.calls == 11


def test_batch_output_has_no_secrets(app_client, erp, bus) -> None:
    batch = run_function(app_client, BATCH_FN, batch_of(3))
    runs = deliver(app_client, bus)
    dumped = json.dumps([batch.responses, [r.responses for r in runs]], default=str)
    for name, secret in TEST_SECRETS.items():
        assert secret not in dumped, name


def test_sync_advertises_the_batch_trigger(app_client) -> None:
    from tests.test_create_deal_fn import _synced_functions

    fn = _synced_functions(app_client)[f"prometei-ingest-{BATCH_FN}"]
    assert [t["event"] for t in fn["triggers"]] == ["crm/batch-create-deals"]
    assert "idempotency" not in fn  # see the module docstring: event ids already dedupe


def test_mocked_output_lists_every_deal() -> None:
    from prometei.functions import batch_deals
    from prometei.services import get_services

    fn = batch_deals.build(get_services().settings)
    result = mocked.trigger(
        fn,
        inngest.Event(
            name="crm/batch-create-deals",
            id="B9",
            data={"deals": [{"dealName": "A"}, {"dealName": 5}]},
        ),
        mocked.Inngest(app_id="prometei-ingest"),
        step_stubs={"send-deals-1": {"sent": 1, "first_index": 0, "last_index": 0}},
    )
    assert result.status is mocked.Status.COMPLETED, result.error
    assert result.output["deals"] == [
        {
            "index": 0,
            "status": "queued",
            "eventId": "B9-0",
            "externalId": "B9-0",
            "dealName": "A",
        },
        {
            "index": 1,
            "status": "invalid",
            "problems": [result.output["deals"][1]["problems"][0]],
        },
    ]
    assert result.output["deals"][1]["problems"][0].startswith("deals[1].dealName: must be")
