"""The amoCRM rows: the token is accepted by the configured account, our webhook subscription
is there (`prometei.amocrm.subscriptions`), and a WARN row while AMOCRM_API_BASE_URL sends the
traffic elsewhere. The write-back rows are in `prometei.doctor.amocrm_writeback`."""

from __future__ import annotations

from prometei.config import Settings
from prometei.doctor.check import DEBUG_FIX, Check, fail, ok, passed, skip, warn
from prometei.errors import (
    ConfigError,
    PrometeiError,
    ReconnectRequired,
    UpstreamAuthError,
    UpstreamError,
    UpstreamUnavailable,
)
from prometei.services import Services


def token_kind(settings: Settings) -> str:
    return "long-lived token" if settings.uses_long_lived_token else "OAuth"


def api_base_override(settings: Settings) -> list[Check]:
    """A WARN row while AMOCRM_API_BASE_URL sends amoCRM traffic somewhere else."""
    base = settings.amocrm_api_base_url
    if base is None:
        return []
    return [
        warn(
            "AMOCRM_API_BASE_URL",
            f"every amoCRM API and token request goes to {base}, not to the account host "
            f"({settings.amocrm_host if settings.amocrm_subdomain else '?'})",
            "leave AMOCRM_API_BASE_URL empty in production; set it only for tests or a proxy "
            "you run",
        )
    ]


def _connect_hint(settings: Settings) -> str:
    page = settings.amocrm_redirect_uri or "https://<your-domain>/api/oauth/callback"
    return f"reconnect: open {page} and click 'Connect amoCRM' (as an account administrator)"


def _amocrm_fix(settings: Settings, exc: PrometeiError) -> str:  # noqa: PLR0911 - one per answer
    status = exc.status if isinstance(exc, UpstreamError) else None
    if isinstance(exc, ConfigError):
        return "check AMOCRM_SUBDOMAIN and AMOCRM_BASE_DOMAIN (amocrm.ru, amocrm.com, kommo.com)"
    if isinstance(exc, ReconnectRequired):
        return _connect_hint(settings)
    if status == 401 or (isinstance(exc, UpstreamAuthError) and status is None):
        if settings.uses_long_lived_token:
            return (
                "create a new long-lived token in amoCRM (Settings -> Integrations -> your "
                "integration -> Keys and scopes) and set AMOCRM_ACCESS_TOKEN"
            )
        return _connect_hint(settings)
    if status == 402:
        return "renew the amoCRM subscription; the API stays closed until the account is paid"
    if status == 403:
        return (
            "ask amoCRM support whether the account is blocked for exceeding the rate limit, "
            "check the account's IP whitelist and the integration's access rights"
        )
    if status == 429:
        return (
            "wait a minute and run doctor again; something uses more than this integration's "
            "7 requests/s (check the AMOCRM_BUDGET_* shares and other tools using the "
            "integration's token)"
        )
    if isinstance(exc, UpstreamUnavailable):
        return f"check network access to {settings.amocrm_host}; retry later if amoCRM is down"
    return DEBUG_FIX


def check_amocrm(services: Services) -> Check:
    """The token is accepted and belongs to AMOCRM_SUBDOMAIN (and AMOCRM_ACCOUNT_ID if set)."""
    name = "amocrm"
    settings = services.settings
    if not settings.amocrm_subdomain:
        return skip(name, "not run: AMOCRM_SUBDOMAIN is not set (see above)")
    if not settings.uses_long_lived_token and not (
        settings.amocrm_client_id and settings.amocrm_client_secret
    ):
        return skip(name, "not run: no amoCRM token configuration (see above)")
    try:
        account = services.amocrm_housekeeping.account()
    except PrometeiError as exc:
        return fail(name, exc.message, _amocrm_fix(settings, exc))
    subdomain = str(account.get("subdomain") or "")
    if subdomain and subdomain != settings.amocrm_subdomain:
        return fail(
            name,
            f"the token belongs to account {subdomain!r}, not {settings.amocrm_subdomain!r}",
            "use a token of the configured account, or correct AMOCRM_SUBDOMAIN",
        )
    expected_id = settings.amocrm_account_id
    if expected_id is not None and account.get("id") != expected_id:
        return fail(
            name,
            f"the account id is {account.get('id')}, but AMOCRM_ACCOUNT_ID is {expected_id}",
            f"set AMOCRM_ACCOUNT_ID={account.get('id')} (or leave it empty)",
        )
    label = f" {account.get('name')!r}" if account.get("name") else ""
    return ok(
        name,
        f"{token_kind(settings)} accepted by {settings.amocrm_host}: "
        f"account {account.get('id')}{label}",
    )


def check_webhook_subscription(services: Services, *, amocrm: Check | None) -> Check:
    """Our subscription in amoCRM: there, enabled, subscribed to lead status changes."""
    from prometei.amocrm import subscriptions

    name = "webhook subscription"
    settings = services.settings
    if not passed(amocrm):
        return skip(name, "not run: the amocrm row did not pass (see above)")
    api = subscriptions.WebhooksAPI(services.amocrm_housekeeping)
    health = subscriptions.check(settings, api)
    if health.ok:
        return ok(name, health.detail)
    if health.state == "not_configured" and settings.is_dev:
        return skip(name, f"not run: {health.detail}")
    if health.state in ("temporary", "not_configured", "unknown"):
        # It delivers for now, or we cannot tell: worth a look, not a failure.
        return warn(name, health.detail, health.fix)
    return fail(name, health.detail, health.fix)
