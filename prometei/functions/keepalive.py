"""`amocrm-token-keepalive`: keep the amoCRM refresh token from lapsing.

amoCRM refresh tokens are single-use and die when unused for 3 months (reference amocrm.md
§2.5). Lead traffic refreshes the pair on demand, but a quiet account (holidays, a paused
pipeline) could go a whole quarter without one and then need a person to reconnect. This cron
function runs daily and refreshes the pair when it is older than `REFRESH_AFTER`.

Why 7 days: a daily run with a 7-day threshold keeps every pair younger than about 8 days, so
the 90-day window has ~80 days of slack for a broken deploy or paused cron before anything
lapses, while rotating the single-use refresh token only ~4 times a month (each rotation is a
moment where a lost answer could spend the token; the provider's KV lock makes it safe, but
fewer is still better). Refreshing daily would buy nothing; monthly would leave too little
room to notice a failure.

Outcomes (the run output is plain JSON, never a token):
- long-lived token mode (AMOCRM_ACCESS_TOKEN): completes as `skipped`, nothing to keep alive.
- not connected / tokens revoked / OAuth variables missing: the run *fails* (non-retriable)
  with a message saying how to reconnect, so an unconnected deployment shows up red in the
  Inngest dashboard every day instead of hiding behind a green "skipped".
- otherwise `refreshed` or `fresh`, with the access-token expiry, the age the pair had when
  checked, and the date by which its refresh token would lapse if nothing refreshed it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import inngest

from prometei.errors import ReconnectRequired
from prometei.functions.boundary import run_step, skipped
from prometei.functions.client import definitions
from prometei.logs import log_context
from prometei.services import get_services

FN_ID = "amocrm-token-keepalive"
CRON = "TZ=UTC 17 3 * * *"  # daily at 03:17 UTC, off the round hour
REFRESH_AFTER_S = 7 * 24 * 3600
REFRESH_TOKEN_LIFETIME_S = 90 * 24 * 3600  # amoCRM: unused refresh tokens die after 3 months
RECONNECT_HINT = (
    "to reconnect, open /api/oauth/callback on this deployment and click 'Connect amoCRM' "
    "(as an administrator of the amoCRM account)"
)


def _iso(value: Any) -> str | None:
    """Unix seconds (or ISO text) as ISO 8601 UTC; None stays None."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _age_s(status: Mapping[str, Any], now: int) -> int | None:
    rotated_at = status.get("refreshed_at") or status.get("obtained_at")
    if isinstance(rotated_at, int | float) and not isinstance(rotated_at, bool):
        return now - int(rotated_at)
    return None


def keep_alive(max_age_s: int) -> dict[str, Any]:
    """Step body: refresh the pair when older than `max_age_s`; plain JSON out.

    The provider does the work under the store's refresh lock (and seeds an empty store from
    AMOCRM_REFRESH_TOKEN when set); an empty store without a seed, or a revoked pair, is its
    `ReconnectRequired`, which fails the run without retries.
    """
    services = get_services()
    settings = services.settings
    settings.require_oauth()
    tokens = services.tokens
    now = int(time.time())
    age_s = _age_s(tokens.status(), now)
    result = tokens.refresh_if_older_than(max_age_s)
    after = tokens.status()
    if not after.get("connected"):
        problem = after.get("problem") or "amoCRM is not connected"
        raise ReconnectRequired(f"{problem}; {RECONNECT_HINT}")
    rotated_at = now - (_age_s(after, now) or 0)
    return {
        "refreshed": bool(result.get("refreshed")),
        "expires_at": _iso(result.get("expires_at", after.get("expires_at"))),
        "age_days": round(age_s / 86400, 1) if age_s is not None else None,
        "refresh_after_days": max_age_s // 86400,
        "refresh_token_lapses_by": _iso(rotated_at + REFRESH_TOKEN_LIFETIME_S),
        "host": after.get("host"),
    }


@definitions.create_function(
    fn_id=FN_ID,
    name="amoCRM token keepalive",
    trigger=inngest.TriggerCron(cron=CRON),
    # One at a time: refresh tokens are single-use (the provider also locks in the store).
    concurrency=[inngest.Concurrency(limit=1)],
    retries=3,
)
def amocrm_token_keepalive(ctx: inngest.ContextSync) -> dict[str, Any]:
    settings = get_services().settings
    if settings.uses_long_lived_token:
        return skipped(
            "long-lived token mode (AMOCRM_ACCESS_TOKEN is set): there is no refresh token "
            "to keep alive; replace the token in amoCRM before it expires"
        )
    with log_context(run_id=ctx.run_id, fn_id=FN_ID):
        # Our errors are translated inside the step: not connected / revoked / missing
        # variables fail the run at once with the message saying what to do.
        outcome = run_step(ctx, "refresh-if-old", keep_alive, REFRESH_AFTER_S)
        status = "refreshed" if outcome.get("refreshed") else "fresh"
        ctx.logger.info(
            "amoCRM token keepalive: %s; access token valid until %s",
            status,
            outcome.get("expires_at"),
        )
        return {"status": status, **outcome}
