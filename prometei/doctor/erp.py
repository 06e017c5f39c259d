"""The erp row: Rukovoditel accepts the API key, username and password (`login` action), and a
WARN row for a plain http:// CRM_API_URL. What a write would do is `prometei.doctor.erp_schema`."""

from __future__ import annotations

from urllib.parse import urlsplit

from prometei.config import Settings
from prometei.doctor.check import DEBUG_FIX, Check, fail, ok, skip, warn
from prometei.errors import (
    PrometeiError,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from prometei.services import Services


def erp_host(settings: Settings, unknown: str = "?") -> str:
    """The host of CRM_API_URL, for a row's text."""
    return urlsplit(settings.crm_api_url or "").hostname or unknown


def plain_http_url(settings: Settings) -> list[Check]:
    """A WARN row for a plain http:// CRM_API_URL: it works, but deserves a change."""
    if urlsplit(settings.crm_api_url or "").scheme != "http":
        return []
    return [
        warn(
            "CRM_API_URL",
            f"plain http:// to {erp_host(settings)}: the ERP API key and password travel "
            "unencrypted with every request",
            "use the https:// address of Rukovoditel's api/rest.php (give the ERP server a "
            "TLS certificate if it has none)",
        )
    ]


def _erp_fix(settings: Settings, exc: PrometeiError) -> str:  # noqa: PLR0911 - one per answer
    message = exc.message
    if "API Key mismatch" in message:
        return "copy the API key from Rukovoditel (Extension -> API) into CRM_API_KEY"
    if "API is not enabled" in message:
        return "enable the REST API in Rukovoditel (Extension -> API settings)"
    if isinstance(exc, UpstreamAuthError):
        return (
            "check CRM_API_USERNAME and CRM_API_PASSWORD, that the user is active and that "
            "this machine's IP is allowed in Rukovoditel's API settings"
        )
    if "is required" in message:
        return "set ERP_REQUEST_FORMAT=form (Rukovoditel before 3.6 ignores JSON bodies)"
    if isinstance(exc, UpstreamUnavailable):
        host = erp_host(settings, "the ERP host")
        return f"check network access to {host}; the ERP server may be down"
    if isinstance(exc, UpstreamProtocolError):
        return "check CRM_API_URL: it must be the full URL of Rukovoditel's api/rest.php"
    return DEBUG_FIX


def check_erp(services: Services) -> Check:
    """Rukovoditel's `login` action with the configured key, username and password."""
    name = "erp"
    settings = services.settings
    if any(
        value is None
        for value in (
            settings.crm_api_url,
            settings.crm_api_key,
            settings.crm_api_username,
            settings.crm_api_password,
        )
    ):
        return skip(name, "not run: an ERP variable is missing (see above)")
    try:
        user = services.erp.login()
    except PrometeiError as exc:
        return fail(name, exc.message, _erp_fix(settings, exc))
    who = user.get("username") or settings.crm_api_username
    return ok(
        name,
        f"login accepted by {erp_host(settings)} as {who} "
        f"(user {user.get('id')}, group {user.get('group_id')})",
    )
