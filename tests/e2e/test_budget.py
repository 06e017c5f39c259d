"""Issue 16's tier: one amoCRM request budget for the whole integration, counted by amoCRM.

Through the real dev server, at the same time: a burst of webhooks for every lead, a backfill
(`python -m prometei backfill`, its own process) and a reconcile run (the cron, invoked). The
fake amoCRM logs every request on arrival, and the test counts the most requests inside any
sliding second: never more than amoCRM's 7, under the default split (runs 5 + backfill 1 +
reconcile 1), with runs that make two amoCRM requests each (a contact read), and with write-back
on (a sync note and the ERP record id written into a lead field: up to three requests a run).
Every lead ends with exactly one ERP record.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.harness import Stack, rfc3339_now, status_change_form, wait_until
from tests.e2e.test_reconcile import YEARLY
from tests.fakes.amocrm import ERP_ID_FIELD

HANDLER = "amocrm-webhook-handler"
AMOCRM_LIMIT = 7
TWO_REQUESTS = '{"field_1039": "contact_name", "field_1040": "price"}'
WRITE_BACK = {"AMOCRM_SYNC_NOTE": "1", "AMOCRM_ERP_ID_FIELD": str(ERP_ID_FIELD)}


@pytest.mark.parametrize(
    ("env", "leads", "first"),
    [
        ({}, 100, 25_700_001),
        ({"ERP_FIELD_MAP": TWO_REQUESTS}, 50, 25_710_001),
        (WRITE_BACK, 20, 25_720_001),
    ],
    ids=["defaults", "two-requests-per-run", "write-back-on"],
)
def test_a_burst_a_backfill_and_a_reconcile_share_seven_requests_a_second(
    make_stack: Callable[..., Stack], env: dict[str, str], leads: int, first: int
) -> None:
    stack = make_stack(AMOCRM_RECONCILE_CRON=YEARLY, **env)
    lead_ids = list(range(first, first + leads))
    for n, lead_id in enumerate(lead_ids):
        stack.amo.add_contact(lead_id, f"Contact {n}")
        stack.amo.add_lead(lead_id, name=f"Lead {n}", price=100 + n, contacts=[lead_id])
    since = rfc3339_now()
    backfill: dict[str, Any] = {}

    def run_backfill() -> None:
        backfill["done"] = stack.cli("backfill", "--batch-size", "25", timeout=600)

    worker = threading.Thread(target=run_backfill)
    worker.start()
    for lead_id in lead_ids:  # the burst: amoCRM posts them as fast as they happen
        stack.webhook(status_change_form(lead_id))
    reconcile = stack.api.invoke_and_wait("amocrm-reconcile")
    worker.join(timeout=600)

    assert backfill["done"].returncode == 0, backfill["done"].stderr
    assert f"{leads} lead(s) listed = {leads} sent" in backfill["done"].stdout
    assert reconcile["status"] == "Completed", reconcile
    # Webhook runs, plus one sync run per lead version (backfill and reconcile share its id).
    expected_runs = 2 * leads
    runs = wait_until(
        lambda: (
            (found := stack.api.function_runs(HANDLER, since))
            and len(found) >= expected_runs
            and all(r["status"] not in ("RUNNING", "QUEUED") for r in found)
            and found
        ),
        timeout=600,
        what=lambda: f"{expected_runs} handler runs to end ({len(stack.records())} records)",
        interval=0.5,
    )
    if env is WRITE_BACK:
        # Our own field write moves a lead's updated_at: a backfill or reconcile that lists the
        # lead after it sends one more sync (a new version), which must change nothing.
        assert Counter(r["status"] for r in runs) == {"COMPLETED": len(runs)}
    else:
        assert Counter(r["status"] for r in runs) == {"COMPLETED": expected_runs}
    records = Counter(row["field_1041"] for row in stack.records())
    assert records == {str(lead_id): 1 for lead_id in lead_ids}  # exactly one each

    peak = stack.amo.peak_rate(1.0)
    assert peak <= AMOCRM_LIMIT, f"{peak} amoCRM requests inside one second"
    # With write-back a run may make three requests, so only one run a second starts.
    busiest = 3 if env is WRITE_BACK else 5
    assert peak >= busiest, f"only {peak} requests in the busiest second: the budget sat idle"
    reads = sum(stack.amo.lead_reads(lead_id) for lead_id in lead_ids)
    assert reads == len(runs)
    contacts = len([e for e in stack.amo.log if e.path.startswith("/api/v4/contacts/")])
    assert contacts == (expected_runs if "ERP_FIELD_MAP" in env else 0)
    if env is WRITE_BACK:
        # Whichever of a lead's two runs came first created the record and wrote back; the
        # other found nothing changed and wrote nothing, to the ERP or to the lead.
        assert {lead_id: len(stack.amo.notes_of(lead_id)) for lead_id in lead_ids} == {
            lead_id: 1 for lead_id in lead_ids
        }
        assert all(stack.amo.writes("PATCH", lead_id) == 1 for lead_id in lead_ids)
