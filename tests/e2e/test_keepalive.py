"""The keepalive cron under the real executor, in OAuth mode with tokens in KV (the shim)."""

from __future__ import annotations

from collections.abc import Callable

from prometei.functions.keepalive import CRON
from tests.e2e.harness import Stack, status_change_form
from tests.support.fake_amo_oauth import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI
from tests.support.kvshim import running_shim

SEED_REFRESH = "e2e-seed-refresh-SECRET"


def test_keepalive_is_registered_with_its_schedule_and_an_invoked_run_refreshes(
    make_stack: Callable[..., Stack],
) -> None:
    with running_shim() as shim:
        stack = make_stack(
            AMOCRM_ACCESS_TOKEN="",
            AMOCRM_CLIENT_ID=CLIENT_ID,
            AMOCRM_CLIENT_SECRET=CLIENT_SECRET,
            AMOCRM_REDIRECT_URI=REDIRECT_URI,
            AMOCRM_REFRESH_TOKEN=SEED_REFRESH,
            KV_REST_API_URL=shim.url,
            KV_REST_API_TOKEN=shim.token,
        )
        stack.amo.oauth.live_refresh.add(SEED_REFRESH)
        function = stack.api.functions()["amocrm-token-keepalive"]
        run = stack.api.invoke_and_wait("amocrm-token-keepalive")

        assert function["triggers"] == [{"cron": CRON}]
        assert run["status"] == "Completed", run
        assert run["output"]["status"] == "refreshed"
        assert run["output"]["host"] == "example.amocrm.ru"
        assert stack.amo.oauth.refresh_requests == 1
        assert SEED_REFRESH not in stack.amo.oauth.live_refresh  # rotated: the seed is spent
        assert list(shim.redis.scan_iter())  # the new pair lives in KV

        # The rotated pair works for the pipeline: a lead syncs with the new access token.
        stack.amo.add_lead(25_599_001)
        answer = stack.webhook(status_change_form(25_599_001))
        lead_run = stack.api.wait_for_run(answer["inngest_ids"][0])
        assert lead_run["status"] == "Completed", lead_run
        assert stack.amo.oauth.refresh_requests == 1  # no second refresh was needed
