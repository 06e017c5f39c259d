"""Operator health checks: is every part of the pipeline configured and reachable?

Each check is a plain function returning `Check(name, ok, detail, fix)`, so the CLI
(`python -m prometei doctor`) and tests can run them one by one:

    environment   every variable well-formed; the required ones present (a plain http://
                  CRM_API_URL is a warning: the ERP key and password would travel unencrypted)
    kv            Vercel KV answers PING and accepts a write with the configured token
    amocrm        the access token is accepted by the configured account (GET /api/v4/account)
    amocrm write-back, amocrm erp id field
                  with write-back on: the token's user may edit leads, AMOCRM_ERP_ID_FIELD is a
                  lead field that holds the id (`prometei.writeback_checks`)
    erp           Rukovoditel accepts the API key, username and password (`login` action)
    erp entity, erp field map, erp one record
                  the entity exists; ERP_FIELD_MAP's fields exist, are writable and fit their
                  sources, required fields are filled; ERP_LEAD_ID_FIELD is a text field, or
                  where lead -> record ids are remembered (`prometei.erp.checks`)
    webhook subscription
                  amoCRM's webhooks API lists ours (PUBLIC_URL + /api/webhook?token=), enabled
                  and subscribed to lead status changes (`prometei.amocrm.subscriptions`)
    inngest dev server
                  dev mode only: the dev server answers where INNGEST_DEV points
    inngest       event and signing keys present (cloud mode) and of the right form, and the
                  serve origin syncs register (INNGEST_SERVE_ORIGIN, else Vercel's URL)
    webhook       AMOCRM_WEBHOOK_SECRET is set (and usable in a URL)

The environment rows also warn while AMOCRM_WEBHOOK_ALLOW_LEGACY_URL (the switch-over bridge
for the TypeScript version's tokenless webhook URLs) is on.

No check ever puts a secret into `detail` or `fix`: secrets are described by presence and
length only. `run_checks()` runs them in that order; a check whose prerequisites are missing is
skipped, because the missing variable already has its own failing row.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometei.config import ENV_NAMES, Settings, dev_server_command, settings_from_mapping
from prometei.errors import (
    ConfigError,
    PrometeiError,
    ReconnectRequired,
    UpstreamAuthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from prometei.services import Services
from prometei.writeback_checks import enabled_settings

SIGNING_KEY_RE = re.compile(r"^signkey-(?P<env>[a-z]+)-(?P<hex>[0-9a-f]+)$")
EVENT_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{16,}$")
URL_SAFE_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
MIN_WEBHOOK_SECRET = 16
KV_PROBE_KEY = "prometei:doctor:probe"
RANDOM_VALUE_COMMAND = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

ERP_VARS = ("CRM_API_URL", "CRM_API_KEY", "CRM_API_USERNAME", "CRM_API_PASSWORD")
OAUTH_VARS = ("AMOCRM_CLIENT_ID", "AMOCRM_CLIENT_SECRET", "AMOCRM_REDIRECT_URI")
_KV_URL_VARS = ("KV_REST_API_URL", "UPSTASH_REDIS_REST_URL")
_KV_TOKEN_VARS = ("KV_REST_API_TOKEN", "UPSTASH_REDIS_REST_TOKEN")

# One line each: what to do when the variable is missing or malformed.
VARIABLE_FIXES: dict[str, str] = {
    "AMOCRM_SUBDOMAIN": "set AMOCRM_SUBDOMAIN to the account's subdomain "
    "(the 'oooprometei' in oooprometei.amocrm.ru)",
    "AMOCRM_BASE_DOMAIN": "set AMOCRM_BASE_DOMAIN to amocrm.ru, amocrm.com or kommo.com",
    "AMOCRM_ACCOUNT_ID": "set AMOCRM_ACCOUNT_ID to the numeric account id, or leave it empty",
    "AMOCRM_TRIGGER_STATUSES": "write AMOCRM_TRIGGER_STATUSES as pipeline_id:status_id pairs, "
    "e.g. 7012345:142,7012345:143",
    "AMOCRM_REDIRECT_URI": "set AMOCRM_REDIRECT_URI to https://<your-domain>/api/oauth/callback, "
    "exactly as registered in the amoCRM integration",
    "AMOCRM_CLIENT_ID": "copy the integration id from amoCRM (Settings -> Integrations -> "
    "your integration -> Keys and scopes) into AMOCRM_CLIENT_ID",
    "AMOCRM_CLIENT_SECRET": "copy the secret key from amoCRM (Settings -> Integrations -> "
    "your integration -> Keys and scopes) into AMOCRM_CLIENT_SECRET",
    "CRM_API_URL": "set CRM_API_URL to the full URL of Rukovoditel's api/rest.php, "
    "e.g. https://crm.example.ru/api/rest.php",
    "CRM_API_KEY": "copy the API key from Rukovoditel (Extension -> API) into CRM_API_KEY",
    "CRM_API_USERNAME": "set CRM_API_USERNAME to the login of the Rukovoditel API user",
    "CRM_API_PASSWORD": "set CRM_API_PASSWORD to the password of the Rukovoditel API user",
    "ERP_ENTITY_ID": "set ERP_ENTITY_ID to the numeric id of the receiving entity (default 70)",
    "ERP_FIELD_MAP": 'set ERP_FIELD_MAP to a JSON object like {"field_1039": "name", '
    '"field_1040": "price"}',
    "ERP_LEAD_ID_FIELD": "set ERP_LEAD_ID_FIELD to the numeric id of an ERP text field, "
    "or leave it empty",
    "ERP_REQUEST_FORMAT": "set ERP_REQUEST_FORMAT to json (Rukovoditel 3.6+) or form",
    "ERP_CONCURRENCY": "set ERP_CONCURRENCY to a whole number from 1 to 50",
    "KV_REST_API_URL": "copy KV_REST_API_URL from Vercel -> Storage -> your KV store "
    "(https://<name>.upstash.io), or remove both KV variables to use the file store",
    "KV_REST_API_TOKEN": "copy KV_REST_API_TOKEN from Vercel -> Storage -> your KV store, "
    "or remove both KV variables to use the file store",
    "PROMETEI_LOG_LEVEL": "set PROMETEI_LOG_LEVEL to DEBUG, INFO, WARNING or ERROR",
    "PROMETEI_LOG_FORMAT": "set PROMETEI_LOG_FORMAT to json or text",
    "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL": "set AMOCRM_WEBHOOK_ALLOW_LEGACY_URL to 1 (switch-over "
    "only) or leave it empty",
    "PUBLIC_URL": "set PUBLIC_URL to the deployment's public origin, e.g. "
    "https://prometei.example.com",
    "AMOCRM_SYNC_NOTE": "set AMOCRM_SYNC_NOTE to 1 (a note on the lead after an ERP write) or "
    "leave it empty",
    "AMOCRM_FAILURE_NOTE": "set AMOCRM_FAILURE_NOTE to 1 (a note on the lead when its sync "
    "failed for good) or leave it empty",
    "AMOCRM_ERP_ID_FIELD": "set AMOCRM_ERP_ID_FIELD to the numeric id of a text or number lead "
    "field in amoCRM, or leave it empty",
    "CRM_PUBLIC_URL": "set CRM_PUBLIC_URL to the address people open Rukovoditel at, e.g. "
    "https://crm.example.ru, or leave it empty",
}
VARIABLE_FIXES["UPSTASH_REDIS_REST_URL"] = VARIABLE_FIXES["KV_REST_API_URL"]
VARIABLE_FIXES["UPSTASH_REDIS_REST_TOKEN"] = VARIABLE_FIXES["KV_REST_API_TOKEN"]
for _alias in ERP_VARS:
    VARIABLE_FIXES["ERP_API_" + _alias.removeprefix("CRM_API_")] = VARIABLE_FIXES[_alias]


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table.

    `ok` is False only for a real failure (the command exits 1). `skipped` rows did not run
    (not configured, --offline, or a prerequisite already failed in its own row); `warning`
    rows work but deserve attention.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False
    warning: bool = False

    @property
    def status(self) -> str:
        if not self.ok:
            return "FAIL"
        if self.skipped:
            return "SKIP"
        return "WARN" if self.warning else "OK"


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


def _skip(name: str, detail: str) -> Check:
    return Check(name, True, detail, skipped=True)


# ---- environment ----------------------------------------------------------------------------


def _present(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k in ENV_NAMES and v.strip() != ""}


def _validate_one(name: str, value: str) -> str | None:
    """The problem with one variable on its own, or None when it is well-formed."""
    mapping = {name: value}
    # KV variables come in pairs (a model-level rule); give each a well-formed partner.
    if name in _KV_URL_VARS:
        mapping[_KV_TOKEN_VARS[_KV_URL_VARS.index(name)]] = "placeholder"
    elif name in _KV_TOKEN_VARS:
        mapping[_KV_URL_VARS[_KV_TOKEN_VARS.index(name)]] = "https://placeholder.invalid"
    try:
        settings_from_mapping(mapping)
    except ConfigError as exc:
        return exc.message.removeprefix("invalid configuration: ")
    return None


def _fix_for(name: str) -> str:
    return VARIABLE_FIXES.get(name, f"correct {name} (see .env.example)")


def check_environment(environ: Mapping[str, str]) -> tuple[list[Check], Settings | None]:
    """Rows for malformed and missing variables, and the Settings built from the good ones.

    Malformed variables are left out of the returned Settings, so the later checks still run
    on everything else. Returns a single OK row when nothing is wrong, followed by a WARN row
    for a setting that works but is risky (a plain http:// CRM_API_URL).
    """
    present = _present(environ)
    rows: list[Check] = []
    bad: set[str] = set()
    for name, value in sorted(present.items()):
        problem = _validate_one(name, value)
        if problem is not None:
            bad.add(name)
            rows.append(_fail(name, f"malformed: {problem}", _fix_for(name)))

    urls = [n for n in _KV_URL_VARS if n in present]
    tokens = [n for n in _KV_TOKEN_VARS if n in present]
    if bool(urls) != bool(tokens):
        other = "KV_REST_API_TOKEN" if urls else "KV_REST_API_URL"
        bad.update(urls + tokens)
        rows.append(
            _fail(
                other,
                f"missing: {(urls + tokens)[0]} is set but {other} is not (KV is half-configured)",
                _fix_for(other),
            )
        )

    def missing(name: str) -> bool:
        aliases = [name, "ERP_API_" + name.removeprefix("CRM_API_")]
        return not any(alias in present for alias in aliases)

    for name in ("AMOCRM_SUBDOMAIN", *ERP_VARS):
        if missing(name):
            rows.append(_fail(name, "missing: not set", _fix_for(name)))
    if missing("AMOCRM_ACCESS_TOKEN"):
        absent = [name for name in OAUTH_VARS if missing(name)]
        if len(absent) == len(OAUTH_VARS):
            rows.append(
                _fail(
                    "amoCRM token",
                    "missing: neither AMOCRM_ACCESS_TOKEN nor the OAuth variables "
                    f"({', '.join(OAUTH_VARS)}) are set",
                    "set AMOCRM_ACCESS_TOKEN to a long-lived token, or set the three OAuth "
                    "variables and connect via /api/oauth/callback",
                )
            )
        else:
            rows.extend(_fail(name, "missing: needed for OAuth", _fix_for(name)) for name in absent)

    usable = {k: v for k, v in present.items() if k not in bad}
    try:
        settings = settings_from_mapping(usable)
    except ConfigError as exc:
        rows.append(_fail("environment", exc.message, "correct the variables it names"))
        return rows, None
    if not rows:
        rows.append(Check("environment", True, _summary(settings, len(present))))
    rows.extend(_risky_settings(settings))
    rows.extend(_legacy_webhook_url(settings))
    rows.extend(_amocrm_api_override(settings))
    return rows, settings


def _amocrm_api_override(settings: Settings) -> list[Check]:
    """A WARN row while AMOCRM_API_BASE_URL sends amoCRM traffic somewhere else."""
    base = settings.amocrm_api_base_url
    if base is None:
        return []
    return [
        Check(
            "AMOCRM_API_BASE_URL",
            True,
            f"every amoCRM API and token request goes to {base}, not to the account host "
            f"({settings.amocrm_host if settings.amocrm_subdomain else '?'})",
            "leave AMOCRM_API_BASE_URL empty in production; set it only for tests or a proxy "
            "you run",
            warning=True,
        )
    ]


def _risky_settings(settings: Settings) -> list[Check]:
    """Warnings for settings that work but deserve a change."""
    url = urlsplit(settings.crm_api_url or "")
    if url.scheme != "http":
        return []
    return [
        Check(
            "CRM_API_URL",
            True,
            f"plain http:// to {url.hostname or '?'}: the ERP API key and password travel "
            "unencrypted with every request",
            "use the https:// address of Rukovoditel's api/rest.php (give the ERP server a "
            "TLS certificate if it has none)",
            warning=True,
        )
    ]


def _legacy_webhook_url(settings: Settings) -> list[Check]:
    """A warning for as long as the switch-over bridge accepts tokenless old webhook URLs."""
    if not settings.amocrm_webhook_allow_legacy_url:
        return []
    origin = settings.public_origin or "https://<your-domain>"
    return [
        Check(
            "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL",
            True,
            "on: /api/amocrm-webhook and /api/inngest accept webhooks without ?token= "
            "(account check and fresh fetch still apply); anyone who knows the URL can start "
            "syncs",
            f"in amoCRM (Settings -> Integrations -> Web hooks) use {origin}/api/webhook"
            "?token=<AMOCRM_WEBHOOK_SECRET>, then remove AMOCRM_WEBHOOK_ALLOW_LEGACY_URL",
            warning=True,
        )
    ]


def _summary(settings: Settings, count: int) -> str:
    token = "long-lived token" if settings.uses_long_lived_token else "OAuth"
    erp_host = urlsplit(settings.crm_api_url or "").hostname or "?"
    from prometei.amocrm.budget import describe

    reconcile = settings.reconcile_schedule or "off"
    return (
        f"{count} variables set; mode {settings.mode}; amoCRM {settings.amocrm_host} "
        f"({token}); ERP {erp_host}; token store {settings.store_kind}; amoCRM budget "
        f"{describe(settings)}; reconcile {reconcile}"
    )


# ---- KV ---------------------------------------------------------------------------------------


def check_kv(settings: Settings, *, now: Callable[[], float] = time.time) -> Check:
    """PING, then a short-lived write (a read-only token passes PING but cannot store tokens)."""
    name = "kv"
    if settings.kv_rest_api_url is None or settings.kv_rest_api_token is None:
        return _kv_not_configured(settings)

    from prometei.store.kv import KVClient

    client = KVClient(settings.kv_rest_api_url, settings.kv_rest_api_token)
    url_fix = "check KV_REST_API_URL: it must be the store's REST URL https://<name>.upstash.io"
    try:
        pong = client.command("PING")
        if pong != "PONG":
            return _fail(name, f"PING answered {str(pong)[:40]!r}, not PONG", url_fix)
        client.command("SET", KV_PROBE_KEY, str(int(now())), "EX", 60)
    except PrometeiError as exc:
        if isinstance(exc, UpstreamAuthError) and "not permitted" in exc.message:
            fix = "use the read-write KV_REST_API_TOKEN, not the read-only token"
        elif isinstance(exc, UpstreamAuthError):
            fix = (
                "copy KV_REST_API_TOKEN again from Vercel -> Storage -> your store "
                "(or the Upstash console), then run doctor again"
            )
        elif isinstance(exc, UpstreamUnavailable):
            fix = f"check network access to {client.host} and KV_REST_API_URL"
        else:
            fix = url_fix
        return _fail(name, exc.message, fix)
    return Check(name, True, f"{client.host} answered PING and accepted a write")


def _kv_not_configured(settings: Settings) -> Check:
    if settings.on_vercel and not settings.uses_long_lived_token:
        return _fail(
            "kv",
            "no KV store on Vercel: rotated OAuth tokens would be lost between instances",
            "connect a KV store (Vercel -> Storage -> Upstash for Redis) so KV_REST_API_URL "
            "and KV_REST_API_TOKEN are set, or use AMOCRM_ACCESS_TOKEN",
        )
    where = (
        "not needed with a long-lived token"
        if settings.uses_long_lived_token
        else f"tokens kept in the local file store {settings.prometei_state_dir}"
    )
    return _skip("kv", f"not configured; {where}")


# ---- amoCRM -----------------------------------------------------------------------------------


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
    return "see the detail; run with PROMETEI_LOG_LEVEL=DEBUG for the request log"


def check_amocrm(services: Services) -> Check:
    """The token is accepted and belongs to AMOCRM_SUBDOMAIN (and AMOCRM_ACCOUNT_ID if set)."""
    name = "amocrm"
    settings = services.settings
    if not settings.amocrm_subdomain:
        return _skip(name, "not run: AMOCRM_SUBDOMAIN is not set (see above)")
    if not settings.uses_long_lived_token and not (
        settings.amocrm_client_id and settings.amocrm_client_secret
    ):
        return _skip(name, "not run: no amoCRM token configuration (see above)")
    try:
        account = services.amocrm_housekeeping.account()
    except PrometeiError as exc:
        return _fail(name, exc.message, _amocrm_fix(settings, exc))
    subdomain = str(account.get("subdomain") or "")
    if subdomain and subdomain != settings.amocrm_subdomain:
        return _fail(
            name,
            f"the token belongs to account {subdomain!r}, not {settings.amocrm_subdomain!r}",
            "use a token of the configured account, or correct AMOCRM_SUBDOMAIN",
        )
    expected_id = settings.amocrm_account_id
    if expected_id is not None and account.get("id") != expected_id:
        return _fail(
            name,
            f"the account id is {account.get('id')}, but AMOCRM_ACCOUNT_ID is {expected_id}",
            f"set AMOCRM_ACCOUNT_ID={account.get('id')} (or leave it empty)",
        )
    mode = "long-lived token" if settings.uses_long_lived_token else "OAuth"
    label = f" {account.get('name')!r}" if account.get("name") else ""
    return Check(
        name,
        True,
        f"{mode} accepted by {settings.amocrm_host}: account {account.get('id')}{label}",
    )


def check_webhook_subscription(services: Services, *, amocrm: Check | None) -> Check:
    """Our subscription in amoCRM: there, enabled, subscribed to lead status changes."""
    from prometei.amocrm import subscriptions

    name = "webhook subscription"
    settings = services.settings
    if amocrm is None or not amocrm.ok or amocrm.skipped:
        return _skip(name, "not run: the amocrm row did not pass (see above)")
    api = subscriptions.WebhooksAPI(services.amocrm_housekeeping)
    health = subscriptions.check(settings, api)
    if health.ok:
        return Check(name, True, health.detail)
    if health.state == "not_configured":
        if settings.is_dev:
            return _skip(name, f"not run: {health.detail}")
        return Check(name, True, health.detail, health.fix, warning=True)
    if health.state == "unknown":
        return Check(name, True, health.detail, health.fix, warning=True)
    return _fail(name, health.detail, health.fix)


# ---- ERP --------------------------------------------------------------------------------------


def _erp_fix(settings: Settings, exc: PrometeiError) -> str:  # noqa: PLR0911 - one per answer
    message = exc.message
    host = urlsplit(settings.crm_api_url or "").hostname or "the ERP host"
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
        return f"check network access to {host}; the ERP server may be down"
    if isinstance(exc, UpstreamProtocolError):
        return "check CRM_API_URL: it must be the full URL of Rukovoditel's api/rest.php"
    return "see the detail; run with PROMETEI_LOG_LEVEL=DEBUG for the request log"


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
        return _skip(name, "not run: an ERP variable is missing (see above)")
    try:
        user = services.erp.login()
    except PrometeiError as exc:
        return _fail(name, exc.message, _erp_fix(settings, exc))
    host = urlsplit(settings.crm_api_url or "").hostname or "?"
    who = user.get("username") or settings.crm_api_username
    return Check(
        name,
        True,
        f"login accepted by {host} as {who} (user {user.get('id')}, group {user.get('group_id')})",
    )


_LEVEL_CHECKS = {
    "ok": lambda name, detail, fix: Check(name, True, detail),
    "warn": lambda name, detail, fix: Check(name, True, detail, fix, warning=True),
    "fail": lambda name, detail, fix: Check(name, False, detail, fix),
    "skip": lambda name, detail, fix: _skip(name, detail),
}


def check_erp_schema(services: Services, *, login: Check | None) -> list[Check]:
    """Would a write work and keep every value? One row each for the entity, the field map
    and the one-record-per-lead mode; skipped when the login row did not pass."""
    from prometei.erp.checks import ROWS, diagnose

    if login is None or not login.ok or login.skipped:
        return [_skip(name, "not run: the ERP login did not pass (see above)") for name in ROWS]
    settings = services.settings
    findings = diagnose(
        settings,
        services.erp_schemas,
        lambda: services.state,
        _stage_names(services) if settings.amocrm_subdomain else None,
    )
    return [_LEVEL_CHECKS[f.level](f.name, f.detail, f.fix) for f in findings]


def check_amocrm_writeback(services: Services, *, amocrm: Check | None) -> list[Check]:
    """With write-back on: may the token's user edit leads, and is AMOCRM_ERP_ID_FIELD a lead
    field that can hold the record id? No row when write-back is off; skipped when the amoCRM
    row did not pass."""
    from prometei.writeback_checks import ROWS, diagnose_writeback

    settings = services.settings
    if not enabled_settings(settings):
        return []  # nothing to check, and no row for a feature that is off
    if amocrm is None or not amocrm.ok or amocrm.skipped:
        return [_skip(ROWS[0], "not run: the amoCRM check did not pass (see above)")]
    findings = diagnose_writeback(settings, services.amocrm_housekeeping, lambda: services.state)
    return [_LEVEL_CHECKS[f.level](f.name, f.detail, f.fix) for f in findings]


def _stage_names(services: Services) -> Callable[[str], list[str]]:
    """amoCRM's names a dropdown filled by status_name / pipeline_name must offer: the trigger
    stages when AMOCRM_TRIGGER_STATUSES is set, else every pipeline's."""

    def names(source: str) -> list[str]:
        pipelines, statuses = services.pipelines.listing()
        if source == "pipeline_name":
            return list(pipelines.values())
        wanted = services.settings.amocrm_trigger_statuses
        return [name for pair, name in statuses.items() if not wanted or pair in wanted]

    return names


# ---- Inngest ----------------------------------------------------------------------------------


def check_dev_server(settings: Settings) -> Check:
    """Dev mode: does an Inngest dev server answer where INNGEST_DEV points?"""
    from prometei.http import make_session, send

    name = "inngest dev server"
    origin = settings.event_api_origin
    fix = (
        f"start it: {dev_server_command()} (with `make serve` on port 3000), or point "
        "INNGEST_DEV at the dev server's URL"
    )
    try:
        response = send(make_session(), "inngest", "GET", origin + "dev", timeout=(2.0, 5.0))
    except PrometeiError as exc:
        return _fail(name, f"no dev server at {origin}: {exc.message}", fix)
    if response.status_code != 200:
        return _fail(
            name,
            f"{origin}dev answered {response.status_code}: something else listens there, "
            "not an Inngest dev server",
            fix,
        )
    return Check(name, True, f"the dev server answers at {origin}")


def _signing_key_problem(value: str) -> str | None:
    match = SIGNING_KEY_RE.match(value)
    if match is None:
        return "does not look like signkey-<env>-<hex>"
    digits = match.group("hex")
    if len(digits) < 32 or len(digits) % 2:
        return f"has {len(digits)} hex digits after signkey-{match.group('env')}-; expected 64"
    return None


def _event_key_problem(value: str) -> str | None:
    if value.startswith("signkey-"):
        return "is a signing key, not an event key"
    if not EVENT_KEY_RE.match(value):
        return "must be 16 or more letters, digits, '-' or '_' (no spaces or quotes)"
    return None


def check_inngest(settings: Settings) -> Check:
    """Keys present in cloud mode and shaped like Inngest's; dev mode needs none."""
    name = "inngest"
    signing = settings.inngest_signing_key
    fallback = settings.inngest_signing_key_fallback
    event = settings.inngest_event_key
    problems: list[tuple[str, str]] = []
    if signing is None:
        if not settings.is_dev:
            problems.append(
                (
                    "INNGEST_SIGNING_KEY is not set (cloud mode needs it)",
                    "copy the signing key from the Inngest dashboard (Manage -> Signing Key) "
                    "into INNGEST_SIGNING_KEY, or set INNGEST_DEV=1 for local runs",
                )
            )
    elif problem := _signing_key_problem(signing.get_secret_value()):
        problems.append(
            (
                f"INNGEST_SIGNING_KEY {problem}",
                "copy the signing key again from the Inngest dashboard (Manage -> Signing Key)",
            )
        )
    if fallback is not None:
        problem = _signing_key_problem(fallback.get_secret_value())
        if problem is None and signing is not None and fallback == signing:
            problem = "equals INNGEST_SIGNING_KEY"
        if problem:
            problems.append(
                (
                    f"INNGEST_SIGNING_KEY_FALLBACK {problem}",
                    "set INNGEST_SIGNING_KEY_FALLBACK to the previous signing key, or remove it",
                )
            )
    if event is None:
        if not settings.is_dev:
            problems.append(
                (
                    "INNGEST_EVENT_KEY is not set (cloud mode needs it to send events)",
                    "create an event key in the Inngest dashboard (Manage -> Event Keys) and "
                    "set INNGEST_EVENT_KEY",
                )
            )
    elif problem := _event_key_problem(event.get_secret_value()):
        problems.append(
            (
                f"INNGEST_EVENT_KEY {problem}",
                "copy the event key again from the Inngest dashboard (Manage -> Event Keys)",
            )
        )
    if problems:
        return _fail(name, "; ".join(p for p, _ in problems), problems[0][1])
    if settings.is_dev:
        return Check(
            name,
            True,
            f"dev mode: events go to {settings.event_api_origin}; keys are not needed",
        )
    assert signing is not None and event is not None
    env = SIGNING_KEY_RE.match(signing.get_secret_value())
    env_name = env.group("env") if env else "?"
    return Check(
        name,
        True,
        f"cloud mode; signing key for environment {env_name!r} "
        f"({len(signing.get_secret_value())} chars); event key set "
        f"({len(event.get_secret_value())} chars); {_serve_origin_detail(settings)}",
    )


def _serve_origin_detail(settings: Settings) -> str:
    """Where syncs register /api/inngest; never a request's Host header."""
    origin = settings.serve_origin
    if origin is None:
        return (
            "serve origin not configured: syncs from the Inngest dashboard or the Vercel "
            "integration register the URL Inngest signs, `curl -X PUT` syncs are refused "
            "(set INNGEST_SERVE_ORIGIN to allow them)"
        )
    return f"serve origin {origin[0]}/api/inngest (from {origin[1]})"


# ---- webhook secret ---------------------------------------------------------------------------


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
            return Check(
                name,
                True,
                "not set: the intake accepts webhooks without ?token= in dev mode only",
                fix,
                warning=True,
            )
        return _fail(
            name, "AMOCRM_WEBHOOK_SECRET is not set: the intake refuses every webhook", fix
        )
    value = secret.get_secret_value()
    if len(value) < MIN_WEBHOOK_SECRET:
        return Check(name, True, f"set, but only {len(value)} chars long", fix, warning=True)
    if not URL_SAFE_RE.match(value):
        return Check(
            name,
            True,
            f"set ({len(value)} chars), but has characters that must be percent-encoded in "
            "the webhook URL",
            fix,
            warning=True,
        )
    if settings.amocrm_webhook_secret_previous is not None:
        return Check(
            name,
            True,
            f"set ({len(value)} chars); AMOCRM_WEBHOOK_SECRET_PREVIOUS is accepted too",
            "once the URL in amoCRM carries ?token=<AMOCRM_WEBHOOK_SECRET>, unset "
            "AMOCRM_WEBHOOK_SECRET_PREVIOUS and redeploy",
            warning=True,
        )
    return Check(name, True, f"set ({len(value)} chars); webhook URLs must carry ?token=<it>")


# ---- all of them ------------------------------------------------------------------------------

NETWORK_CHECKS = ("kv", "amocrm", "webhook subscription", "erp", "erp schema")


def run_checks(
    environ: Mapping[str, str],
    *,
    offline: bool = False,
    on_check: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Every check in order; `on_check` sees each row as soon as it is known."""
    results: list[Check] = []

    def emit(check: Check) -> None:
        results.append(check)
        if on_check is not None:
            on_check(check)

    rows, settings = check_environment(environ)
    for row in rows:
        emit(row)
    if settings is None:
        for name in (*NETWORK_CHECKS, "inngest", "webhook secret"):
            emit(_skip(name, "not run: the configuration could not be loaded (see above)"))
        return results

    services = Services(settings)

    def earlier(name: str) -> Check | None:
        return next((check for check in results if check.name == name), None)

    network: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("kv", lambda: check_kv(settings)),
        ("amocrm", lambda: check_amocrm(services)),
        (
            "webhook subscription",
            lambda: check_webhook_subscription(services, amocrm=earlier("amocrm")),
        ),
        ("erp", lambda: check_erp(services)),
        ("erp schema", lambda: check_erp_schema(services, login=earlier("erp"))),
    ]
    if enabled_settings(settings):  # no row at all for write-back that is off

        def writeback() -> list[Check]:
            return check_amocrm_writeback(services, amocrm=earlier("amocrm"))

        network.insert(2, ("amocrm write-back", writeback))
    if settings.is_dev:
        network.append(("inngest dev server", lambda: check_dev_server(settings)))
    for name, run in network:
        if offline:
            emit(_skip(name, "not run (--offline)"))
            continue
        try:
            produced = run()
        except Exception as exc:  # a bug must not hide the remaining checks
            emit(_fail(name, f"unexpected {type(exc).__name__}", "report this as a bug"))
            continue
        for row in produced if isinstance(produced, list) else [produced]:
            emit(row)
    emit(check_inngest(settings))
    emit(check_webhook_secret(settings))
    return results
