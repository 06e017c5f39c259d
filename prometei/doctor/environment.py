"""The environment rows: every variable well-formed, the required ones present.

Each system's module adds the warning for a setting of its own that works but is risky; they
follow the environment row, as their variables' rows.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometei.config import ENV_NAMES, Settings, settings_from_mapping
from prometei.doctor.amocrm import api_base_override, token_kind
from prometei.doctor.check import Check, fail, ok
from prometei.doctor.erp import erp_host, plain_http_url
from prometei.doctor.webhook import legacy_webhook_url
from prometei.errors import ConfigError

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


def _erp_alias(name: str) -> str:
    """The ERP_API_* spelling config.py also accepts for a CRM_API_* variable."""
    return "ERP_API_" + name.removeprefix("CRM_API_")


VARIABLE_FIXES["UPSTASH_REDIS_REST_URL"] = VARIABLE_FIXES["KV_REST_API_URL"]
VARIABLE_FIXES["UPSTASH_REDIS_REST_TOKEN"] = VARIABLE_FIXES["KV_REST_API_TOKEN"]
for _alias in ERP_VARS:
    VARIABLE_FIXES[_erp_alias(_alias)] = VARIABLE_FIXES[_alias]


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
    for each setting that works but is risky (a plain http:// CRM_API_URL, the legacy webhook
    URL bridge, AMOCRM_API_BASE_URL).
    """
    present = _present(environ)
    rows: list[Check] = []
    bad: set[str] = set()
    for name, value in sorted(present.items()):
        problem = _validate_one(name, value)
        if problem is not None:
            bad.add(name)
            rows.append(fail(name, f"malformed: {problem}", _fix_for(name)))

    urls = [n for n in _KV_URL_VARS if n in present]
    tokens = [n for n in _KV_TOKEN_VARS if n in present]
    if bool(urls) != bool(tokens):
        other = "KV_REST_API_TOKEN" if urls else "KV_REST_API_URL"
        bad.update(urls + tokens)
        rows.append(
            fail(
                other,
                f"missing: {(urls + tokens)[0]} is set but {other} is not (KV is half-configured)",
                _fix_for(other),
            )
        )

    def missing(name: str) -> bool:
        return not any(alias in present for alias in (name, _erp_alias(name)))

    for name in ("AMOCRM_SUBDOMAIN", *ERP_VARS):
        if missing(name):
            rows.append(fail(name, "missing: not set", _fix_for(name)))
    if missing("AMOCRM_ACCESS_TOKEN"):
        absent = [name for name in OAUTH_VARS if missing(name)]
        if len(absent) == len(OAUTH_VARS):
            rows.append(
                fail(
                    "amoCRM token",
                    "missing: neither AMOCRM_ACCESS_TOKEN nor the OAuth variables "
                    f"({', '.join(OAUTH_VARS)}) are set",
                    "set AMOCRM_ACCESS_TOKEN to a long-lived token, or set the three OAuth "
                    "variables and connect via /api/oauth/callback",
                )
            )
        else:
            rows.extend(fail(name, "missing: needed for OAuth", _fix_for(name)) for name in absent)

    usable = {k: v for k, v in present.items() if k not in bad}
    try:
        settings = settings_from_mapping(usable)
    except ConfigError as exc:
        rows.append(fail("environment", exc.message, "correct the variables it names"))
        return rows, None
    if not rows:
        rows.append(ok("environment", _summary(settings, len(present))))
    for risky in (plain_http_url, legacy_webhook_url, api_base_override):
        rows.extend(risky(settings))
    return rows, settings


def _summary(settings: Settings, count: int) -> str:
    from prometei.amocrm.budget import describe

    reconcile = settings.reconcile_schedule or "off"
    return (
        f"{count} variables set; mode {settings.mode}; amoCRM {settings.amocrm_host} "
        f"({token_kind(settings)}); ERP {erp_host(settings)}; token store {settings.store_kind}; "
        f"amoCRM budget {describe(settings)}; reconcile {reconcile}"
    )
