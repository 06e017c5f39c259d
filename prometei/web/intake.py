"""amoCRM webhook intake: `/api/webhook` (and amoCRM form POSTs to `/api/inngest`).

POST: check the configuration, the `?token=` secret, the content type and size, parse the
bracket form, check the sender account, turn lead items into events and hand them to Inngest
in one call. amoCRM waits at most 2 s and retries anything but 2xx, so the send has a short
timeout and every failure to hand events over is a 503 (nothing is lost: amoCRM retries and the
deterministic event ids make the retry harmless). Bad input is a 4xx with a JSON message, never
a 500. GET: a readiness report with booleans only, never a secret value.

The TypeScript version's URLs (`/api/amocrm-webhook`, and `/api/inngest` for form POSTs) get
the same handling; without ?token= they are refused with the URL to use instead, unless the
switch-over opt-in AMOCRM_WEBHOOK_ALLOW_LEGACY_URL=1 is on.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import flask
from pydantic import SecretStr

from prometei.amocrm.webhook import WebhookAccount, account_problem, parse_webhook
from prometei.config import Settings, dev_server_command
from prometei.errors import ConfigError, InputError, PrometeiError
from prometei.events import build_lead_events
from prometei.services import Services, get_services
from prometei.web.bodies import BodyRefused, read_body
from prometei.web.responses import json_error

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/webhook"
# The TypeScript version's intake URL (its pages/api/amocrm-webhook.ts), still in amoCRM
# accounts set up back then: same handling, plus the tokenless rule in `_check_token`.
LEGACY_WEBHOOK_PATH = "/api/amocrm-webhook"
FORM_MIMETYPE = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 1024 * 1024
# (connect, read) seconds for the event API: amoCRM gives up after 2 s.
SEND_TIMEOUT: tuple[float, float] = (1.0, 1.2)

intake_blueprint = flask.Blueprint("amocrm_intake", __name__)


class _Refusal(Exception):
    """An early answer (4xx/503) with its message; raised by the checks below."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@intake_blueprint.route(WEBHOOK_PATH, methods=["POST"])
@intake_blueprint.route(LEGACY_WEBHOOK_PATH, methods=["POST"])
def webhook_post() -> flask.Response:
    return handle_webhook()


@intake_blueprint.route(WEBHOOK_PATH, methods=["GET"])
@intake_blueprint.route(LEGACY_WEBHOOK_PATH, methods=["GET"])
def webhook_readiness() -> flask.Response:
    return readiness_response()


# ---- POST ----------------------------------------------------------------------------------


def handle_webhook() -> flask.Response:
    """Handle the current request as an amoCRM webhook POST (used by both endpoints)."""
    try:
        return _accept(flask.request)
    except _Refusal as refusal:
        log.warning("amoCRM webhook refused (%d): %s", refusal.status, refusal.message)
        return json_error(refusal.status, refusal.message)
    except Exception:
        # A bug, not bad input: answer 503 so amoCRM retries instead of losing the change.
        log.exception("amoCRM webhook failed unexpectedly")
        return json_error(
            503, "internal error while handling the webhook; amoCRM will retry it (see logs)"
        )


def _accept(request: flask.Request) -> flask.Response:
    services = _services()
    settings = services.settings
    subdomain = _check_config(settings)
    _check_content_type(request)
    _check_token(request, settings)  # before the body is read
    body = _read_body(request)
    try:
        payload = parse_webhook(body)
    except InputError as exc:
        raise _Refusal(400, f"malformed webhook body: {exc.message}") from None
    _check_account(payload.account, settings, subdomain)

    batch = build_lead_events(payload, trigger_statuses=settings.amocrm_trigger_statuses)
    inngest_ids = _send(services, batch.events, request) if batch.events else []
    log.info(
        "amoCRM webhook: accepted=%d ignored=%d lead_items=%d",
        len(batch.events),
        batch.ignored,
        len(payload.leads),
        extra={
            "fields": {
                "accepted": len(batch.events),
                "ignored": batch.ignored,
                "actions": sorted({item.action for item in payload.leads}),
                "lead_ids": [event["data"]["lead_id"] for event in batch.events],
            }
        },
    )
    return flask.jsonify(
        {
            "accepted": len(batch.events),
            "ignored": batch.ignored,
            # Ours, deterministic: what an operator searches the Inngest dashboard for, and
            # the same on every redelivery of this webhook.
            "event_ids": [event["id"] for event in batch.events],
            # Inngest's own ids for this delivery (new ones on every redelivery), in the same
            # order: what its REST API takes (`/v1/events/<id>/runs`).
            "inngest_ids": inngest_ids,
        }
    )


def _services() -> Services:
    try:
        return get_services()
    except ConfigError as exc:
        raise _Refusal(503, f"server misconfigured: {exc.message}") from None


def _check_config(settings: Settings) -> str:
    """The configured subdomain; 503 when the intake cannot work with these settings."""
    if not settings.amocrm_subdomain:
        raise _Refusal(
            503,
            "server misconfigured: AMOCRM_SUBDOMAIN is not set; set it to the account's "
            "subdomain (the 'oooprometei' in oooprometei.amocrm.ru)",
        )
    if settings.amocrm_webhook_secret is None and not settings.is_dev:
        raise _Refusal(
            503,
            "server misconfigured: AMOCRM_WEBHOOK_SECRET is not set; set a long random value "
            "and add ?token=<that value> to the webhook URL in amoCRM",
        )
    return settings.amocrm_subdomain


def _check_token(request: flask.Request, settings: Settings) -> None:
    secret = settings.amocrm_webhook_secret
    if secret is None:
        log.warning(
            "AMOCRM_WEBHOOK_SECRET is not set: accepting the webhook without ?token= "
            "(allowed in dev mode only)"
        )
        return
    supplied = request.args.get("token", "")
    if not supplied and request.path != WEBHOOK_PATH:
        # An old URL (/api/amocrm-webhook, /api/inngest) as the TypeScript version had it.
        _check_tokenless_legacy_url(request, settings)
        return
    if _token_matches(supplied, secret):
        return
    previous = settings.amocrm_webhook_secret_previous
    if previous is not None and _token_matches(supplied, previous):
        log.warning(
            "webhook accepted with AMOCRM_WEBHOOK_SECRET_PREVIOUS: switch the URL in amoCRM "
            "to ?token=<AMOCRM_WEBHOOK_SECRET>, then unset AMOCRM_WEBHOOK_SECRET_PREVIOUS"
        )
        return
    raise _Refusal(
        401,
        "missing or wrong ?token= in the webhook URL; it must equal AMOCRM_WEBHOOK_SECRET "
        "(check the URL in amoCRM's webhook settings)",
    )


def _token_matches(supplied: str, secret: SecretStr) -> bool:
    # Bytes, not str: compare_digest refuses non-ASCII str.
    return bool(supplied) and hmac.compare_digest(
        supplied.encode("utf-8", "surrogatepass"), secret.get_secret_value().encode("utf-8")
    )


def _check_tokenless_legacy_url(request: flask.Request, settings: Settings) -> None:
    """Refuse a tokenless old URL, naming the URL to use instead, unless the opt-in is on.

    With AMOCRM_WEBHOOK_ALLOW_LEGACY_URL=1 the webhook goes on (the account check and the
    fresh fetch of the lead still apply), with a warning in the log every time.
    """
    new_url, origin_source = intake_url_hint(request, settings)
    if settings.amocrm_webhook_allow_legacy_url:
        # Worded without "token=": the log scrubber would mask the placeholder after it.
        log.warning(
            "accepted a webhook without ?token= on the old URL %s (AMOCRM_WEBHOOK_ALLOW_LEGACY_URL"
            "=1); in amoCRM use %s with the token parameter set to AMOCRM_WEBHOOK_SECRET, then "
            "turn the opt-in off",
            request.path,
            new_url.partition("?")[0],
        )
        return
    raise _Refusal(
        401,
        f"{request.path} without ?token= is the TypeScript version's webhook URL and is refused: "
        f"in amoCRM (Settings -> Integrations -> Web hooks) replace it with {new_url} "
        f"(origin from {origin_source}); to accept the old URL until then, set "
        "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL=1",
    )


def intake_url_hint(request: flask.Request, settings: Settings) -> tuple[str, str]:
    """The intake URL to put into amoCRM, with the token as a placeholder, and its origin's source.

    The origin is PUBLIC_URL, else Vercel's production domain, else this request's own Host
    (fine here: the URL is only shown, never called).
    """
    origin = settings.public_origin
    if origin is not None:
        source = "PUBLIC_URL" if settings.public_url else "VERCEL_PROJECT_PRODUCTION_URL"
    else:
        scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
        origin = f"{scheme or 'https'}://{request.host[:253]}"
        source = "this request's Host header; set PUBLIC_URL to be sure"
    return f"{origin}{WEBHOOK_PATH}?token=<AMOCRM_WEBHOOK_SECRET>", source


def _check_content_type(request: flask.Request) -> None:
    if request.mimetype != FORM_MIMETYPE:
        shown = request.mimetype or "none"
        raise _Refusal(
            415, f"expected Content-Type {FORM_MIMETYPE} (an amoCRM webhook), got {shown[:80]}"
        )


def _read_body(request: flask.Request) -> bytes:
    # Whole, bounded, and refused when shorter than its Content-Length (prometei.web.bodies).
    try:
        return read_body(request, MAX_BODY_BYTES, why="amoCRM webhooks are far smaller")
    except BodyRefused as refusal:
        raise _Refusal(refusal.status, refusal.message) from None


def _check_account(account: WebhookAccount, settings: Settings, subdomain: str) -> None:
    problem = account_problem(account, subdomain=subdomain, account_id=settings.amocrm_account_id)
    if problem is not None:
        raise _Refusal(403, problem)


def _send(services: Services, events: list[dict[str, Any]], request: flask.Request) -> list[str]:
    try:
        return services.events.send(events, timeout=SEND_TIMEOUT)
    except ConfigError as exc:
        raise _Refusal(503, f"server misconfigured: {exc.message}") from None
    except PrometeiError as exc:
        settings = services.settings
        if settings.is_dev:
            # Locally the sender is a developer (or `webhook send`), and nothing retries.
            serve_url = f"{request.host_url.rstrip('/')}/api/inngest"
            raise _Refusal(
                503,
                f"could not hand the events to the Inngest dev server at "
                f"{settings.event_api_origin} ({exc.message}); start it with "
                f"`{dev_server_command(serve_url)}` (or point INNGEST_DEV at where it runs), "
                "then send the webhook again",
            ) from None
        raise _Refusal(
            503,
            f"could not hand the events to Inngest ({exc.message}); amoCRM will retry the "
            "webhook, so nothing is lost; if it persists, check Inngest's status and "
            "INNGEST_EVENT_KEY",
        ) from None


# ---- GET readiness -------------------------------------------------------------------------

# Env name -> Settings attribute, for the presence report.
_REPORTED: dict[str, str] = {
    "AMOCRM_SUBDOMAIN": "amocrm_subdomain",
    "AMOCRM_ACCOUNT_ID": "amocrm_account_id",
    "AMOCRM_WEBHOOK_SECRET": "amocrm_webhook_secret",
    "AMOCRM_TRIGGER_STATUSES": "amocrm_trigger_statuses",
    "AMOCRM_ACCESS_TOKEN": "amocrm_access_token",
    "AMOCRM_CLIENT_ID": "amocrm_client_id",
    "AMOCRM_CLIENT_SECRET": "amocrm_client_secret",
    "AMOCRM_REDIRECT_URI": "amocrm_redirect_uri",
    "INNGEST_EVENT_KEY": "inngest_event_key",
    "INNGEST_SIGNING_KEY": "inngest_signing_key",
    "CRM_API_URL": "crm_api_url",
    "CRM_API_KEY": "crm_api_key",
    "CRM_API_USERNAME": "crm_api_username",
    "CRM_API_PASSWORD": "crm_api_password",
    "KV_REST_API_URL": "kv_rest_api_url",
    "KV_REST_API_TOKEN": "kv_rest_api_token",
}


def readiness_response() -> flask.Response:
    """The GET report: 200 when nothing blocks the pipeline, else 503 with `problems`."""
    try:
        services = get_services()
    except ConfigError as exc:
        report: dict[str, Any] = {"ok": False, "problems": [exc.message]}
    else:
        report = readiness_report(services.settings)
        problem = _connection_problem(services)
        if problem:
            report["problems"].append(problem)
            report["ok"] = False
    response = flask.jsonify(report)
    response.status_code = 200 if report["ok"] else 503
    return response


def _connection_problem(services: Services) -> str | None:
    """OAuth mode only: why no usable token pair is stored (one store read), or None."""
    settings = services.settings
    if settings.uses_long_lived_token or not all(
        (settings.amocrm_subdomain, settings.amocrm_client_id, settings.amocrm_client_secret)
    ):
        return None  # long-lived token, or the missing settings already have their line
    try:
        status = services.tokens.status()
    except ConfigError as exc:  # e.g. no token store on Vercel without KV
        return exc.message
    except PrometeiError:
        return (
            "the token store cannot be read, so amoCRM calls will fail; run "
            "`python -m prometei doctor` (kv row)."
        )
    if status.get("connected"):
        return None
    return (
        "amoCRM is not connected: OAuth mode has no usable token pair stored; open "
        "/api/oauth/callback and click Connect amoCRM."
    )


def readiness_report(settings: Settings) -> dict[str, Any]:
    """Mode, store kind, token mode, which settings are present, and what blocks the pipeline.

    Booleans and fixed sentences only: no setting's value ever appears here.
    """
    present = {env: _is_set(getattr(settings, attr)) for env, attr in _REPORTED.items()}
    problems = _problems(settings, present)
    return {
        "ok": not problems,
        "mode": settings.mode,
        "store": settings.store_kind,
        "token_mode": "long-lived" if settings.uses_long_lived_token else "oauth",
        "settings": present,
        "problems": problems,
    }


def _is_set(value: Any) -> bool:
    return value is not None and value != ()


def _problems(settings: Settings, present: dict[str, bool]) -> list[str]:
    problems: list[str] = []
    if not present["AMOCRM_SUBDOMAIN"]:
        problems.append("AMOCRM_SUBDOMAIN is not set: every webhook is refused (503).")
    if not settings.is_dev:
        if not present["AMOCRM_WEBHOOK_SECRET"]:
            problems.append(
                "AMOCRM_WEBHOOK_SECRET is not set: webhooks are refused (503) in cloud mode."
            )
        if not present["INNGEST_EVENT_KEY"]:
            problems.append("INNGEST_EVENT_KEY is not set: events cannot be sent to Inngest (503).")
        if not present["INNGEST_SIGNING_KEY"]:
            problems.append(
                "INNGEST_SIGNING_KEY is not set: Inngest cannot call /api/inngest in cloud mode."
            )
    oauth = ("AMOCRM_CLIENT_ID", "AMOCRM_CLIENT_SECRET", "AMOCRM_REDIRECT_URI")
    if not settings.uses_long_lived_token and not all(present[name] for name in oauth):
        problems.append(
            "No amoCRM credentials: set AMOCRM_ACCESS_TOKEN, or AMOCRM_CLIENT_ID, "
            "AMOCRM_CLIENT_SECRET and AMOCRM_REDIRECT_URI for OAuth."
        )
    erp = ("CRM_API_URL", "CRM_API_KEY", "CRM_API_USERNAME", "CRM_API_PASSWORD")
    missing_erp = [name for name in erp if not present[name]]
    if missing_erp:
        problems.append(f"{', '.join(missing_erp)} not set: leads cannot be written to the ERP.")
    return problems
