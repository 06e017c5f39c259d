"""The webhook rows: AMOCRM_WEBHOOK_SECRET is set and usable in a URL, and a WARN row for as
long as AMOCRM_WEBHOOK_ALLOW_LEGACY_URL (the switch-over bridge for the TypeScript version's
tokenless webhook URLs) is on."""

from __future__ import annotations

import re

from prometei.config import Settings
from prometei.doctor.check import Check, fail, ok, warn

URL_SAFE_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
MIN_WEBHOOK_SECRET = 16
RANDOM_VALUE_COMMAND = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def legacy_webhook_url(settings: Settings) -> list[Check]:
    """A warning for as long as the switch-over bridge accepts tokenless old webhook URLs."""
    if not settings.amocrm_webhook_allow_legacy_url:
        return []
    origin = settings.public_origin or "https://<your-domain>"
    return [
        warn(
            "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL",
            "on: /api/amocrm-webhook and /api/inngest accept webhooks without ?token= "
            "(account check and fresh fetch still apply); anyone who knows the URL can start "
            "syncs",
            f"in amoCRM (Settings -> Integrations -> Web hooks) use {origin}/api/webhook"
            "?token=<AMOCRM_WEBHOOK_SECRET>, then remove AMOCRM_WEBHOOK_ALLOW_LEGACY_URL",
        )
    ]


def check_webhook_secret(settings: Settings) -> Check:
    """AMOCRM_WEBHOOK_SECRET is set; short or URL-unsafe values are flagged."""
    name = "webhook secret"
    secret = settings.amocrm_webhook_secret
    fix = (
        f"generate one with {RANDOM_VALUE_COMMAND}, set AMOCRM_WEBHOOK_SECRET to it and add "
        "?token=<it> to the webhook URL in amoCRM"
    )
    if secret is None:
        if settings.is_dev:
            return warn(
                name,
                "not set: the intake accepts webhooks without ?token= in dev mode only",
                fix,
            )
        return fail(name, "AMOCRM_WEBHOOK_SECRET is not set: the intake refuses every webhook", fix)
    value = secret.get_secret_value()
    if len(value) < MIN_WEBHOOK_SECRET:
        return warn(name, f"set, but only {len(value)} chars long", fix)
    if not URL_SAFE_RE.match(value):
        return warn(
            name,
            f"set ({len(value)} chars), but has characters that must be percent-encoded in "
            "the webhook URL",
            fix,
        )
    if settings.amocrm_webhook_secret_previous is not None:
        return warn(
            name,
            f"set ({len(value)} chars); AMOCRM_WEBHOOK_SECRET_PREVIOUS is accepted too",
            "once the URL in amoCRM carries ?token=<AMOCRM_WEBHOOK_SECRET>, unset "
            "AMOCRM_WEBHOOK_SECRET_PREVIOUS and redeploy",
        )
    return ok(name, f"set ({len(value)} chars); webhook URLs must carry ?token=<it>")
