"""The connect flow's OAuth `state`: signed, bound to the browser that asked for it, used once.

Issue (`issue_state`, when the Connect button's start URL is opened, never on a mere view of
the page): a signed state
`<time>.<nonce>.<mac>` (`prometei.amocrm.oauth.sign_state`) goes into the authorize URL, and
`oauth-state:<nonce>` goes into the shared StateStore (KV, or the local state folder) for
`STATE_MAX_AGE_S`, holding the SHA-256 of the browser's random id. The id itself lives in an
HttpOnly, SameSite=Lax cookie scoped to the callback path (Secure whenever the page is served
over https). A browser keeps its id across clicks, so two open tabs both work.

Redeem, on amoCRM's redirect back: `check_state` wants a good signature and age, a stored
entry, and a cookie that hashes to it (compared in constant time); `spend_state` then deletes
the entry atomically, so exactly one request wins. The callback spends it under the refresh
lock, right before the code goes to amoCRM: a busy lock or a store failure leave the state
usable, and a replayed or reloaded redirect never reaches amoCRM.

A link that someone else started (login CSRF: their code, their state) fails in a victim's
browser, which has no matching cookie; a stolen state is useless without that browser's cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prometei.errors import InputError

if TYPE_CHECKING:
    from prometei.store.base import StateStore

COOKIE_NAME = "prometei_connect"
KEY_PREFIX = "oauth-state:"
# How long a Connect button (its state) stays valid: time to sign in and click Allow.
STATE_MAX_AGE_S = 15 * 60
# The browser id's cookie outlives one button, so a person can reload and retry.
COOKIE_MAX_AGE_S = 24 * 3600
_BROWSER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")

RefusalReason = Literal["invalid", "used", "browser"]


class StateRefused(Exception):
    """The state cannot be redeemed: `reason` says which page to show, `detail` is for logs."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class StateAlreadySpent(Exception):
    """Another request redeemed this state first (between `check_state` and `spend_state`)."""


@dataclass(frozen=True)
class RedeemableState:
    nonce: str
    lang: str | None  # the language chosen with ?lang= on the connect page, if any


def new_browser_id() -> str:
    return secrets.token_urlsafe(32)


def browser_id_from(cookie: str | None) -> str | None:
    """The cookie's browser id when it has our shape, else None."""
    return cookie if cookie and _BROWSER_ID_RE.match(cookie) else None


def _digest(browser_id: str) -> str:
    return hashlib.sha256(browser_id.encode("ascii")).hexdigest()


def issue_state(
    store: StateStore, key: bytes, browser_id: str, now: int, lang: str | None = None
) -> str:
    """A fresh state for the authorize URL, remembered for this browser."""
    # Imported here: the callback entrypoint loads `requests` only when it needs it.
    from prometei.amocrm.oauth import sign_state

    state = sign_state(key, now)
    nonce = state.split(".")[1]
    entry = json.dumps({"browser": _digest(browser_id), "lang": lang})
    # A fresh 96-bit nonce cannot collide; put_if_absent makes sure of it anyway.
    if not store.put_if_absent(KEY_PREFIX + nonce, entry, ttl_s=STATE_MAX_AGE_S + 60):
        raise RuntimeError("OAuth state nonce collision")
    return state


def check_state(
    store: StateStore, key: bytes, state: str, browser_id: str | None, now: int
) -> RedeemableState:
    """The state's nonce once signature, age, store entry and browser all match; else
    StateRefused. Store errors propagate (nothing was spent)."""
    from prometei.amocrm.oauth import verify_state

    try:
        nonce = verify_state(state, key, now, max_age_s=STATE_MAX_AGE_S)
    except InputError as exc:
        raise StateRefused("invalid", exc.message) from None
    raw = store.get(KEY_PREFIX + nonce)
    entry = _parse(raw)
    if entry is None:
        raise StateRefused("used", "the state was already used, or its entry expired")
    expected = entry.get("browser")
    if (
        browser_id is None
        or not isinstance(expected, str)
        or not hmac.compare_digest(expected.encode(), _digest(browser_id).encode())
    ):
        raise StateRefused("browser", "the state was issued to another browser (cookie)")
    lang = entry.get("lang")
    return RedeemableState(nonce, lang if isinstance(lang, str) else None)


def spend_state(store: StateStore, nonce: str) -> None:
    """Use the state up (atomic): StateAlreadySpent when another request was first."""
    if not store.delete(KEY_PREFIX + nonce):
        raise StateAlreadySpent(nonce)


def _parse(raw: str | None) -> dict[str, object] | None:
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None
