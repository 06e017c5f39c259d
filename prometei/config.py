"""The one place that reads the environment.

`load_settings()` builds a `Settings` object from `os.environ` (plus a `.env` file for local
runs). Every other module receives plain values from it; nothing else calls `os.getenv`.
A malformed variable fails at load time with a message naming it; a variable that only one
feature needs is checked by that feature's `require_*` accessor, so a missing ERP password does
not stop the webhook intake from answering.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, timedelta, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from prometei.errors import ConfigError

APP_ID = "prometei-ingest"
KNOWN_BASE_DOMAINS = ("amocrm.ru", "amocrm.com", "kommo.com")
DEFAULT_FIELD_MAP = {"field_1039": "name", "field_1040": "price"}
# Lead attributes ERP_FIELD_MAP may name; custom fields are written `cf:<field_id>`.
LEAD_ATTRIBUTES = (
    "id",
    "name",
    "price",
    "status_id",
    "pipeline_id",
    "responsible_user_id",
    "created_by",
    "updated_by",
    "created_at",
    "updated_at",
    "closed_at",
    "account_id",
    "main_contact_id",
    # Read with one extra amoCRM request per lead (contact, company) or from a cache
    # (pipeline and status names); see prometei.amocrm.models.LEAD_SOURCES.
    "company_id",
    "contact_name",
    "contact_phone",
    "contact_email",
    "company_name",
    "pipeline_name",
    "status_name",
)
_CUSTOM_FIELD_RE = re.compile(r"^cf:(\d+)$")
# An ERP (Rukovoditel) field key; prometei.deals.payload checks extra fields with it too.
ERP_FIELD_RE = re.compile(r"^field_\d+$")
_ERP_FIELD_RE = ERP_FIELD_RE  # the old name
# One DNS label; shared with prometei.amocrm.domains so config and the host allow-list agree.
SUBDOMAIN_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# amoCRM's own service hosts, never an account.
RESERVED_SUBDOMAINS = frozenset({"www", "api", "developers", "oauth", "id", "static"})
_SUBDOMAIN_RE = re.compile(rf"^{SUBDOMAIN_LABEL}$")
DEV_SERVER_ORIGIN = "http://127.0.0.1:8288/"
LOCAL_SERVE_URL = "http://127.0.0.1:3000/api/inngest"  # `make serve`


def dev_server_command(serve_url: str = LOCAL_SERVE_URL) -> str:
    """How to start Inngest's dev server for the app at `serve_url` (for messages)."""
    return f"npx inngest-cli@latest dev -u {serve_url}"


CLOUD_EVENT_API_ORIGIN = "https://inn.gs/"
# amoCRM answers at most 7 requests per second per integration, across every instance and
# caller (reference amocrm.md §4.1); the three AMOCRM_BUDGET_* shares may not add up to more.
AMOCRM_RATE_LIMIT = 7
DEFAULT_RECONCILE_CRON = "*/10 * * * *"
RECONCILE_OFF = ("off", "0", "false", "no", "disabled")
_CRON_FIELD_RE = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")


_ORIGIN_RE = re.compile(r"^(?P<scheme>https?)://(?P<host>[A-Za-z0-9.-]+(?::\d{1,5})?)/?$")


def normalize_origin(value: str) -> str:
    """`https://host[:port]` from an origin or a bare host (Vercel gives hosts without a
    scheme; `https://` is assumed, as the Inngest SDK does); ValueError for anything else."""
    text = value.strip()
    candidate = text if "://" in text else f"https://{text}"
    match = _ORIGIN_RE.match(candidate)
    if match is None:
        raise ValueError(
            "must be an origin like https://prometei.example.com (scheme and host, no path, "
            "query or credentials)"
        )
    return f"{match['scheme']}://{match['host'].lower()}"


_OFFSET_RE = re.compile(r"^(?:UTC)?([+-])(\d{1,2}):?(\d{2})$")


def parse_timezone(value: str) -> tzinfo:
    """`+03:00` / `-05:30` / `UTC` / an IANA name such as `Europe/Moscow` -> tzinfo.

    A fixed offset needs nothing from the system; an IANA name needs the system's time zone
    database (or the tzdata package)."""
    text = value.strip()
    if text.upper() in ("UTC", "Z", "+00:00"):
        return UTC
    match = _OFFSET_RE.match(text)
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        if delta > timedelta(hours=14):
            raise ValueError(f"{text!r} is not a UTC offset between -14:00 and +14:00")
        return timezone(-delta if sign == "-" else delta)
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(text)
    except (ValueError, LookupError, OSError):
        raise ValueError(
            f"{text!r} is neither a UTC offset like +03:00 nor a time zone name this system "
            "knows (e.g. Europe/Moscow)"
        ) from None


def _is_loopback(host: str) -> bool:
    return host in {"localhost", "::1"} or re.fullmatch(r"127(\.\d{1,3}){3}", host) is not None


def _checked_http_url(value: str, example: str) -> SplitResult:
    """An http(s) URL with a host and a well-formed port, no credentials, query or fragment.
    Never echoed in an error: a mistyped value could hold a password."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an {example}")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (user:password@host)")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or a fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ValueError("has a malformed port") from None
    return parts


def _checked_api_base_url(value: str) -> str:
    """AMOCRM_API_BASE_URL: https://host[:port][/prefix], or http:// to loopback only."""
    parts = _checked_http_url(value, "https:// URL such as https://amocrm-proxy.example.ru")
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        # Tokens travel with every request: plain http is only acceptable on this machine.
        raise ValueError("must use https:// (plain http:// is allowed to 127.0.0.1 only)")
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def _checked_web_base(value: str) -> str:
    """CRM_PUBLIC_URL: http(s)://host[:port][/path]; kept without a trailing slash."""
    parts = _checked_http_url(value, "http(s) URL such as https://crm.example.ru")
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def _truthy_dev(value: str | None) -> bool:
    # Same reading as the Inngest SDK: any value but "", "0", "false" means dev mode.
    return value is not None and value.strip().lower() not in ("", "0", "false")


TriggerStatus = tuple[int, int]


class Settings(BaseModel):
    """Validated configuration. Secrets are `SecretStr`: their repr never shows the value."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    # Inngest
    inngest_event_key: SecretStr | None = Field(None, alias="INNGEST_EVENT_KEY")
    inngest_signing_key: SecretStr | None = Field(None, alias="INNGEST_SIGNING_KEY")
    inngest_signing_key_fallback: SecretStr | None = Field(
        None, alias="INNGEST_SIGNING_KEY_FALLBACK"
    )
    inngest_dev: str | None = Field(None, alias="INNGEST_DEV")
    inngest_base_url: str | None = Field(None, alias="INNGEST_BASE_URL")
    inngest_event_api_base_url: str | None = Field(None, alias="INNGEST_EVENT_API_BASE_URL")
    inngest_api_base_url: str | None = Field(None, alias="INNGEST_API_BASE_URL")
    # Where Inngest reaches /api/inngest (scheme + host); see `serve_origin`.
    inngest_serve_origin: str | None = Field(None, alias="INNGEST_SERVE_ORIGIN")

    # amoCRM
    amocrm_subdomain: str | None = Field(None, alias="AMOCRM_SUBDOMAIN")
    amocrm_base_domain: Literal["amocrm.ru", "amocrm.com", "kommo.com"] = Field(
        "amocrm.ru", alias="AMOCRM_BASE_DOMAIN"
    )
    amocrm_account_id: int | None = Field(None, alias="AMOCRM_ACCOUNT_ID", gt=0)
    amocrm_access_token: SecretStr | None = Field(None, alias="AMOCRM_ACCESS_TOKEN")
    amocrm_client_id: str | None = Field(None, alias="AMOCRM_CLIENT_ID")
    amocrm_client_secret: SecretStr | None = Field(None, alias="AMOCRM_CLIENT_SECRET")
    amocrm_redirect_uri: str | None = Field(None, alias="AMOCRM_REDIRECT_URI")
    amocrm_refresh_token: SecretStr | None = Field(None, alias="AMOCRM_REFRESH_TOKEN")
    amocrm_webhook_secret: SecretStr | None = Field(None, alias="AMOCRM_WEBHOOK_SECRET")
    # The secret being replaced: still accepted while the URL in amoCRM is switched to the new
    # one (README: rotating the webhook secret). Unset it once the switch is done.
    amocrm_webhook_secret_previous: SecretStr | None = Field(
        None, alias="AMOCRM_WEBHOOK_SECRET_PREVIOUS"
    )
    amocrm_trigger_statuses: tuple[TriggerStatus, ...] = Field((), alias="AMOCRM_TRIGGER_STATUSES")
    # Switch-over bridge: accept webhooks without ?token= on the TypeScript version's URLs
    # (/api/amocrm-webhook, /api/inngest) until the URL in amoCRM carries the token.
    amocrm_webhook_allow_legacy_url: bool = Field(False, alias="AMOCRM_WEBHOOK_ALLOW_LEGACY_URL")
    # Tests and self-hosted proxies only: send every amoCRM API and token request here instead
    # of https://<account host>. Hosts from webhooks and redirects are still checked as before.
    amocrm_api_base_url: str | None = Field(None, alias="AMOCRM_API_BASE_URL")
    # Write-back (README "What managers see in amoCRM"), all off by default: a note on the lead
    # after an ERP write that created the record or changed a mapped value, a note when a run
    # failed for good, and the ERP record id in this lead custom field.
    amocrm_sync_note: bool = Field(False, alias="AMOCRM_SYNC_NOTE")
    amocrm_failure_note: bool = Field(False, alias="AMOCRM_FAILURE_NOTE")
    amocrm_erp_id_field: int | None = Field(None, alias="AMOCRM_ERP_ID_FIELD", gt=0)

    # ERP (Rukovoditel). Names from the seeds; ERP_API_* were used by the TypeScript code.
    crm_api_url: str | None = Field(
        None, validation_alias=AliasChoices("CRM_API_URL", "ERP_API_URL")
    )
    crm_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("CRM_API_KEY", "ERP_API_KEY")
    )
    crm_api_username: str | None = Field(
        None, validation_alias=AliasChoices("CRM_API_USERNAME", "ERP_API_USERNAME")
    )
    crm_api_password: SecretStr | None = Field(
        None, validation_alias=AliasChoices("CRM_API_PASSWORD", "ERP_API_PASSWORD")
    )
    erp_entity_id: Annotated[int, Field(gt=0)] = Field(70, alias="ERP_ENTITY_ID")
    erp_field_map: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_FIELD_MAP), alias="ERP_FIELD_MAP"
    )
    erp_lead_id_field: int | None = Field(None, alias="ERP_LEAD_ID_FIELD", gt=0)
    # Where people open Rukovoditel in a browser, for record links in amoCRM notes (default:
    # CRM_API_URL without its api/rest.php); see `erp_web_base`.
    crm_public_url: str | None = Field(None, alias="CRM_PUBLIC_URL")
    # Rukovoditel before 3.6 ignores JSON bodies; "form" sends PHP bracket form fields instead.
    erp_request_format: Literal["json", "form"] = Field("json", alias="ERP_REQUEST_FORMAT")
    # How long a warm instance keeps an entity's fields and choices (0: ask every time).
    erp_schema_ttl: Annotated[int, Field(ge=0, le=86400)] = Field(600, alias="ERP_SCHEMA_TTL")
    # The zone amoCRM timestamps are written in to ERP date fields: an IANA name or +HH:MM.
    erp_timezone: str = Field("+03:00", alias="ERP_TIMEZONE")
    # How many deal writes may hit the ERP at once (batch fan-out); see README "Throughput".
    erp_concurrency: Annotated[int, Field(ge=1, le=50)] = Field(4, alias="ERP_CONCURRENCY")

    # Token store
    kv_rest_api_url: str | None = Field(
        None, validation_alias=AliasChoices("KV_REST_API_URL", "UPSTASH_REDIS_REST_URL")
    )
    kv_rest_api_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("KV_REST_API_TOKEN", "UPSTASH_REDIS_REST_TOKEN")
    )
    prometei_state_dir: Path = Field(Path(".prometei"), alias="PROMETEI_STATE_DIR")

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", alias="PROMETEI_LOG_LEVEL"
    )
    log_format: Literal["json", "text"] = Field("json", alias="PROMETEI_LOG_FORMAT")

    # The deployment's public origin, for URLs we show (the webhook URL to put into amoCRM).
    public_url: str | None = Field(None, alias="PUBLIC_URL")

    # amoCRM's request budget (README "amoCRM's rate limit: one budget"): requests per second
    # for each kind of caller; the three together never more than AMOCRM_RATE_LIMIT.
    amocrm_budget_runs: Annotated[int, Field(ge=1, le=AMOCRM_RATE_LIMIT)] = Field(
        5, alias="AMOCRM_BUDGET_RUNS"
    )
    amocrm_budget_backfill: Annotated[int, Field(ge=1, le=AMOCRM_RATE_LIMIT)] = Field(
        1, alias="AMOCRM_BUDGET_BACKFILL"
    )
    amocrm_budget_reconcile: Annotated[int, Field(ge=1, le=AMOCRM_RATE_LIMIT)] = Field(
        1, alias="AMOCRM_BUDGET_RECONCILE"
    )
    # The amocrm-reconcile cron ("off" leaves the function out) and whether it re-subscribes
    # our webhook when amoCRM removed or disabled it.
    amocrm_reconcile_cron: str = Field(DEFAULT_RECONCILE_CRON, alias="AMOCRM_RECONCILE_CRON")
    amocrm_webhook_autorepair: bool = Field(False, alias="AMOCRM_WEBHOOK_AUTOREPAIR")

    # Set by Vercel itself; used to refuse a local file token store and dev mode there.
    vercel: str | None = Field(None, alias="VERCEL")
    # Also set by Vercel (host names without a scheme): the environment (production, preview,
    # development), this deployment's own URL, and the project's production domain (set in
    # previews too, which is why it is used in production only).
    vercel_env: str | None = Field(None, alias="VERCEL_ENV")
    vercel_url: str | None = Field(None, alias="VERCEL_URL")
    vercel_project_production_url: str | None = Field(None, alias="VERCEL_PROJECT_PRODUCTION_URL")
    allow_dev_on_vercel: bool = Field(False, alias="PROMETEI_ALLOW_DEV_ON_VERCEL")

    # ---- validators -------------------------------------------------------------------
    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("amocrm_subdomain", mode="before")
    @classmethod
    def _subdomain(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        cleaned = value.strip().lower()
        # People paste the whole host ("oooprometei.amocrm.ru"); keep the first label only
        # when the rest is a known amoCRM domain.
        for domain in KNOWN_BASE_DOMAINS:
            if cleaned.endswith("." + domain):
                cleaned = cleaned[: -len(domain) - 1]
        if not _SUBDOMAIN_RE.match(cleaned) or cleaned in RESERVED_SUBDOMAINS:
            raise ValueError("must be the account subdomain, e.g. 'oooprometei'")
        return cleaned

    @field_validator("amocrm_trigger_statuses", mode="before")
    @classmethod
    def _trigger_statuses(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs: list[TriggerStatus] = []
        for raw in value.replace(";", ",").split(","):
            item = raw.strip()
            if not item:
                continue
            pipeline, sep, status = item.partition(":")
            if not sep or not pipeline.strip().isdigit() or not status.strip().isdigit():
                raise ValueError(
                    f"{item!r} is not 'pipeline_id:status_id' (example: 7012345:142,7012345:143)"
                )
            pairs.append((int(pipeline), int(status)))
        return tuple(pairs)

    @field_validator("erp_field_map", mode="before")
    @classmethod
    def _field_map(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not valid JSON ({exc.msg} at char {exc.pos})") from None
        if not isinstance(value, dict) or not value:
            raise ValueError('must be a JSON object like {"field_1039": "name"}')
        for erp_field, attribute in value.items():
            if not isinstance(erp_field, str) or not _ERP_FIELD_RE.match(erp_field):
                raise ValueError(f"key {erp_field!r} must look like 'field_1039'")
            if not isinstance(attribute, str) or not (
                attribute in LEAD_ATTRIBUTES or _CUSTOM_FIELD_RE.match(attribute)
            ):
                allowed = ", ".join(LEAD_ATTRIBUTES)
                raise ValueError(
                    f"value {attribute!r} for {erp_field} must be one of {allowed}"
                    " or 'cf:<custom field id>'"
                )
        return value

    @field_validator("erp_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value.strip()

    @field_validator("crm_api_url", "kv_rest_api_url", "amocrm_redirect_uri", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = re.match(r"^https?://([^\s/?#]+)", value)
        if match is None:
            raise ValueError("must be an http(s) URL")
        if "@" in match.group(1):
            # Never echo the value: the part before "@" is a password.
            raise ValueError(
                "must not carry credentials (user:password@host); give them in their own "
                "variables (the ERP login in CRM_API_USERNAME and CRM_API_PASSWORD)"
            )
        return value

    @field_validator("crm_public_url")
    @classmethod
    def _web_base(cls, value: str | None) -> str | None:
        return None if value is None else _checked_web_base(value)

    @field_validator("inngest_serve_origin", "vercel_url", "vercel_project_production_url")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        return None if value is None else normalize_origin(value)

    @field_validator("amocrm_api_base_url")
    @classmethod
    def _amocrm_api_base_url(cls, value: str | None) -> str | None:
        return None if value is None else _checked_api_base_url(value)

    @field_validator("amocrm_reconcile_cron")
    @classmethod
    def _reconcile_cron(cls, value: str) -> str:
        text = " ".join(value.split())
        if text.lower() in RECONCILE_OFF:
            return "off"
        fields = text.split(" ")
        if fields and fields[0].startswith(("TZ=", "CRON_TZ=")):
            fields = fields[1:]
        if len(fields) != 5 or not all(_CRON_FIELD_RE.match(f) for f in fields):
            raise ValueError(
                "must be a cron schedule of five fields like '*/10 * * * *' (optionally "
                "prefixed with TZ=Europe/Moscow), or 'off'"
            )
        return text

    @model_validator(mode="after")
    def _budget_fits(self) -> Settings:
        shares = (
            self.amocrm_budget_runs,
            self.amocrm_budget_backfill,
            self.amocrm_budget_reconcile,
        )
        if sum(shares) > AMOCRM_RATE_LIMIT:
            raise ValueError(
                f"AMOCRM_BUDGET_RUNS ({shares[0]}) + AMOCRM_BUDGET_BACKFILL ({shares[1]}) + "
                f"AMOCRM_BUDGET_RECONCILE ({shares[2]}) = {sum(shares)} requests/s is more than "
                f"amoCRM allows one integration ({AMOCRM_RATE_LIMIT}/s); lower one of them so "
                f"the three add up to {AMOCRM_RATE_LIMIT} or less"
            )
        return self

    @model_validator(mode="after")
    def _no_dev_mode_on_vercel(self) -> Settings:
        # INNGEST_DEV turns off request signing and the webhook secret requirement. Left over
        # in a Vercel environment it would let anyone start runs, so refuse it there.
        if self.on_vercel and self.is_dev and not self.allow_dev_on_vercel:
            raise ValueError(
                "INNGEST_DEV is set on Vercel: dev mode accepts unsigned Inngest calls and "
                "unauthenticated webhooks. Remove INNGEST_DEV from this environment (or set "
                "PROMETEI_ALLOW_DEV_ON_VERCEL=1 for a throwaway preview)"
            )
        return self

    @model_validator(mode="after")
    def _kv_pairs(self) -> Settings:
        if (self.kv_rest_api_url is None) != (self.kv_rest_api_token is None):
            raise ValueError(
                "KV is half-configured: set both KV_REST_API_URL and KV_REST_API_TOKEN "
                "(or both UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN), or neither "
                "to use the local file store"
            )
        return self

    # ---- derived values ---------------------------------------------------------------
    @property
    def is_dev(self) -> bool:
        return _truthy_dev(self.inngest_dev)

    @property
    def mode(self) -> Literal["dev", "cloud"]:
        return "dev" if self.is_dev else "cloud"

    @property
    def on_vercel(self) -> bool:
        return bool(self.vercel)

    @property
    def event_api_origin(self) -> str:
        """Where events are POSTed, with the same precedence the Inngest SDK uses."""
        dev_url = self.inngest_dev if self.is_dev and "://" in (self.inngest_dev or "") else None
        origin = self.inngest_event_api_base_url or self.inngest_base_url or dev_url
        if origin is None:
            origin = DEV_SERVER_ORIGIN if self.is_dev else CLOUD_EVENT_API_ORIGIN
        return origin if origin.endswith("/") else origin + "/"

    @property
    def api_origin(self) -> str | None:
        dev_url = self.inngest_dev if self.is_dev and "://" in (self.inngest_dev or "") else None
        return self.inngest_api_base_url or self.inngest_base_url or dev_url

    @property
    def serve_origin(self) -> tuple[str, str] | None:
        """(origin, the variable it came from) that Inngest must call, or None when unknown.

        INNGEST_SERVE_ORIGIN wins; on Vercel, production uses the project's production domain
        and a preview its own deployment URL. Never the Host header of a request: anyone can
        send that.
        """
        if self.inngest_serve_origin:
            return self.inngest_serve_origin, "INNGEST_SERVE_ORIGIN"
        if not self.on_vercel:
            return None
        if self.vercel_env == "production" and self.vercel_project_production_url:
            return self.vercel_project_production_url, "VERCEL_PROJECT_PRODUCTION_URL"
        if self.vercel_url:
            return self.vercel_url, "VERCEL_URL"
        return None

    @property
    def amocrm_host(self) -> str:
        return f"{self.require_subdomain()}.{self.amocrm_base_domain}"

    @property
    def public_origin(self) -> str | None:
        """`https://host` this deployment is reached at: PUBLIC_URL, else Vercel's production
        domain, else None (then only the request itself can tell)."""
        if self.public_url:
            parts = urlsplit(self.public_url)
            return f"{parts.scheme}://{parts.netloc}"
        host = (self.vercel_project_production_url or "").strip().strip("/")
        if host:
            return host if "://" in host else f"https://{host}"
        return None

    @property
    def erp_web_base(self) -> str | None:
        """Rukovoditel's web address without a trailing slash (record links are
        `<it>/index.php?...`): CRM_PUBLIC_URL, else CRM_API_URL with its `api/rest.php` (and
        anything after it) cut off, else None."""
        if self.crm_public_url:
            return self.crm_public_url
        if not self.crm_api_url:
            return None
        parts = urlsplit(self.crm_api_url)
        path = parts.path
        cut = path.lower().rfind("/api/rest.php")
        base_path = path[:cut] if cut >= 0 else ""
        return f"{parts.scheme}://{parts.netloc}{base_path}".rstrip("/")

    @property
    def writes_back(self) -> bool:
        """True when a sync note or the record id field is on: then every sync remembers what
        it wrote (`prometei.amocrm.writeback`)."""
        return self.amocrm_sync_note or self.amocrm_erp_id_field is not None

    @property
    def reconcile_schedule(self) -> str | None:
        """The amocrm-reconcile cron, or None when AMOCRM_RECONCILE_CRON is off."""
        return None if self.amocrm_reconcile_cron == "off" else self.amocrm_reconcile_cron

    @property
    def uses_long_lived_token(self) -> bool:
        return self.amocrm_access_token is not None

    @property
    def erp_tzinfo(self) -> tzinfo:
        return parse_timezone(self.erp_timezone)

    @property
    def store_kind(self) -> Literal["kv", "file"]:
        return "kv" if self.kv_rest_api_url else "file"

    def require_subdomain(self) -> str:
        if not self.amocrm_subdomain:
            raise ConfigError(
                "AMOCRM_SUBDOMAIN is not set: set it to your account's subdomain "
                "(the 'oooprometei' in oooprometei.amocrm.ru)"
            )
        return self.amocrm_subdomain

    def require(self, *names: str) -> None:
        """Raise one ConfigError naming every listed setting (by env name) that is unset."""
        missing = [name for name in names if getattr(self, _ENV_TO_FIELD[name]) is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} not set; see .env.example for each")

    def require_oauth(self) -> None:
        self.require("AMOCRM_CLIENT_ID", "AMOCRM_CLIENT_SECRET", "AMOCRM_REDIRECT_URI")

    def require_erp(self) -> None:
        self.require("CRM_API_URL", "CRM_API_KEY", "CRM_API_USERNAME", "CRM_API_PASSWORD")

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redaction filter."""
        values = []
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
            del field
        return values


# Every environment variable Settings reads (aliases included) -> its field name.
ENV_NAMES: dict[str, str] = {}
for _name, _field in Settings.model_fields.items():
    _choices = (
        _field.validation_alias.choices
        if isinstance(_field.validation_alias, AliasChoices)
        else [_field.alias]
    )
    for _alias in _choices:
        if isinstance(_alias, str):
            ENV_NAMES[_alias] = _name
_ENV_TO_FIELD = ENV_NAMES  # the old name

# The fields holding a secret (`SecretStr` or `SecretStr | None`).
SECRET_FIELDS = frozenset(
    name
    for name, info in Settings.model_fields.items()
    if SecretStr in getattr(info.annotation, "__args__", (info.annotation,))
)


def secret_env_values(environ: Mapping[str, str]) -> list[str]:
    """The value of every secret variable set in `environ`, well-formed or not.

    For scrubbing output when the configuration may not load; once it has, use
    `Settings.secret_values()`.
    """
    return [
        value
        for env, field_name in ENV_NAMES.items()
        if field_name in SECRET_FIELDS and (value := environ.get(env, "").strip())
    ]


def _env_name(field_name: str) -> str:
    for env, name in _ENV_TO_FIELD.items():
        if name == field_name:
            return env
    return field_name


def settings_from_mapping(environ: Mapping[str, str]) -> Settings:
    """Build Settings from a mapping of env vars; empty values count as unset."""
    values = {key: value for key, value in environ.items() if key in _ENV_TO_FIELD}
    values = {key: value for key, value in values.items() if value.strip() != ""}
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error.get("loc") or ()
            name = str(loc[0]) if loc else ""
            env = name if name in _ENV_TO_FIELD else _env_name(name)
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{env}: {message}" if env else message)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def load_dotenv_file(path: str | os.PathLike[str] = ".env") -> None:
    """Load a local `.env` (never overriding real env vars). Used by local runs only."""
    from dotenv import load_dotenv

    load_dotenv(path, override=False)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; `reset_settings()` drops the cache (tests, CLI)."""
    return settings_from_mapping(os.environ)


def reset_settings() -> None:
    get_settings.cache_clear()
