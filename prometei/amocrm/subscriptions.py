"""Our webhook subscription in amoCRM: register it, and tell whether it still works.

amoCRM disables a webhook after more than 100 failed deliveries in 2 hours (reference
amocrm.md §1.5) and says so only in its notification centre; from then on no lead change
reaches us. `check()` reads amoCRM's subscriptions (`GET /api/v4/webhooks`) and finds ours:
the intake URL `<public origin>/api/webhook?token=<AMOCRM_WEBHOOK_SECRET>`, subscribed to
`status_lead`. A subscription is judged by what the intake would answer it: `/api/inngest` and
the old `/api/amocrm-webhook` with the current secret deliver too (ok); the previous secret
(AMOCRM_WEBHOOK_SECRET_PREVIOUS) or the old URL without a token under
AMOCRM_WEBHOOK_ALLOW_LEGACY_URL=1 deliver only while that switch-over setting stays on
(`temporary`); anything else on our intake is refused with 401 (`stale_token`).
`repair()` subscribes the canonical URL (`POST /api/v4/webhooks`).

Documented (reference amocrm.md §1.1: webhooks-api page, Kommo's add-webhooks): GET lists
`_embedded.webhooks[]` with `id, destination, disabled, settings, ...`; POST
`{destination, settings}` subscribes; an account administrator's token is needed.
Assumed (public Kommo docs, not in our reference; answers that ignore it are detected:
`repair` looks again after every change and reports the state amoCRM shows):
- `DELETE /api/v4/webhooks` with `{destination}` unsubscribes (used only when POST left an
  existing destination disabled; a 404 leaves it disabled, another refusal is reported);
- a non-administrator's token gets 403 (the fix then names the administrator; any other
  refusal is shown with amoCRM's detail);
- `filter[destination]` is not used: we list every subscription and find ours here.
Documented nowhere, so both readings are handled:
- whether POST for a destination that exists (disabled) re-enables it, updates it, or is
  refused: we POST, look again, and if it is still not enabled, DELETE it and POST again;
- the DELETE answer (204, or 200 with `{"result": true}`): any 2xx is success;
- the official PHP library reads the destination from `name` in one place: we read
  `destination`, else `name`;
- a 204 for an empty list (amoCRM's habit for empty lists) or 200 with an empty array.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from prometei.errors import PrometeiError, UpstreamAuthError, UpstreamError, UpstreamRejected
from prometei.redaction import MASK

if TYPE_CHECKING:
    from prometei.amocrm.client import AmoCRMClient
    from prometei.config import Settings

log = logging.getLogger(__name__)

WEBHOOKS_PATH = "/api/v4/webhooks"
STATUS_ACTION = "status_lead"
INTAKE_PATH = "/api/webhook"
INTAKE_PATHS = (INTAKE_PATH, "/api/inngest", "/api/amocrm-webhook")

State = Literal[
    "ok",
    "temporary",
    "missing",
    "disabled",
    "no_status_events",
    "stale_token",
    "unknown",
    "not_configured",
]
# How the intake would answer a delivery to one subscription's URL (see `_delivery`).
Delivery = Literal["exact", "accepted", "temporary", "refused", "elsewhere"]


@dataclass(frozen=True)
class Subscription:
    destination: str
    disabled: bool = False
    settings: tuple[str, ...] = ()
    id: Any = None

    @classmethod
    def from_api(cls, item: Any) -> Subscription | None:
        if not isinstance(item, dict):
            return None
        destination = item.get("destination") or item.get("name")
        if not isinstance(destination, str) or not destination:
            return None
        settings = item.get("settings")
        return cls(
            destination=destination,
            disabled=bool(item.get("disabled", False)),
            settings=tuple(str(s) for s in settings) if isinstance(settings, list) else (),
            id=item.get("id"),
        )

    def shown(self) -> str:
        """The destination with every query value masked (URLs carry secrets: ours, and
        other integrations')."""
        return masked_url(self.destination)


def masked_url(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, MASK) for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="[]")))


class WebhooksAPI:
    """amoCRM's webhooks API through the client's one request path (limiter, token rules)."""

    def __init__(self, client: AmoCRMClient) -> None:
        self._client = client

    def subscriptions(self) -> list[Subscription]:
        payload = self._client._call("GET", WEBHOOKS_PATH)
        embedded = payload.get("_embedded") if isinstance(payload, dict) else None
        items = embedded.get("webhooks") if isinstance(embedded, dict) else None
        found = (Subscription.from_api(item) for item in items or [])
        return [s for s in found if s is not None]

    def subscribe(self, destination: str, actions: list[str]) -> None:
        self._client._call(
            "POST", WEBHOOKS_PATH, json_body={"destination": destination, "settings": actions}
        )

    def unsubscribe(self, destination: str) -> None:
        self._client._call("DELETE", WEBHOOKS_PATH, json_body={"destination": destination})


@dataclass(frozen=True)
class Health:
    """Our subscription as amoCRM has it. `fix` says what to do when `state` is not ok."""

    state: State
    detail: str
    fix: str = ""
    ours: Subscription | None = None
    all: tuple[Subscription, ...] = ()
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """Ours is the canonical URL (or another one the intake always accepts), enabled."""
        return self.state == "ok"

    @property
    def delivers(self) -> bool:
        """Status changes reach the intake now (`temporary`: only while a switch-over
        setting stays on)."""
        return self.state in ("ok", "temporary")

    def as_output(self) -> dict[str, Any]:
        """Plain JSON for step outputs and `--json` (destinations masked)."""
        return {
            "state": self.state,
            "detail": self.detail,
            "fix": self.fix,
            "repaired": self.repaired,
            "ours": self.ours.shown() if self.ours else None,
        }


def intake_url(settings: Settings, origin: str | None = None) -> str | None:
    """The URL amoCRM should post to, with `?token=`; None when the origin or the secret is
    unknown (PUBLIC_URL / Vercel's production URL, AMOCRM_WEBHOOK_SECRET)."""
    origin = origin or settings.public_origin
    secret = settings.amocrm_webhook_secret
    if not origin or secret is None:
        return None
    return f"{origin.rstrip('/')}{INTAKE_PATH}?{urlencode({'token': secret.get_secret_value()})}"


def register_command(settings: Settings) -> str:
    return "python -m prometei webhook register" + (
        "" if settings.public_origin else " --public-url https://<your-domain>"
    )


def check(settings: Settings, api: WebhooksAPI, *, origin: str | None = None) -> Health:
    """Find our subscription among amoCRM's and say whether it delivers status changes."""
    url = intake_url(settings, origin)
    if url is None:
        return Health(
            "not_configured",
            "cannot tell which subscription is ours: "
            + (
                "AMOCRM_WEBHOOK_SECRET is not set"
                if settings.amocrm_webhook_secret is None
                else "no public URL (set PUBLIC_URL to the deployment's origin)"
            ),
            "set PUBLIC_URL (e.g. https://prometei.example.com) and AMOCRM_WEBHOOK_SECRET",
        )
    try:
        subscriptions = api.subscriptions()
    except PrometeiError as exc:
        return Health("unknown", f"could not list amoCRM's webhooks: {exc.message}", _list_fix(exc))
    return _judge(settings, url, subscriptions)


def repair(settings: Settings, api: WebhooksAPI, *, origin: str | None = None) -> Health:
    """Subscribe our intake URL to status changes, or re-enable it; the health afterwards."""
    before = check(settings, api, origin=origin)
    url = intake_url(settings, origin)
    if before.ok or url is None or before.state in ("unknown", "not_configured"):
        return before
    actions = sorted({STATUS_ACTION, *(before.ours.settings if before.ours else ())})
    exact = before.ours is not None and before.ours.destination == url
    try:
        api.subscribe(url, actions)
    except UpstreamRejected as exc:
        if not exact:
            return Health(
                "unknown",
                f"amoCRM refused the subscription: {exc.message}",
                _list_fix(exc),
                all=before.all,
            )
        log.info("amoCRM refused a second subscription for our URL; replacing it")
    except PrometeiError as exc:
        return Health(
            "unknown", f"could not subscribe: {exc.message}", _list_fix(exc), all=before.all
        )
    after = check(settings, api, origin=origin)
    if not after.ok and exact:
        # The other reading: POST does not re-enable an existing destination. Remove it and
        # subscribe anew.
        try:
            api.unsubscribe(url)
            api.subscribe(url, actions)
        except PrometeiError as exc:
            return Health(
                "unknown",
                f"could not re-create the subscription: {exc.message}",
                _list_fix(exc),
                all=after.all,
            )
        after = check(settings, api, origin=origin)
    return Health(after.state, after.detail, after.fix, after.ours, after.all, after.ok)


def _judge(settings: Settings, url: str, subscriptions: list[Subscription]) -> Health:
    everything = tuple(subscriptions)
    fix = f"run `{register_command(settings)}`"
    by_delivery: dict[Delivery, list[Subscription]] = {}
    for subscription in subscriptions:
        by_delivery.setdefault(_delivery(settings, url, subscription), []).append(subscription)
    delivering = by_delivery.get("exact", []) + by_delivery.get("accepted", [])
    if delivering:
        return _judge_ours(_pick(delivering), fix, everything, temporary=False)
    if "temporary" in by_delivery:
        return _judge_ours(_pick(by_delivery["temporary"]), fix, everything, temporary=True)
    if "refused" in by_delivery:
        stale = by_delivery["refused"][0]
        return Health(
            "stale_token",
            f"amoCRM posts to our intake ({stale.shown()}) {_refusal_reason(stale)}: every "
            "delivery is refused with 401, and amoCRM disables a webhook after 100 failed "
            "deliveries",
            f"{fix}, then delete the old URL in amoCRM (Settings -> Integrations -> Web hooks)",
            stale,
            everything,
        )
    return Health(
        "missing",
        f"amoCRM has {len(subscriptions)} webhook(s), none of them to "
        f"{masked_url(url)}: lead changes do not reach the intake (amocrm-reconcile "
        "still picks them up, one interval late)",
        fix,
        None,
        everything,
    )


def _pick(candidates: list[Subscription]) -> Subscription:
    """The one that delivers best: enabled and subscribed to status changes first."""
    enabled = [s for s in candidates if not s.disabled]
    return next((s for s in enabled if STATUS_ACTION in s.settings), (enabled or candidates)[0])


def _judge_ours(
    ours: Subscription, fix: str, everything: tuple[Subscription, ...], *, temporary: bool
) -> Health:
    if ours.disabled:
        return Health(
            "disabled",
            f"amoCRM has disabled our webhook {ours.shown()} (after more than 100 failed "
            "deliveries in 2 hours): lead changes do not reach the intake",
            f"{fix} (or AMOCRM_WEBHOOK_AUTOREPAIR=1 lets amocrm-reconcile do it); find out "
            "why deliveries failed (the intake's 4xx/5xx in the logs)",
            ours,
            everything,
        )
    if STATUS_ACTION not in ours.settings:
        return Health(
            "no_status_events",
            f"our webhook {ours.shown()} is not subscribed to lead status changes "
            f"({STATUS_ACTION}); it has: {', '.join(ours.settings) or 'nothing'}",
            fix,
            ours,
            everything,
        )
    if temporary:
        setting = _switch_over_setting(ours)
        return Health(
            "temporary",
            f"{ours.shown()} receives lead status changes, but only while {setting} stays "
            "set: the intake refuses it with 401 once the setting is removed",
            f"{fix} (it subscribes the URL with ?token=<AMOCRM_WEBHOOK_SECRET>), then delete "
            f"the old URL in amoCRM (Settings -> Integrations -> Web hooks) and unset {setting}",
            ours,
            everything,
        )
    return Health(
        "ok", f"{ours.shown()} is enabled and receives lead status changes", "", ours, everything
    )


def _delivery(settings: Settings, url: str, subscription: Subscription) -> Delivery:
    """What the intake (`prometei.web.intake`) would do with a delivery to this URL."""
    destination = subscription.destination
    if destination == url:
        return "exact"
    mine, theirs = urlsplit(url), urlsplit(destination)
    same_host = (mine.scheme, mine.netloc.lower()) == (theirs.scheme, theirs.netloc.lower())
    path = theirs.path.rstrip("/")
    if not same_host or path not in INTAKE_PATHS:
        return "elsewhere"
    token = _token_of(destination)
    current = settings.amocrm_webhook_secret
    previous = settings.amocrm_webhook_secret_previous
    if token and current is not None and token == current.get_secret_value():
        return "accepted"
    if token and previous is not None and token == previous.get_secret_value():
        return "temporary"
    if not token and path != INTAKE_PATH and settings.amocrm_webhook_allow_legacy_url:
        return "temporary"
    return "refused"


def _token_of(destination: str) -> str:
    return dict(parse_qsl(urlsplit(destination).query, keep_blank_values=True)).get("token", "")


def _switch_over_setting(subscription: Subscription) -> str:
    if _token_of(subscription.destination):
        return "AMOCRM_WEBHOOK_SECRET_PREVIOUS"
    return "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL=1"


def _refusal_reason(subscription: Subscription) -> str:
    if _token_of(subscription.destination):
        return "with another ?token= than AMOCRM_WEBHOOK_SECRET"
    if urlsplit(subscription.destination).path.rstrip("/") == INTAKE_PATH:
        return "without ?token="
    return (
        "on the TypeScript version's URL without ?token= (accepted only with "
        "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL=1)"
    )


def _list_fix(exc: PrometeiError) -> str:
    status = exc.status if isinstance(exc, UpstreamError) else None
    if isinstance(exc, UpstreamAuthError) and status == 403:
        return (
            "amoCRM's webhooks API needs the token of an account administrator (and, on "
            "Kommo, an Advanced or Enterprise plan); connect as an administrator, or manage "
            "the webhook by hand in Settings -> Integrations -> Web hooks"
        )
    return "see the detail; run `python -m prometei doctor` for the amoCRM row"
