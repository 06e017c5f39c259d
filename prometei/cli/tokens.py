"""`tokens status` and `tokens oauth-url`: where the amoCRM tokens live and how fresh they are.

Nothing here ever prints a token: the status comes from the token source's `status()` (which
holds metadata only), and a long-lived token is read only for its `exp` claim.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import click

from prometei.cli._ops import EXIT_FAILED, EXIT_OK, EXIT_USAGE, exit_with, load_services
from prometei.errors import ConfigError, PrometeiError
from prometei.redaction import mask_values
from prometei.store.base import store_summary

REFRESH_TOKEN_LIFETIME_S = 90 * 24 * 3600  # an unused amoCRM refresh token dies after 3 months
_SECRET_KEYS = {"access_token", "refresh_token", "token", "code", "client_secret"}

# Tests freeze it.
clock: Callable[[], float] = time.time


def jwt_expiry(token: str) -> int | None:
    """The `exp` claim of a JWT (amoCRM long-lived tokens are JWTs), without verifying it."""
    from prometei.amocrm.oauth import jwt_claim

    exp = jwt_claim(token, "exp")
    return int(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _when(value: Any, now: float) -> str:
    """`2026-03-01 10:00 UTC (in 3h 5m)` / `(2 days ago)`; `—` for nothing."""
    seconds = _epoch(value)
    if seconds is None:
        return "—"
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")
    delta = int(seconds - now)
    span = _span(abs(delta))
    return f"{text} (in {span})" if delta >= 0 else f"{text} ({span} ago)"


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {rest // 60}m"
    return f"{rest // 60}m"


def status_lines(status: Mapping[str, Any], now: float) -> list[tuple[str, str]]:
    """The (label, value) rows `tokens status` prints."""
    long_lived = status.get("mode") == "long-lived"
    rows = [
        ("account", str(status.get("host") or "—")),
        (
            "mode",
            "long-lived token (AMOCRM_ACCESS_TOKEN)"
            if long_lived
            else "OAuth (refreshed automatically)",
        ),
        ("store", store_summary(status)),
        ("connected", "yes" if status.get("connected") else "no"),
    ]
    expires = status.get("expires_at")
    label = "token expires" if long_lived else "access token valid until"
    rows.append((label, _when(expires, now) if expires is not None else "unknown"))
    if not long_lived:
        rows.append(("connected at", _when(status.get("obtained_at"), now)))
        refreshed = status.get("refreshed_at")
        rows.append(("last refresh", _when(refreshed, now) if refreshed else "never"))
        rotated = _epoch(refreshed) or _epoch(status.get("obtained_at"))
        if rotated is not None:
            rows.append(
                (
                    "refresh token lapses",
                    _when(rotated + REFRESH_TOKEN_LIFETIME_S, now) + " if never used",
                )
            )
        if status.get("moved_from"):
            rows.append(("moved from", str(status["moved_from"])))
    if status.get("problem"):
        rows.append(("problem", str(status["problem"])))
    return rows


def read_status(services: Any) -> dict[str, Any]:
    """The token source's status, plus the long-lived token's expiry; no secret in it."""
    tokens = services.tokens
    status_fn = getattr(tokens, "status", None)
    status: dict[str, Any] = dict(status_fn()) if callable(status_fn) else {}
    settings = services.settings
    if status.get("mode") == "long-lived" and settings.amocrm_access_token is not None:
        status["expires_at"] = jwt_expiry(settings.amocrm_access_token.get_secret_value())
    return {k: v for k, v in status.items() if k not in _SECRET_KEYS}


@click.group()
def tokens() -> None:
    """Inspect the amoCRM tokens (never shows a token itself).

    \b
    Examples:
      python -m prometei tokens status
      python -m prometei tokens oauth-url
    """


@tokens.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_command(as_json: bool) -> None:
    """Where the amoCRM tokens live, when the access token expires, when it was refreshed.

    Exit code 0 when amoCRM is connected, 1 when it is not (or the store cannot be read),
    2 on a configuration error.

    \b
    Examples:
      python -m prometei tokens status
      python -m prometei tokens status --json
    """
    services = load_services()
    secrets = services.settings.secret_values()
    try:
        status = read_status(services)
    except ConfigError as exc:
        exit_with(EXIT_USAGE, mask_values(f"configuration error: {exc.message}", secrets))
    except PrometeiError as exc:
        exit_with(
            EXIT_FAILED,
            mask_values(
                f"could not read the token store: {exc.message}\n"
                "run `python -m prometei doctor` to check the KV settings",
                secrets,
            ),
        )
    if as_json:
        click.echo(mask_values(json.dumps(status, indent=2, default=str), secrets))
    else:
        for label, value in status_lines(status, clock()):
            click.echo(mask_values(f"{label:<26}{value}", secrets))
    sys.exit(EXIT_OK if status.get("connected") else EXIT_FAILED)


@tokens.command("oauth-url")
def oauth_url_command() -> None:
    """Print the connect page URL: open it to connect (or reconnect) amoCRM via OAuth.

    The page shows the connection status and a button to amoCRM's consent screen; amoCRM
    sends you back to it with a code, which is exchanged and stored.

    \b
    Example:
      python -m prometei tokens oauth-url
    """
    settings = load_services().settings
    if settings.uses_long_lived_token:
        exit_with(
            EXIT_USAGE,
            "AMOCRM_ACCESS_TOKEN is set, so OAuth is not used; unset it to connect through OAuth",
        )
    try:
        settings.require_oauth()
    except ConfigError as exc:
        exit_with(EXIT_USAGE, f"configuration error: {exc.message}")
    click.echo(settings.amocrm_redirect_uri)
    sys.exit(EXIT_OK)
