"""Deal events through the real executor: one `crm/create-deal`, and a batch of 200 that fans
out into 200 runs under ERP_CONCURRENCY, then re-sent without creating anything new."""

from __future__ import annotations

from collections import Counter

from tests.e2e.harness import LEAD_ID_FIELD, Stack, rfc3339_now, wait_until

BATCH = 200


def test_create_deal_writes_one_record(stack: Stack) -> None:
    [ulid] = stack.api.send(
        {
            "name": "crm/create-deal",
            "data": {"dealName": "E2E deal", "amount": 5000, "externalId": "e2e-deal-1"},
            "id": "e2e-deal-1",
        }
    )

    run = stack.api.wait_for_run(ulid)

    assert run["status"] == "Completed", run
    output = run["output"]
    assert (output["status"], output["action"], output["externalId"]) == (
        "done",
        "inserted",
        "e2e-deal-1",
    )
    [record] = stack.records()
    assert record["id"] == output["record_id"]
    assert (record["field_1039"], record["field_1040"], record[f"field_{LEAD_ID_FIELD}"]) == (
        "E2E deal",
        "5000",
        "e2e-deal-1",
    )
    assert stack.executor_calls(run["run_id"]) == 2  # one step + 1


def _batch_event(event_id: str) -> dict:
    deals = [
        {"dealName": f"Batch deal {i}", "amount": 100 + i, "externalId": f"e2e-batch-{i}"}
        for i in range(BATCH)
    ]
    return {"name": "crm/batch-create-deals", "data": {"deals": deals}, "id": event_id}


def _wait_for_deal_runs(stack: Stack, since: str, count: int) -> list[dict]:
    def all_ended() -> list[dict] | None:
        runs = stack.api.function_runs("create-erp-task", since)
        ended = [r for r in runs if r["status"] in ("COMPLETED", "FAILED", "CANCELLED")]
        return runs if len(runs) >= count and len(ended) == len(runs) else None

    return wait_until(
        all_ended, timeout=180, what=f"{count} create-erp-task runs to end", interval=0.5
    )


def test_batch_of_200_writes_200_records_once_and_a_resend_adds_none(stack: Stack) -> None:
    concurrency = int(stack.env["ERP_CONCURRENCY"])
    stack.erp.write_latency_s = 0.05  # each write takes a while, so parallel writes overlap
    since = rfc3339_now()

    [first] = stack.api.send(_batch_event("e2e-batch-a"))
    batch_run = stack.api.wait_for_run(first)
    runs = _wait_for_deal_runs(stack, since, BATCH)

    assert batch_run["status"] == "Completed", batch_run
    assert batch_run["output"]["totals"]["queued"] == BATCH
    assert Counter(run["status"] for run in runs) == {"COMPLETED": BATCH}
    records = stack.records()
    keys = Counter(record[f"field_{LEAD_ID_FIELD}"] for record in records)
    assert len(records) == BATCH and max(keys.values()) == 1  # no duplicates
    assert 2 <= stack.erp.peak_writes <= concurrency

    # The same event again (a redelivery), then the same deals in a new batch (a resend).
    [again] = stack.api.send(_batch_event("e2e-batch-a"))
    [resend] = stack.api.send(_batch_event("e2e-batch-b"))
    assert stack.api.wait_for_run(resend)["status"] == "Completed"
    runs = _wait_for_deal_runs(stack, since, 2 * BATCH)

    assert stack.api.event_runs(again) == []
    assert Counter(run["status"] for run in runs) == {"COMPLETED": 2 * BATCH}
    assert len(stack.records()) == BATCH  # the resend updated, it created nothing
    assert len(stack.erp.actions("update")) == BATCH
    assert stack.erp.peak_writes <= concurrency
