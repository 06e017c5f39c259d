"""`GET /api/oauth/callback`: the amoCRM connect page and the OAuth code exchange.

Without `code` the endpoint is the status page: connected or not (one token-store read, and
nothing written: anyone on the internet may open it), and a "Connect amoCRM" button to
`?start=1`. That start URL issues a state bound to this browser (`prometei.web.connect_state`:
one state-store write and the cookie) and 303-redirects to amoCRM's authorize URL.
amoCRM sends the person back here with `code`, `referer` and `state`; the handler then checks,
in this order and before any network call: the mode and configuration, the code's shape, the
integration, the state (signature, age, single use, and this browser's cookie) and the referer
(the configured account on a known amoCRM/Kommo domain). Then it takes the token refresh lock
(waiting a few seconds at most) and only while holding it spends the state, exchanges the code
at the configured account host and stores the pair, so a refresh can never land on top of the
new pair and a busy lock never costs the single-use code. The state is spent before the code is
sent, and the code is sent only while the exchange and the write still fit in the function's
maxDuration (`prometei.web.connect_budget`); the state commands have their own short deadline.

A code without a state is never exchanged, `from_widget=1` included: amoCRM sends that one when
the integration is installed from its side (reference amocrm.md §2.3), it cannot be tied to the
browser that started a connection, and accepting it would let anyone's code in. That visit gets
a page with the Connect button instead.

Success is a 303 to the plain status page, so reloading never re-sends the spent code. Every
other answer is a small page in the visitor's language (`prometei.web.connect_answers`) with the
right status (400 bad request/state, 403 foreign account or access declined, 409 long-lived-token
mode, 502 token endpoint failure, 503 misconfiguration, token store down, a refresh in
progress, or checks that took too long to leave time for the exchange). The code, the tokens
and the client secret never appear in a page, a URL a page builds, or a log line.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from flask import Blueprint, Response, request

from prometei.config import Settings
from prometei.errors import (
    ConfigError,
    PrometeiError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from prometei.redaction import redact
from prometei.services import get_services
from prometei.web.connect_answers import CALLBACK_PATH, ConnectAnswers
from prometei.web.connect_state import (
    COOKIE_MAX_AGE_S,
    COOKIE_NAME,
    STATE_MAX_AGE_S,
    RedeemableState,
    StateAlreadySpent,
    StateRefused,
    browser_id_from,
    check_state,
    issue_state,
    new_browser_id,
    spend_state,
)
from prometei.web.i18n import explicit_language, pick_language

if TYPE_CHECKING:
    from prometei.tokens import AccessTokenSource, ManagedTokenSource

__all__ = ["CALLBACK_PATH", "STATE_MAX_AGE_S", "oauth_blueprint"]

log = logging.getLogger(__name__)

_ERROR_CODE_RE = re.compile(r"^[a-z_]{1,64}$")
_MAX_PARAM_LEN = 2048
# The page is a GET: a body is unused, so a small one is tolerated and a cut-off one refused.
MAX_BODY_BYTES = 16 * 1024

oauth_blueprint = Blueprint("oauth", __name__)


def _now() -> int:
    """Current Unix time, for the state's age (tests replace it)."""
    return int(time.time())


def _monotonic() -> float:
    """The clock of the callback's time budget (tests replace it)."""
    return time.monotonic()


def _scrub(text: str, *values: str | None) -> str:
    """`redact` plus the request's own one-time values (the code), for texts we show."""
    return redact(text, extra=[value for value in values if value])


def _answers() -> ConnectAnswers:
    return ConnectAnswers(pick_language(request))


# ---- the endpoint ----------------------------------------------------------------------


@oauth_blueprint.before_request
def refuse_broken_bodies() -> Response | None:
    from prometei.web.bodies import BodyRefused, read_body

    try:
        read_body(request, MAX_BODY_BYTES, why="this page takes no body")
    except BodyRefused as refusal:
        log.warning("oauth callback: body refused (%d): %s", refusal.status, refusal.message)
        return _answers().body_refused(refusal.status, refusal.message)
    return None


@oauth_blueprint.get(CALLBACK_PATH)
def oauth_callback() -> Response:
    """Route one visit: amoCRM's error redirect, the status page, or a code exchange."""
    args = request.args
    answers = _answers()
    try:
        settings = get_services().settings
        if "error" in args:
            return _declined(args, answers)
        if "code" in args:
            return _exchange(settings, args, answers)
        if args.get("start") == "1":
            return _start(settings, answers)
        return _status_page(settings, answers)
    except ConfigError as exc:
        log.error("oauth callback: configuration error: %s", exc.message)
        return answers.misconfigured(exc.message)
    except Exception:  # keep our headers and a readable page even for a bug
        log.exception("oauth callback failed unexpectedly")
        return answers.unexpected()


def _declined(args: Mapping[str, str], answers: ConnectAnswers) -> Response:
    """amoCRM redirected back with `error=` (the person declined, or amoCRM refused)."""
    raw = args.get("error", "").strip().lower()
    error = raw if _ERROR_CODE_RE.match(raw) else "unknown_error"
    log.warning("oauth callback: amoCRM returned error=%s", error)
    if error == "access_denied":
        return answers.declined()
    return answers.amo_error(error)


# ---- the status page -------------------------------------------------------------------


def _status_page(settings: Settings, answers: ConnectAnswers) -> Response:
    """Connected or not, for anyone: one token-store read, no state, no cookie."""
    host = settings.amocrm_host  # ConfigError names AMOCRM_SUBDOMAIN when unset
    if settings.uses_long_lived_token:
        return answers.long_lived(host)

    settings.require_oauth()
    try:
        status = _managed(get_services().tokens).status()
    except UpstreamError as exc:
        log.error("oauth connect page: token store unavailable: %s", _scrub(exc.message))
        return answers.store_down_on_status()

    connected = bool(status.get("connected"))
    if not connected and status.get("expires_at") is not None and status.get("problem"):
        # A pair is stored but unusable (e.g. it belongs to another account): logs only.
        log.warning("oauth connect page: stored pair unusable: %s", _scrub(str(status["problem"])))
    return answers.status(
        host,
        connected=connected,
        unusable=not connected and status.get("expires_at") is not None,
        start_url=answers.start_url(explicit_language(request)),
    )


def _start(settings: Settings, answers: ConnectAnswers) -> Response:
    """The Connect button: a state for this browser (one state-store write), the cookie that
    binds it, and a 303 to amoCRM's authorize URL."""
    from prometei.amocrm.oauth import OAuthClient

    host = settings.amocrm_host
    if settings.uses_long_lived_token:
        return answers.long_lived(host)
    settings.require_oauth()
    oauth = OAuthClient.from_settings(settings)
    browser_id = browser_id_from(request.cookies.get(COOKIE_NAME)) or new_browser_id()
    try:
        state = issue_state(
            get_services().connect_state,
            oauth.state_key,
            browser_id,
            _now(),
            explicit_language(request),
        )
    except UpstreamError as exc:
        log.error("oauth connect start: state store unavailable: %s", _scrub(exc.message))
        return answers.store_down_on_start()
    response = answers.redirect(oauth.authorize_url(state))
    response.set_cookie(
        COOKIE_NAME,
        browser_id,
        max_age=COOKIE_MAX_AGE_S,
        path=CALLBACK_PATH,
        secure=_served_over_https(settings),
        httponly=True,
        samesite="Lax",
    )
    return response


def _served_over_https(settings: Settings) -> bool:
    # Behind Vercel's proxy the request itself may look like plain HTTP; the redirect URI is
    # the address people actually use.
    return request.is_secure or (settings.amocrm_redirect_uri or "").startswith("https://")


def _managed(tokens: AccessTokenSource) -> ManagedTokenSource:
    """The token source with the status/store operations (both kinds implement them)."""
    return cast("ManagedTokenSource", tokens)


# ---- the code exchange -----------------------------------------------------------------


def _refusal(
    settings: Settings, args: Mapping[str, str], code: str, answers: ConnectAnswers
) -> Response | None:
    """The page refusing this redirect on its face (no store, no network), or None."""
    if settings.uses_long_lived_token:
        log.warning("oauth callback: code received but AMOCRM_ACCESS_TOKEN mode is on")
        return answers.long_lived_code()
    settings.require_oauth()

    if not code or len(code) > _MAX_PARAM_LEN:
        return answers.bad_code()
    client_id = args.get("client_id")
    if client_id is not None and client_id != settings.amocrm_client_id:
        log.warning("oauth callback: refused a code issued to another integration")
        return answers.other_integration()
    if not args.get("state"):
        if args.get("from_widget") == "1":
            log.warning("oauth callback: widget-install code without state; not exchanged")
            return answers.widget_install()
        log.warning("oauth callback: code without state")
        return answers.state_missing()
    return None


def _redeemable(
    settings: Settings, args: Mapping[str, str], code: str, answers: ConnectAnswers
) -> RedeemableState | Response:
    """The state, once it checks out for this browser; else the page refusing it."""
    from prometei.amocrm.oauth import derive_state_key

    state = args.get("state", "")
    assert settings.amocrm_client_secret is not None  # require_oauth() checked it
    try:
        return check_state(
            get_services().connect_state,
            derive_state_key(settings.amocrm_client_secret),
            state,
            browser_id_from(request.cookies.get(COOKIE_NAME)),
            _now(),
        )
    except StateRefused as refusal:
        log.warning("oauth callback: state refused: %s", _scrub(refusal.detail, code, state))
        if refusal.reason == "used":
            return answers.state_used()
        if refusal.reason == "browser":
            return answers.other_browser()
        return answers.state_invalid()
    except UpstreamError as exc:
        log.error("oauth callback: state store unavailable: %s", _scrub(exc.message, code))
        return answers.store_down_before_exchange()


def _referer_refusal(
    settings: Settings, args: Mapping[str, str], answers: ConnectAnswers
) -> Response | None:
    from prometei.amocrm.domains import is_configured_account, parse_referer

    referer_host = parse_referer(args.get("referer"))
    if referer_host is not None and is_configured_account(
        referer_host, settings.require_subdomain(), settings.amocrm_base_domain
    ):
        return None
    # The referer is attacker-controlled: log and show only that it did not match.
    host = settings.amocrm_host
    log.warning("oauth callback: refused a code from another account (expected %s)", host)
    return answers.foreign_account(host)


def _checked(
    settings: Settings, args: Mapping[str, str], code: str, answers: ConnectAnswers
) -> RedeemableState | Response:
    """The redeemable state once every check before the network passed, else the refusal."""
    refused = _refusal(settings, args, code, answers)
    if refused is not None:
        return refused
    redeemable = _redeemable(settings, args, code, answers)
    if isinstance(redeemable, Response):
        return redeemable
    return _referer_refusal(settings, args, answers) or redeemable


def _exchange(settings: Settings, args: Mapping[str, str], answers: ConnectAnswers) -> Response:
    """Check everything that needs no network, then, under the refresh lock, spend the state,
    exchange the code and store the pair; 303 to the status page."""
    from prometei.amocrm.oauth import OAuthClient
    from prometei.store.base import TokenRecord
    from prometei.web.connect_budget import ConnectBudget

    budget = ConnectBudget(_monotonic)
    code = args.get("code", "").strip()
    host = settings.amocrm_host
    redeemable = _checked(settings, args, code, answers)
    if isinstance(redeemable, Response):
        return redeemable

    # Build the stores before spending anything: a store that cannot exist (file store on
    # Vercel) is a ConfigError page now, not a wasted code later.
    services = get_services()
    tokens = services.tokens
    state_store = services.connect_state
    oauth = OAuthClient.from_settings(settings)
    spent: list[UpstreamError | None] = []  # one entry once the code went to amoCRM

    def exchange() -> TokenRecord:
        # ConnectTooSlow, StateAlreadySpent or a store error here: nothing was sent.
        budget.before_spending_state()
        spend_state(state_store, redeemable.nonce)
        budget.before_sending_code()
        try:
            record = oauth.exchange_code(code, host)
        except UpstreamError as exc:
            spent.append(exc)
            raise
        spent.append(None)
        return record

    try:
        record = _managed(tokens).exchange_and_store(exchange, time_left=budget.time_left)
    except (StateAlreadySpent, PrometeiError) as exc:
        return _not_connected(exc, spent, code, answers)
    log.info("oauth callback: connected %s; access token valid until %s", host, record.expires_at)
    return answers.see_other(redeemable.lang)


def _not_connected(
    exc: Exception, spent: list[UpstreamError | None], code: str, answers: ConnectAnswers
) -> Response:
    """The page for an exchange that did not end with a stored pair; `spent` says whether
    the code reached amoCRM."""
    from prometei.tokens import RefreshInProgress
    from prometei.web.connect_budget import ConnectTooSlow

    if isinstance(exc, ConnectTooSlow):
        log.error("oauth callback: %s", exc.message)
        return answers.too_slow()
    if isinstance(exc, StateAlreadySpent):
        log.warning("oauth callback: state spent by a concurrent request; code not sent")
        return answers.state_used()
    if isinstance(exc, RefreshInProgress):
        log.warning("oauth callback: refresh lock busy; the code was not exchanged")
        return answers.refresh_in_progress()
    message = _scrub(exc.message if isinstance(exc, PrometeiError) else str(exc), code)
    if spent and spent[0] is exc:
        return _exchange_failed(spent[0], code, answers)
    if not spent:
        log.error("oauth callback: token store unavailable: %s", message)
        return answers.store_down_before_exchange()
    log.error("oauth callback: tokens issued but not stored: %s", message)
    return answers.not_saved()


def _exchange_failed(exc: UpstreamError, code: str, answers: ConnectAnswers) -> Response:
    """The 502 page for a token endpoint that did not hand out a pair."""
    from prometei.amocrm.oauth import AccountMaybeMoved

    detail = _scrub(exc.message, code)
    log.warning("oauth callback: code exchange failed: %s", detail)
    if isinstance(exc, UpstreamRejected) and exc.status in (400, 401):
        return answers.refused_code()
    if isinstance(exc, AccountMaybeMoved):
        return answers.account_moved(detail)
    if isinstance(exc, UpstreamAuthError):
        return answers.amo_refused(detail)
    if isinstance(exc, UpstreamUnavailable):
        return answers.amo_down(detail)
    return answers.exchange_failed(detail)
