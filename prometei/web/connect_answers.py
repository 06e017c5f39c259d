"""Every answer of `/api/oauth/callback`, as a page in the visitor's language.

`ConnectAnswers(lang)` has one method per page; `prometei.web.oauth_page` decides which one a
visit gets. Pages for anonymous visitors say connected / not connected and offer the Connect
button: no token store location, no token times (those are in `python -m prometei tokens
status`, which needs the deployment's variables). Nothing here ever shows a code, a token or
a secret: messages that come from errors are scrubbed by the caller.
"""

from __future__ import annotations

import logging

from flask import Response

from prometei.web.connect_state import STATE_MAX_AGE_S
from prometei.web.connect_texts import TEXTS
from prometei.web.i18n import Lang, Texts
from prometei.web.pages import PAGE_HEADERS, Link, Tone, html_page

log = logging.getLogger(__name__)

CALLBACK_PATH = "/api/oauth/callback"
CODE_LIFETIME_MINUTES = 20  # amoCRM authorization codes: single use, 20 minutes


class ConnectAnswers:
    def __init__(self, lang: Lang) -> None:
        self.lang = lang
        self.t = Texts(TEXTS, lang)

    # ---- building blocks ----------------------------------------------------------------
    def page(
        self,
        title: str,
        *paragraphs: str,
        status: int,
        tone: Tone,
        facts: list[tuple[str, str]] | None = None,
        action: Link | None = None,
        badge: str | None = None,
    ) -> Response:
        return html_page(
            title=title,
            status=status,
            tone=tone,
            paragraphs=paragraphs,
            facts=facts or [],
            action=action,
            badge=badge,
            lang=self.lang,
            switch_base=CALLBACK_PATH,
        )

    def error(self, title: str, *paragraphs: str, status: int = 400) -> Response:
        """A refusal page with the way back: the connect page, which issues a fresh state."""
        return self.page(
            title, *paragraphs, status=status, tone="error", action=self.connect_again()
        )

    def notice(self, action: Link, title: str, *paragraphs: str) -> Response:
        """A 400 that is not the visitor's fault (an install, a spent link): no red badge."""
        return self.page(title, *paragraphs, status=400, tone="warn", action=action)

    def connect_again(self) -> Link:
        return Link(self.t("action.connect_again"), CALLBACK_PATH)

    def status_link(self) -> Link:
        return Link(self.t("action.status"), CALLBACK_PATH)

    def start_url(self, lang: str | None) -> str:
        """The Connect button's target: this endpoint issues the state, then 303 to amoCRM."""
        suffix = f"&lang={lang}" if lang in ("ru", "en") else ""
        return f"{CALLBACK_PATH}?start=1{suffix}"

    def redirect(self, location: str) -> Response:
        """303 to `location` (amoCRM's authorize URL), with the pages' no-store headers."""
        response = Response(status=303, headers={"Location": location})
        response.headers.update(PAGE_HEADERS)
        return response

    def see_other(self, lang: str | None) -> Response:
        """303 to the plain status page: a reload there never re-sends the spent code."""
        location = f"{CALLBACK_PATH}?lang={lang}" if lang in ("ru", "en") else CALLBACK_PATH
        return self.redirect(location)

    # ---- the status page ----------------------------------------------------------------
    def status(self, host: str, *, connected: bool, unusable: bool, start_url: str) -> Response:
        t = self.t
        if connected:
            paragraphs = [t("status.connected.p1"), t("status.connected.p2")]
        elif unusable:
            paragraphs = [t("status.unusable.p1")]
        else:
            paragraphs = [t("status.not_connected.p1")]
        paragraphs += [t("status.button_valid", minutes=STATE_MAX_AGE_S // 60), t("status.details")]
        state = t("status.connected" if connected else "status.not_connected")
        return self.page(
            t("status.title"),
            *paragraphs,
            status=200,
            tone="ok" if connected else "warn",
            badge=t("badge.connected" if connected else "badge.not_connected"),
            facts=[(t("fact.account"), host), (t("fact.status"), state)],
            action=Link(t("action.connect"), start_url),
        )

    def long_lived(self, host: str) -> Response:
        t = self.t
        return self.page(
            t("status.title"),
            t("long_lived.p1"),
            t("long_lived.p2"),
            t("long_lived.p3"),
            status=200,
            tone="info",
            badge=t("badge.long_lived"),
            facts=[(t("fact.account"), host), (t("fact.mode"), t("long_lived.mode"))],
        )

    # ---- server-side problems -----------------------------------------------------------
    def misconfigured(self, message: str) -> Response:
        t = self.t
        return self.page(
            t("misconfigured.title"), message, t("misconfigured.p2"), status=503, tone="error"
        )

    def unexpected(self) -> Response:
        t = self.t
        return self.error(t("unexpected.title"), t("unexpected.p1"), status=500)

    def store_down_on_status(self) -> Response:
        t = self.t
        return self.page(
            t("store_down.title"),
            t("store_down.status_p1"),
            t("store_down.fix"),
            status=503,
            tone="error",
        )

    def store_down_on_start(self) -> Response:
        t = self.t
        return self.error(
            t("store_down.title"), t("store_down.start_p1"), t("store_down.fix"), status=503
        )

    def too_slow(self) -> Response:
        t = self.t
        return self.error(t("too_slow.title"), t("too_slow.p1"), t("too_slow.p2"), status=503)

    def store_down_before_exchange(self) -> Response:
        t = self.t
        return self.error(
            t("store_down.title"), t("store_down.exchange_p1"), t("store_down.fix"), status=503
        )

    def not_saved(self) -> Response:
        t = self.t
        return self.error(t("not_saved.title"), t("not_saved.p1"), t("not_saved.p2"), status=503)

    def refresh_in_progress(self) -> Response:
        t = self.t
        response = self.error(
            t("busy.title"),
            t("busy.p1"),
            t("busy.p2", minutes=CODE_LIFETIME_MINUTES),
            status=503,
        )
        response.headers["Retry-After"] = "60"
        return response

    def body_refused(self, status: int, message: str) -> Response:
        return self.error(self.t("bad_request"), self.t("body.p1", message=message), status=status)

    # ---- the redirect back from amoCRM --------------------------------------------------
    def declined(self) -> Response:
        t = self.t
        return self.error(t("declined.title"), t("declined.p1"), t("declined.p2"), status=403)

    def amo_error(self, error: str) -> Response:
        t = self.t
        return self.error(t("amo_error.title"), t("amo_error.p1", error=error), t("amo_error.p2"))

    def long_lived_code(self) -> Response:
        t = self.t
        return self.error(
            t("long_lived_code.title"),
            t("long_lived_code.p1"),
            t("long_lived_code.p2"),
            status=409,
        )

    def bad_code(self) -> Response:
        return self.error(self.t("bad_request"), self.t("bad_code.p1"))

    def other_integration(self) -> Response:
        t = self.t
        return self.error(t("other_integration.title"), t("other_integration.p1"))

    def state_invalid(self) -> Response:
        t = self.t
        return self.error(
            t("state.invalid.title"),
            t("state.invalid.p1", minutes=STATE_MAX_AGE_S // 60),
            t("state.restart"),
        )

    def state_missing(self) -> Response:
        t = self.t
        return self.error(t("state.invalid.title"), t("state.missing.p1"), t("state.restart"))

    def widget_install(self) -> Response:
        t = self.t
        action = Link(t("action.connect"), CALLBACK_PATH)
        return self.notice(action, t("widget.title"), t("widget.p1"), t("widget.p2"))

    def other_browser(self) -> Response:
        t = self.t
        return self.error(t("browser.title"), t("browser.p1"), t("browser.p2"))

    def state_used(self) -> Response:
        t = self.t
        return self.notice(self.status_link(), t("used.title"), t("used.p1"), t("used.p2"))

    def foreign_account(self, host: str) -> Response:
        t = self.t
        return self.error(
            t("foreign.title"), t("foreign.p1", host=host), t("foreign.p2", host=host), status=403
        )

    # ---- the token endpoint's answer ----------------------------------------------------
    def refused_code(self) -> Response:
        t = self.t
        return self.error(
            t("refused_code.title"),
            t("refused_code.p1", minutes=CODE_LIFETIME_MINUTES),
            t("redirect_uri.hint"),
            status=502,
        )

    def account_moved(self, detail: str) -> Response:
        t = self.t
        return self.error(t("moved.title"), t("moved.p1", detail=detail), status=502)

    def amo_refused(self, detail: str) -> Response:
        t = self.t
        return self.error(t("amo_refused.title"), f"{detail}.", t("amo_refused.p2"), status=502)

    def amo_down(self, detail: str) -> Response:
        t = self.t
        return self.error(t("amo_down.title"), t("amo_down.p1", detail=detail), status=502)

    def exchange_failed(self, detail: str) -> Response:
        t = self.t
        return self.error(
            t("exchange_failed.title"),
            t("exchange_failed.p1", detail=detail),
            t("redirect_uri.hint"),
            status=502,
        )
