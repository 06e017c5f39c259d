"""amoCRM webhook intake: `/api/webhook` (and amoCRM form POSTs to `/api/inngest`).

POST: check the configuration, the `?token=` secret, the content type and size, parse the
bracket form, check the sender account, turn lead items into events and hand them to Inngest
in one call. amoCRM waits at most 2 s and retries anything but 2xx, so the send has a short
timeout and every failure to hand events over is a 503 (nothing is lost: amoCRM retries and the
deterministic event ids make the retry harmless). Bad input is a 4xx with a JSON message, never
a 500. GET: a readiness report with booleans only, never a secret value.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import flask

from prometei.amocrm.webhook import WebhookAccount, parse_webhook
from prometei.config import KNOWN_BASE_DOMAINS, Settings
from prometei.errors import ConfigError, InputError, PrometeiError
from prometei.events import build_lead_events
from prometei.services import Services, get_services
from prometei.web.responses import json_error

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/webhook"
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
def webhook_post() -> flask.Response:
    return handle_webhook()


@intake_blueprint.route(WEBHOOK_PATH, methods=["GET"])
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
    inngest_ids = _send(services, batch.events) if batch.events else []
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
    # Bytes, not str: compare_digest refuses non-ASCII str.
    if not supplied or not hmac.compare_digest(
        supplied.encode("utf-8", "surrogatepass"), secret.get_secret_value().encode("utf-8")
    ):
        raise _Refusal(
            401,
            "missing or wrong ?token= in the webhook URL; it must equal AMOCRM_WEBHOOK_SECRET "
            "(check the URL in amoCRM's webhook settings)",
        )


def _check_content_type(request: flask.Request) -> None:
    if request.mimetype != FORM_MIMETYPE:
        shown = request.mimetype or "none"
        raise _Refusal(
            415, f"expected Content-Type {FORM_MIMETYPE} (an amoCRM webhook), got {shown[:80]}"
        )


def _read_body(request: flask.Request) -> bytes:
    too_large = _Refusal(
        413, f"body is larger than {MAX_BODY_BYTES} bytes; amoCRM webhooks are far smaller"
    )
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise too_large
    # Read the raw bytes ourselves (never request.form: it would consume the body) and read
    # one byte more than allowed, so a body without (or with a lying) Content-Length is caught.
    try:
        body = request.stream.read(MAX_BODY_BYTES + 1)
    except Exception:
        raise _Refusal(400, "could not read the request body (client disconnected?)") from None
    if len(body) > MAX_BODY_BYTES:
        raise too_large
    return body


def _check_account(account: WebhookAccount, settings: Settings, subdomain: str) -> None:
    if account.subdomain != subdomain:
        raise _Refusal(
            403,
            f"webhook comes from account {account.subdomain[:63]!r}, but this deployment "
            f"serves {subdomain!r} (AMOCRM_SUBDOMAIN)",
        )
    expected_id = settings.amocrm_account_id
    if expected_id is not None and account.id is not None and account.id != expected_id:
        raise _Refusal(
            403,
            f"webhook comes from account id {account.id}, but AMOCRM_ACCOUNT_ID is {expected_id}",
        )
    allowed_hosts = {f"{subdomain}.{domain}" for domain in KNOWN_BASE_DOMAINS}
    if account.self_host is not None and account.self_host not in allowed_hosts:
        raise _Refusal(
            403,
            f"account[_links][self] points to {account.self_host[:100]!r}, not to "
            f"{subdomain}.amocrm.ru/.amocrm.com/.kommo.com",
        )


def _send(services: Services, events: list[dict[str, Any]]) -> list[str]:
    try:
        return services.events.send(events, timeout=SEND_TIMEOUT)
    except ConfigError as exc:
        raise _Refusal(503, f"server misconfigured: {exc.message}") from None
    except PrometeiError as exc:
        raise _Refusal(
            503,
            f"could not hand the events to Inngest ({exc.message}); amoCRM will retry the "
            "webhook, nothing is lost",
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
        settings = get_services().settings
    except ConfigError as exc:
        report: dict[str, Any] = {"ok": False, "problems": [exc.message]}
    else:
        report = readiness_report(settings)
    response = flask.jsonify(report)
    response.status_code = 200 if report["ok"] else 503
    return response


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
