"""amocrm-reconcile through the real dev server: a lead whose webhook was dropped is synced by
the cron's run, a lead whose webhook arrived keeps its one record, our missing subscription is
registered again (AMOCRM_WEBHOOK_AUTOREPAIR), and a second run with nothing new costs one list
request."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.harness import WEBHOOK_SECRET, Stack, status_change_form

PUBLIC = "https://prometei.example.test"
# Registered with a real schedule that will not fire during the test: the test invokes it.
YEARLY = "0 0 1 1 *"
SLUG = "amocrm-reconcile"


def test_reconcile_heals_a_dropped_webhook_and_re_registers_ours(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(
        AMOCRM_RECONCILE_CRON=YEARLY, PUBLIC_URL=PUBLIC, AMOCRM_WEBHOOK_AUTOREPAIR="1"
    )
    assert stack.api.functions()[SLUG]["triggers"] == [{"cron": YEARLY}]
    delivered, dropped = 25_598_001, 25_598_002
    stack.amo.add_lead(delivered, name="Delivered", price=100)
    stack.amo.add_lead(dropped, name="Dropped", price=200)
    first = stack.webhook(status_change_form(delivered))
    assert stack.api.wait_for_run(first["inngest_ids"][0])["output"]["action"] == "inserted"
    # The webhook of `dropped` never arrives: Vercel was down, amoCRM gave up.

    run = stack.api.invoke_and_wait(SLUG)

    assert run["status"] == "Completed", run
    output = run["output"]
    assert (output["listed"], output["sent"], output["first_run"]) == (2, 2, True)
    assert output["webhook"]["before"] == "missing" and output["webhook"]["repaired"] is True
    ours = f"{PUBLIC}/api/webhook?token={WEBHOOK_SECRET}"
    assert list(stack.amo.webhooks) == [ours]
    assert stack.amo.webhooks[ours].settings == ["status_lead"]
    healed = {
        lead_id: stack.api.wait_for_run(
            stack.api.ulids_of(
                "amocrm/lead.sync", f"sync-{lead_id}-{stack.amo.leads[lead_id].updated_at}"
            )[0]
        )
        for lead_id in (delivered, dropped)
    }
    assert healed[dropped]["output"]["action"] == "inserted"
    [record] = stack.records_of_lead(dropped)
    assert (record["field_1039"], record["field_1040"]) == ("Dropped", "200")
    # The lead its webhook had synced: one more run, the same one record (an upsert).
    assert healed[delivered]["output"]["action"] == "updated"
    assert len(stack.records_of_lead(delivered)) == 1

    lists_before = stack.amo.list_requests()
    again = stack.api.invoke_and_wait(SLUG)

    assert again["status"] == "Completed", again
    assert (again["output"]["listed"], again["output"]["sent"]) == (0, 0)
    assert again["output"]["webhook"]["state"] == "ok"
    assert stack.amo.list_requests() - lists_before == 1  # the steady state: one request
