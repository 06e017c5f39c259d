"""Batch: 1000 deals through `batch-create-crm-deals` and the per-deal fan-out (counted).

The batch event is played against `/api/inngest` by the signed executor driver; its fan-out
events go to a fake Inngest event API (records them, drops repeated ids like Inngest's 24 h
dedupe), and every queued `crm/create-deal` event is then played as its own
`create-erp-task` run. Rukovoditel is the stateful fake from tests/fakes/rukovoditel.py, which
counts every request and keeps the rows, so duplicates are counted, not assumed. One driver
call is one Vercel invocation; server-side flow control (ERP_CONCURRENCY) is not simulated.
Failure scenarios inject one fault for deal #500: a 503 (retried), an insert that landed but
whose answer was lost (retried; with ERP_LEAD_ID_FIELD the retry finds the record), and a
permanent ERP error. The TypeScript reference is computed from its documented flow: the old
batch wrote every deal inside one step, so a failure retried the whole step.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any

import requests
import responses

from bench import Section, Table, verdict
from bench.economy import BASE_ENV, ERP_CREDENTIALS, ERP_URL, EventBus, inngest_client, project_env

DEALS = 1000
FAILING = 500  # 1-based position of the deal that fails
BATCH_FN = "batch-create-crm-deals"
DEAL_FN = "create-erp-task"
HTML = {"Content-Type": "text/html; charset=UTF-8"}


@dataclass
class BatchOutcome:
    label: str
    runs: int
    failed_runs: int
    invocations: int
    erp_requests: int
    erp_writes: int
    records: int
    duplicates: int
    seconds: float
    setup: str = "plain"  # plain | lookup (ERP_LEAD_ID_FIELD set)


def _deal_name(n: int) -> str:
    return f"Deal {n:04d}"


def one_batch(label: str, fault: str | None = None, *, lookup_field: bool = False) -> BatchOutcome:
    from tests.fakes.rukovoditel import FakeRukovoditel
    from tests.support.executor import make_event, run_function

    state_dir = tempfile.TemporaryDirectory()  # the state store must not land in the repository
    env = dict(
        BASE_ENV, AMOCRM_ACCESS_TOKEN="bench-long-lived-token", PROMETEI_STATE_DIR=state_dir.name
    )
    if lookup_field:
        env["ERP_LEAD_ID_FIELD"] = "1041"
    started = time.perf_counter()
    with (
        state_dir,
        project_env(env),
        responses.RequestsMock(assert_all_requests_are_fired=False) as mock,
    ):
        erp = FakeRukovoditel(ERP_URL, **ERP_CREDENTIALS).install(mock)
        bus = EventBus().install(mock)
        failing = _deal_name(FAILING)

        def is_failing(params: dict[str, Any]) -> bool:
            return (params.get("items") or {}).get("field_1039") == failing

        if fault == "503":
            erp.fail_next(
                "insert", (503, HTML, "<html>Service Unavailable</html>"), match=is_failing
            )
        elif fault == "lost":
            erp.fail_next(
                "insert", requests.exceptions.ReadTimeout, after_effect=True, match=is_failing
            )
        elif fault == "permanent":
            erp.fail_next(
                "insert",
                (
                    200,
                    HTML,
                    '{"status":"error","error_code":"","error_message":"field_1040 '
                    'not exist in entity 70"}',
                ),
                match=is_failing,
            )
        client = inngest_client()
        deals = [{"dealName": _deal_name(n), "amount": 1000 + n} for n in range(1, DEALS + 1)]
        batch = run_function(
            client, BATCH_FN, make_event("crm/batch-create-deals", {"deals": deals})
        )
        if batch.status != "Completed":
            raise RuntimeError(f"batch run failed: {batch.output}")
        runs, failed, invocations = 1, 0, batch.calls
        for event in bus.take():
            deal_run = run_function(client, DEAL_FN, event)
            runs += 1
            invocations += deal_run.calls
            failed += deal_run.status != "Completed"
        rows = [row for table in erp.rows.values() for row in table]
        names = [row.get("field_1039") for row in rows]
    return BatchOutcome(
        label=label,
        runs=runs,
        failed_runs=failed,
        invocations=invocations,
        erp_requests=len(erp.calls),
        erp_writes=len(erp.actions("insert")) + len(erp.actions("update")),
        records=len(rows),
        duplicates=len(names) - len(set(names)),
        seconds=time.perf_counter() - started,
        setup="lookup" if lookup_field else "plain",
    )


def ts_reference(fault: str | None) -> BatchOutcome:
    """One step writes every deal in order; any error makes the whole step run again.

    A 503 or a lost answer at deal k is retried once (then succeeds); a permanent error is
    retried like any other with inngest-js's default of 3 retries (4 attempts), then fails.
    """
    k = FAILING
    if fault is None:
        attempts, write_requests, records = 1, DEALS, DEALS
    elif fault == "503":  # k-1 inserts + the refused one, then all of them again
        attempts, write_requests, records = 2, k + DEALS, (k - 1) + DEALS
    elif fault == "lost":  # k inserts (the k-th landed), then all of them again
        attempts, write_requests, records = 2, k + DEALS, k + DEALS
    else:
        attempts = 4
        write_requests, records = attempts * k, attempts * (k - 1)
    unique = DEALS if fault != "permanent" else k - 1
    return BatchOutcome(
        label=f"TypeScript reference, {fault or 'no fault'} (computed)",
        runs=1,
        failed_runs=1 if fault == "permanent" else 0,
        invocations=attempts + 1,
        erp_requests=write_requests,
        erp_writes=write_requests,
        records=records,
        duplicates=records - unique,
        seconds=float("nan"),
    )


def run(quick: bool = False) -> Section:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    started = time.perf_counter()
    outcomes = [
        ts_reference(None),
        one_batch("prometei, no fault"),
        ts_reference("503"),
        one_batch(f"prometei, deal #{FAILING}: ERP 503 once", "503"),
        ts_reference("lost"),
        one_batch("prometei, no fault, ERP_LEAD_ID_FIELD set", lookup_field=True),
        one_batch(
            f"prometei, deal #{FAILING}: insert landed, answer lost (ERP_LEAD_ID_FIELD set)",
            "lost",
            lookup_field=True,
        ),
        ts_reference("permanent"),
        one_batch(f"prometei, deal #{FAILING}: permanent ERP error", "permanent"),
    ]
    del quick  # counted, not timed: one pass per scenario is exact
    clean = outcomes[1]
    table = Table(
        [
            "scenario",
            "runs",
            "failed runs",
            "/api/inngest invocations",
            "ERP requests",
            "ERP write requests",
            "writes target 1000",
            "ERP records",
            "duplicate records",
            "extra invocations vs no fault",
            "extra ERP requests vs no fault",
            "wall s (in-process)",
        ],
        caption=f"{DEALS} deals in one `crm/batch-create-deals` event",
    )
    # extras are counted against the no-fault run of the same setup
    baselines = {o.setup: o for o in outcomes if "no fault" in o.label and o.runs > 1}
    for o in outcomes:
        ours = not o.label.startswith("TypeScript")
        baseline = baselines.get(o.setup, clean)
        table.add(
            o.label,
            o.runs,
            o.failed_runs,
            o.invocations,
            o.erp_requests,
            o.erp_writes,
            verdict(o.erp_writes == DEALS) if ours and "no fault" in o.label else "-",
            o.records,
            o.duplicates,
            o.invocations - baseline.invocations if ours else "-",
            o.erp_requests - baseline.erp_requests if ours else "-",
            o.seconds,
        )
    notes = [
        f"Fan-out: the batch run sends {DEALS} events in steps of 100 "
        f"({clean.runs - 1} create-erp-task runs, 2 invocations each: one step + the final call).",
        "One failing deal costs only its own retry: one more invocation and one more ERP "
        "request for a 503; with ERP_LEAD_ID_FIELD a lost answer costs a lookup and an update "
        "instead of a second record. A permanent error fails that one run at once (no retry) "
        "and the other 999 deals are written.",
        "With ERP_LEAD_ID_FIELD set every fan-out deal has an externalId, so each write is "
        "select + insert (2 ERP requests per deal).",
    ]
    return Section(
        key="batch",
        title="5. Batch of 1000 deals",
        method=__doc__ or "",
        tables=[table],
        notes=notes,
        seconds=time.perf_counter() - started,
    )


if __name__ == "__main__":
    print(run().text())
