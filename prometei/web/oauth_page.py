"""`GET /api/oauth/callback`: the amoCRM connect page and the OAuth code exchange.

Without `code` the endpoint shows the connection status and a "Connect amoCRM" button that
leads to amoCRM's authorize URL with a signed, expiring `state`. amoCRM sends the person back
here with `code`, `referer` and `state` (or `from_widget=1` instead of `state` when the
integration is installed as a widget); the handler then checks, in this order and before any
network call, the state, the referer (it must be the configured account on a known
amoCRM/Kommo domain); then it takes the token refresh lock (waiting a few seconds at most),
and only while holding it exchanges the code at the configured account host and stores the
pair, so a refresh can never land on top of the new pair and a busy lock never costs the
single-use code.

Every answer is a small HTML page with the right status (400 bad request/state, 403 foreign
account or access declined, 409 long-lived-token mode, 502 token endpoint failure, 503
misconfiguration, token store down or a refresh in progress). The code, the tokens and the
client secret never appear in a page, a URL a page builds, or a log line.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from flask import Blueprint, Response, request

from prometei.config import Settings
from prometei.errors import (
    ConfigError,
    InputError,
    PrometeiError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from prometei.redaction import redact
from prometei.services import get_services
from prometei.store.base import store_summary
from prometei.web.pages import Link, html_page

if TYPE_CHECKING:
    from prometei.tokens import AccessTokenSource, ManagedTokenSource

log = logging.getLogger(__name__)

CALLBACK_PATH = "/api/oauth/callback"
CODE_LIFETIME_MINUTES = 20  # amoCRM authorization codes: single use, 20 minutes
# How long a Connect button (its signed state) stays valid: time to sign in and click Allow.
STATE_MAX_AGE_S = 15 * 60
_ERROR_CODE_RE = re.compile(r"^[a-z_]{1,64}$")
_MAX_PARAM_LEN = 2048

oauth_blueprint = Blueprint("oauth", __name__)


def _now() -> int:
    """Current Unix time; the single clock of this module (tests replace it)."""
    return int(time.time())


# ---- small helpers ---------------------------------------------------------------------


def _connect_link() -> Link:
    """Back to the connect page, which issues a fresh state (no code in this URL)."""
    return Link("Connect amoCRM again", CALLBACK_PATH)


def _format_time(value: Any) -> str:
    """A status timestamp (epoch seconds, ISO text or datetime) as readable UTC text."""
    if value is None or value == "":
        return "—"
    moment: datetime | None = None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if moment is None:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return _epoch(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _scrub(text: str, *values: str | None) -> str:
    """`redact` plus the request's own one-time values (the code), for texts we show."""
    return redact(text, extra=[value for value in values if value])


def _misconfigured(exc: ConfigError) -> Response:
    log.error("oauth callback: configuration error: %s", exc.message)
    return html_page(
        title="Server misconfigured",
        status=503,
        tone="error",
        paragraphs=[
            exc.message,
            "Set the variables in the Vercel project (Settings → Environment Variables), "
            "redeploy, then open this page again.",
        ],
    )


def _bad_request(title: str, *paragraphs: str, status: int = 400) -> Response:
    return html_page(
        title=title,
        status=status,
        tone="error",
        paragraphs=paragraphs,
        action=_connect_link(),
    )


# ---- the endpoint ----------------------------------------------------------------------

# The page is a GET: a body is unused, so a small one is tolerated and a cut-off one refused.
MAX_BODY_BYTES = 16 * 1024


@oauth_blueprint.before_request
def refuse_broken_bodies() -> Response | None:
    from prometei.web.bodies import BodyRefused, read_body

    try:
        read_body(request, MAX_BODY_BYTES, why="this page takes no body")
    except BodyRefused as refusal:
        log.warning("oauth callback: body refused (%d): %s", refusal.status, refusal.message)
        return _bad_request("Bad request", refusal.message, status=refusal.status)
    return None



@oauth_blueprint.get(CALLBACK_PATH)
def oauth_callback() -> Response:
    """Route one visit: amoCRM's error redirect, the connect page, or a code exchange."""
    args = request.args
    try:
        settings = get_services().settings
        if "error" in args:
            return _declined(args)
        if "code" not in args:
            return _connect_page(settings)
        return _exchange(settings, args)
    except ConfigError as exc:
        return _misconfigured(exc)
    except Exception:  # keep our headers and a readable page even for a bug
        log.exception("oauth callback failed unexpectedly")
        return html_page(
            title="Something went wrong",
            status=500,
            tone="error",
            paragraphs=[
                "The server hit an unexpected error; the details are in the function logs. "
                "Open the connect page to see the current status and try again.",
            ],
            action=_connect_link(),
        )


def _declined(args: Mapping[str, str]) -> Response:
    """amoCRM redirected back with `error=` (the person declined, or amoCRM refused)."""
    raw = args.get("error", "").strip().lower()
    error = raw if _ERROR_CODE_RE.match(raw) else "unknown_error"
    log.warning("oauth callback: amoCRM returned error=%s", error)
    if error == "access_denied":
        return _bad_request(
            "Access was not granted",
            "amoCRM reports that access to the account was declined (access_denied), so no "
            "tokens were issued and nothing changed here.",
            "To connect, click the button below and choose “Allow” on amoCRM's page. The "
            "person connecting must be an administrator of the amoCRM account.",
            status=403,
        )
    return _bad_request(
        "amoCRM did not authorize the connection",
        f"amoCRM redirected back with the error “{error}”; no tokens were issued.",
        "Click the button below to start again. If it keeps failing, check the integration "
        "in amoCRM (Settings → Integrations) and that its Redirect URI matches "
        "AMOCRM_REDIRECT_URI exactly.",
    )


def _connect_page(settings: Settings) -> Response:
    from prometei.amocrm.oauth import OAuthClient, sign_state

    services = get_services()
    host = settings.amocrm_host  # ConfigError names AMOCRM_SUBDOMAIN when unset
    if settings.uses_long_lived_token:
        return _long_lived_page(host, _status_or_none(services.tokens))

    settings.require_oauth()
    try:
        status = _status(services.tokens)
    except UpstreamError as exc:
        log.error("oauth connect page: token store unavailable: %s", exc.message)
        return html_page(
            title="Token store unreachable",
            status=503,
            tone="error",
            paragraphs=[
                "The connection status could not be read from the token store, so connecting "
                "now could not save the tokens either.",
                _scrub(exc.message),
                "Check KV_REST_API_URL / KV_REST_API_TOKEN (or the Vercel KV integration) and "
                "reload this page.",
            ],
        )

    oauth = OAuthClient.from_settings(settings)
    authorize_url = oauth.authorize_url(sign_state(oauth.state_key, _now()))
    connected = bool(status.get("connected"))
    facts = [
        ("Account", host),
        ("Status", "connected" if connected else "not connected"),
        ("Token store", store_summary(status)),
    ]
    if connected:
        facts += _token_facts(status)
    elif status.get("expires_at") is not None and status.get("problem"):
        # A pair is stored but unusable (e.g. it belongs to another account).
        facts.append(("Problem", _scrub(str(status["problem"]))))
    paragraphs = (
        [
            "prometei holds an OAuth token pair for this account and refreshes it by itself "
            "(the amocrm-token-keepalive function runs daily, so the 3-month refresh window "
            "never lapses).",
            "Connect again only if amoCRM access was revoked or the integration changed.",
        ]
        if connected
        else [
            "prometei has no amoCRM tokens yet, so it cannot read leads. Click the button, "
            "sign in to amoCRM as an administrator of the account and allow access.",
        ]
    )
    paragraphs.append(
        f"The button is valid for {STATE_MAX_AGE_S // 60} minutes; reload this page for a "
        "fresh one."
    )
    return html_page(
        title="amoCRM connection",
        status=200,
        tone="ok" if connected else "warn",
        badge="Connected" if connected else "Not connected",
        paragraphs=paragraphs,
        facts=facts,
        action=Link("Connect amoCRM", authorize_url),
    )


def _managed(tokens: AccessTokenSource) -> ManagedTokenSource:
    """The token source with the status/store operations (both kinds implement them)."""
    return cast("ManagedTokenSource", tokens)


def _status(tokens: AccessTokenSource) -> dict[str, Any]:
    return dict(_managed(tokens).status())


def _status_or_none(tokens: AccessTokenSource) -> dict[str, Any] | None:
    try:
        return _status(tokens)
    except PrometeiError:
        return None


def _token_facts(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    expires_at = status.get("expires_at")
    expiry = _format_time(expires_at)
    seconds = _epoch(expires_at)
    if seconds is not None and seconds <= _now():
        expiry += " (expired; renewed automatically on next use)"
    facts = [("Access token valid until", expiry)]
    if status.get("obtained_at"):
        facts.append(("Connected at", _format_time(status.get("obtained_at"))))
    refreshed_at = status.get("refreshed_at")
    facts.append(("Last refresh", _format_time(refreshed_at) if refreshed_at else "never"))
    return facts


def _long_lived_page(host: str, status: Mapping[str, Any] | None) -> Response:
    facts = [("Account", host), ("Mode", "long-lived token (AMOCRM_ACCESS_TOKEN)")]
    if status and status.get("expires_at"):
        facts.append(("Token valid until", _format_time(status.get("expires_at"))))
    return html_page(
        title="amoCRM connection",
        status=200,
        tone="info",
        badge="Long-lived token",
        paragraphs=[
            "This deployment uses a long-lived amoCRM token (AMOCRM_ACCESS_TOKEN), so OAuth "
            "is not used and there is nothing to connect here.",
            "When the token nears its expiry, create a new one in amoCRM (Settings → "
            "Integrations → your private integration → Keys and scopes) and replace "
            "AMOCRM_ACCESS_TOKEN in Vercel.",
            "To switch to OAuth instead: remove AMOCRM_ACCESS_TOKEN, set AMOCRM_CLIENT_ID, "
            "AMOCRM_CLIENT_SECRET and AMOCRM_REDIRECT_URI, redeploy and open this page again.",
        ],
        facts=facts,
    )


# ---- the code exchange -----------------------------------------------------------------


def _refusal(settings: Settings, args: Mapping[str, str], code: str) -> Response | None:
    """The page refusing this redirect, or None when the code may be exchanged.

    Runs before any network call: mode, configuration, the code's shape, the integration,
    the state (absent only for a widget install) and the referer (the configured account).
    """
    if settings.uses_long_lived_token:
        log.warning("oauth callback: code received but AMOCRM_ACCESS_TOKEN mode is on")
        return _bad_request(
            "OAuth is not used by this deployment",
            "This deployment is set up with a long-lived token (AMOCRM_ACCESS_TOKEN), so the "
            "authorization code was not exchanged and nothing was stored.",
            "To use OAuth instead, remove AMOCRM_ACCESS_TOKEN in Vercel and redeploy.",
            status=409,
        )
    settings.require_oauth()

    if not code or len(code) > _MAX_PARAM_LEN:
        return _bad_request(
            "Bad request", "The authorization code in the address is empty or malformed."
        )
    client_id = args.get("client_id")
    if client_id is not None and client_id != settings.amocrm_client_id:
        log.warning("oauth callback: refused a code issued to another integration")
        return _bad_request(
            "Code for another integration",
            "amoCRM issued this code to a different integration than AMOCRM_CLIENT_ID, so it "
            "cannot be used here. Start from this deployment's connect page.",
        )
    return _state_refusal(settings, args, code) or _referer_refusal(settings, args)


def _state_refusal(settings: Settings, args: Mapping[str, str], code: str) -> Response | None:
    from prometei.amocrm.oauth import derive_state_key, verify_state

    state = args.get("state")
    if state:
        try:
            assert settings.amocrm_client_secret is not None  # require_oauth() checked it
            key = derive_state_key(settings.amocrm_client_secret)
            verify_state(state, key, _now(), max_age_s=STATE_MAX_AGE_S)
        except InputError as exc:
            log.warning("oauth callback: state refused: %s", _scrub(exc.message, code, state))
            return _bad_request(
                "This connect link is not valid",
                "The link that brought you here has expired or was not issued by this "
                "deployment, so the code was not used. Connect links are valid for "
                f"{STATE_MAX_AGE_S // 60} minutes.",
                "Click the button to start again from this deployment's connect page.",
            )
        return None
    if args.get("from_widget") == "1":
        return None  # amoCRM's widget install flow sends no state
    log.warning("oauth callback: code without state (and not a widget install)")
    return _bad_request(
        "This connect link is not valid",
        "The address has an authorization code but no state, so it cannot be matched to "
        "a connect request from this deployment. The code was not used.",
        "Click the button to start again from this deployment's connect page.",
    )


def _referer_refusal(settings: Settings, args: Mapping[str, str]) -> Response | None:
    from prometei.amocrm.domains import is_configured_account, parse_referer

    host = settings.amocrm_host
    referer_host = parse_referer(args.get("referer"))
    if referer_host is not None and is_configured_account(
        referer_host, settings.require_subdomain(), settings.amocrm_base_domain
    ):
        return None
    # The referer is attacker-controlled: log and show only that it did not match.
    log.warning("oauth callback: refused a code from another account (expected %s)", host)
    return _bad_request(
        "Another amoCRM account",
        f"This deployment serves the amoCRM account {host} only; the authorization "
        "came from a different or unrecognised account, so the code was not used.",
        f"Sign in to {host} in amoCRM and connect again.",
        status=403,
    )


def _exchange(settings: Settings, args: Mapping[str, str]) -> Response:
    """Check everything that needs no network, then, under the refresh lock, exchange the code
    and store the pair."""
    from prometei.amocrm.oauth import OAuthClient
    from prometei.store.base import TokenRecord
    from prometei.tokens import RefreshInProgress

    code = args.get("code", "").strip()
    host = settings.amocrm_host
    refused = _refusal(settings, args, code)
    if refused is not None:
        return refused

    # Build the store before spending the code: a store that cannot exist (file store on
    # Vercel) is a ConfigError page now, not a wasted code later.
    services = get_services()
    tokens = services.tokens
    store = services.store

    oauth = OAuthClient.from_settings(settings)
    spent: list[UpstreamError | None] = []  # one entry once the code went to amoCRM

    def exchange() -> TokenRecord:
        try:
            record = oauth.exchange_code(code, host)
        except UpstreamError as exc:
            spent.append(exc)
            raise
        spent.append(None)
        return record

    try:
        record = _managed(tokens).exchange_and_store(exchange)
    except RefreshInProgress:
        return _refresh_in_progress()
    except PrometeiError as exc:
        if spent and spent[0] is exc:
            return _exchange_failed(spent[0], code)
        message = exc.message
        if not spent:
            return _store_unreachable(message, code)
        log.error("oauth callback: tokens issued but not stored: %s", _scrub(message, code))
        return html_page(
            title="Tokens could not be saved",
            status=503,
            tone="error",
            paragraphs=[
                "amoCRM issued tokens, but the token store did not accept them, so the "
                "connection is not active. The authorization code is now spent.",
                _scrub(message, code),
                "Fix the token store (KV_REST_API_URL / KV_REST_API_TOKEN, or the Vercel KV "
                "integration), then click Connect amoCRM again.",
            ],
            action=_connect_link(),
        )

    expires = _format_time(record.expires_at)
    log.info("oauth callback: connected %s; access token valid until %s", host, expires)
    return html_page(
        title="amoCRM connected",
        status=200,
        tone="ok",
        paragraphs=[
            f"prometei is now connected to {host}. The tokens are stored server-side and are "
            "never shown.",
            "They are refreshed automatically; the daily amocrm-token-keepalive function keeps "
            "the 3-month refresh window from lapsing. You can close this page.",
        ],
        facts=[
            ("Account", host),
            ("Access token valid until", expires),
            # From the store object, not a status read: no extra round-trip in this request.
            (
                "Token store",
                store_summary({"store": store.kind, "store_description": store.describe()}),
            ),
        ],
        action=Link("Show connection status", CALLBACK_PATH),
    )


def _refresh_in_progress() -> Response:
    """503: the refresh lock stayed taken, so the code was deliberately not used."""
    log.warning("oauth callback: refresh lock busy; the code was not exchanged")
    response = html_page(
        title="A token refresh is in progress",
        status=503,
        tone="warn",
        paragraphs=[
            "Another part of prometei is renewing the amoCRM tokens right now, so connecting "
            "has to wait for it. The authorization code was not used and nothing changed.",
            "Try again in a minute: reload this page (the code stays valid for "
            f"{CODE_LIFETIME_MINUTES} minutes), or click the button to start again.",
        ],
        action=_connect_link(),
    )
    response.headers["Retry-After"] = "60"
    return response


def _store_unreachable(message: str, code: str) -> Response:
    """503: the token store failed before the code was sent anywhere."""
    log.error("oauth callback: token store unavailable: %s", _scrub(message, code))
    return html_page(
        title="Token store unreachable",
        status=503,
        tone="error",
        paragraphs=[
            "The token store did not answer, so the tokens could not have been saved. The "
            "authorization code was not used.",
            _scrub(message, code),
            "Check KV_REST_API_URL / KV_REST_API_TOKEN (or the Vercel KV integration), then "
            "click Connect amoCRM again.",
        ],
        action=_connect_link(),
    )


def _exchange_failed(exc: UpstreamError, code: str) -> Response:
    """The 502 page for a token endpoint that did not hand out a pair."""
    from prometei.amocrm.oauth import AccountMaybeMoved

    detail = _scrub(exc.message, code)
    log.warning("oauth callback: code exchange failed: %s", detail)
    if isinstance(exc, UpstreamRejected) and exc.status in (400, 401):
        return _bad_request(
            "amoCRM refused the authorization code",
            "The code has expired or was already used. An authorization code works once and "
            f"only for {CODE_LIFETIME_MINUTES} minutes: click Connect amoCRM again to get a "
            "new one.",
            "If it keeps failing, check that AMOCRM_REDIRECT_URI matches the integration's "
            "Redirect URI exactly (including a trailing slash).",
            status=502,
        )
    if isinstance(exc, AccountMaybeMoved):
        return _bad_request(
            "The amoCRM account was not found at its address",
            f"{detail}. If the account was renamed or moved to another domain, update "
            "AMOCRM_SUBDOMAIN / AMOCRM_BASE_DOMAIN, redeploy and connect again.",
            status=502,
        )
    if isinstance(exc, UpstreamAuthError):
        return _bad_request(
            "amoCRM refused the request",
            f"{detail}.",
            "Nothing was stored. Fix the cause above, then connect again.",
            status=502,
        )
    if isinstance(exc, UpstreamUnavailable):
        return _bad_request(
            "amoCRM is not answering",
            f"amoCRM's token endpoint failed ({detail}). This is usually temporary: wait a "
            "minute and try again.",
            status=502,
        )
    return _bad_request(
        "The code exchange failed",
        f"amoCRM did not accept the code exchange ({detail}).",
        "Check that AMOCRM_REDIRECT_URI matches the integration's Redirect URI exactly "
        "(including a trailing slash), then connect again.",
        status=502,
    )
