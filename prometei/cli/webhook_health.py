"""`webhook register` and `webhook status`: our subscription in amoCRM's webhooks API."""

from __future__ import annotations

import json
import sys

import click

from prometei.cli._ops import EXIT_FAILED, EXIT_OK, EXIT_USAGE, exit_with, load_services
from prometei.config import normalize_origin
from prometei.redaction import mask_values

PUBLIC_URL_HELP = (
    "The deployment's public origin (https://host). Default: PUBLIC_URL, else Vercel's "
    "production URL."
)


def _origin(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalize_origin(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--public-url") from None


@click.command("status")
@click.option("--public-url", help=PUBLIC_URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def status(public_url: str | None, as_json: bool) -> None:
    """List amoCRM's webhook subscriptions and say whether ours is there and enabled.

    Ours is <public URL>/api/webhook?token=<AMOCRM_WEBHOOK_SECRET> (/api/inngest and the old
    /api/amocrm-webhook with that token deliver too), subscribed to lead status changes
    (status_lead). TEMPORARY: ours delivers only while AMOCRM_WEBHOOK_SECRET_PREVIOUS or
    AMOCRM_WEBHOOK_ALLOW_LEGACY_URL stays set (a switch-over). Query values are masked.
    Exit code 0 when ours delivers (OK or TEMPORARY), 1 when it is missing, disabled, refused
    or cannot be checked, 2 on a configuration error. Needs an account administrator's token.

    \b
    Examples:
      python -m prometei webhook status
      python -m prometei webhook status --public-url https://prometei.example.com --json
    """
    from prometei.amocrm import subscriptions

    origin = _origin(public_url)
    services = load_services()
    settings = services.settings
    secrets = settings.secret_values()
    health = subscriptions.check(
        settings, subscriptions.WebhooksAPI(services.amocrm_housekeeping), origin=origin
    )
    if health.state == "not_configured":
        exit_with(EXIT_USAGE, f"{health.detail}; {health.fix} (or pass --public-url)")
    if as_json:
        document = {
            **health.as_output(),
            "subscriptions": [
                {"destination": s.shown(), "disabled": s.disabled, "settings": list(s.settings)}
                for s in health.all
            ],
        }
        click.echo(mask_values(json.dumps(document, ensure_ascii=False, indent=2), secrets))
    else:
        host = settings.amocrm_host
        click.echo(f"amoCRM webhooks of {host}: {len(health.all)}")
        for item in health.all:
            state = "DISABLED" if item.disabled else "enabled "
            mark = "   <- ours" if health.ours is not None and item == health.ours else ""
            actions = ",".join(item.settings) or "-"
            click.echo(mask_values(f"  {state}  {item.shown()}  [{actions}]{mark}", secrets))
        verdict = "OK" if health.ok else health.state.upper().replace("_", " ")
        click.echo(mask_values(f"ours: {verdict}: {health.detail}", secrets))
        if health.fix:
            click.echo(mask_values(f"fix: {health.fix}", secrets))
    sys.exit(EXIT_OK if health.delivers else EXIT_FAILED)


@click.command("register")
@click.option("--public-url", help=PUBLIC_URL_HELP)
def register(public_url: str | None) -> None:
    """Subscribe our intake to lead status changes in amoCRM (or re-enable it).

    Subscribes <public URL>/api/webhook?token=<AMOCRM_WEBHOOK_SECRET> to status_lead
    through amoCRM's webhooks API, unless it is there and enabled already; a subscription
    amoCRM disabled (after 100 failed deliveries) is enabled again. While amoCRM posts to a
    URL the intake accepts only for a switch-over (the old URL, the previous secret), it
    subscribes the new URL next to it. Running it twice changes nothing. Exit code 0 when
    ours is enabled afterwards, 1 otherwise, 2 on a configuration error. Needs an account
    administrator's token.

    \b
    Examples:
      python -m prometei webhook register
      python -m prometei --env-file .env.production webhook register
      python -m prometei webhook register --public-url https://prometei.example.com
    """
    from prometei.amocrm import subscriptions

    origin = _origin(public_url)
    services = load_services()
    settings = services.settings
    secrets = settings.secret_values()
    api = subscriptions.WebhooksAPI(services.amocrm_housekeeping)
    before = subscriptions.check(settings, api, origin=origin)
    if before.state == "not_configured":
        exit_with(EXIT_USAGE, f"{before.detail}; {before.fix} (or pass --public-url)")
    if before.ok:
        click.echo(mask_values(f"already registered: {before.detail}", secrets))
        sys.exit(EXIT_OK)
    after = subscriptions.repair(settings, api, origin=origin)
    if after.ok:
        what = "enabled again" if before.state == "disabled" else "registered"
        click.echo(mask_values(f"{what}: {after.detail}", secrets))
        if before.state in ("stale_token", "temporary") and before.ours is not None:
            click.echo(
                mask_values(
                    f"the old subscription {before.ours.shown()} still points at the intake: "
                    "delete it in amoCRM (Settings -> Integrations -> Web hooks)"
                    + ("; then unset the switch-over setting" if before.delivers else ""),
                    secrets,
                )
            )
        sys.exit(EXIT_OK)
    exit_with(
        EXIT_FAILED,
        mask_values(f"not registered: {after.detail}\nfix: {after.fix}", secrets),
    )
