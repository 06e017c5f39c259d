"""`webhook send`: post a realistic amoCRM webhook to a running intake, local or deployed."""

from __future__ import annotations

import json
import sys
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import click
import requests

from prometei.cli._ops import EXIT_FAILED, EXIT_OK, EXIT_USAGE, exit_with, load_services
from prometei.errors import PrometeiError, excerpt
from prometei.http import make_session, send
from prometei.redaction import MASK, mask_values
from prometei.samples import (
    DEFAULT_LEAD_ID,
    DEFAULT_OLD_STATUS_ID,
    DEFAULT_PIPELINE_ID,
    DEFAULT_STATUS_ID,
    KINDS,
    SampleLead,
    WebhookKind,
    describe,
    encode_form,
    webhook_fields,
)

DEFAULT_URL = "http://127.0.0.1:3000/api/webhook"
# amoCRM itself gives up after 2 s; a deployed intake's cold start can take longer than that.
TIMEOUT: tuple[float, float] = (5.0, 30.0)

HINTS = {
    401: "the token does not match the intake's AMOCRM_WEBHOOK_SECRET: pass --token or set "
    "AMOCRM_WEBHOOK_SECRET here to the deployment's value",
    403: "the intake serves another account: pass --subdomain/--account-id matching its "
    "AMOCRM_SUBDOMAIN/AMOCRM_ACCOUNT_ID",
    404: "no intake at this URL: the path is /api/webhook (or /api/inngest)",
    415: "the intake did not see a form body; is something rewriting the request?",
    503: "the intake is misconfigured or could not reach Inngest; its message says which "
    "(run `python -m prometei doctor` with the deployment's settings)",
}


def with_token(url: str, token: str | None) -> str:
    """`url` with `?token=` set to `token` (replacing any token already in it)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    if token:
        query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def shown_url(url: str) -> str:
    """The URL with the token value masked, for printing."""
    parts = urlsplit(url)
    query = [
        (k, MASK if k == "token" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="[]")))


def post_webhook(
    url: str, body: bytes, *, session: requests.Session | None = None
) -> requests.Response:
    """POST the form body like amoCRM does; network failures raise `UpstreamUnavailable`."""
    return send(
        session or make_session(),
        "intake",
        "POST",
        url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=TIMEOUT,
    )


def _render_body(response: requests.Response) -> str:
    try:
        return json.dumps(response.json(), ensure_ascii=False, indent=2)
    except ValueError:
        return excerpt(response.text, 500) or "(empty body)"


@click.group()
def webhook() -> None:
    """Send sample amoCRM webhooks to an intake; register and check ours in amoCRM.

    \b
    Examples:
      python -m prometei webhook send
      python -m prometei webhook status
      python -m prometei webhook register
    """


@webhook.command("send")
@click.option(
    "--url",
    default=DEFAULT_URL,
    show_default=True,
    help="Intake URL: local (`serve`) or deployed, /api/webhook or /api/inngest.",
)
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="status",
    show_default=True,
    help="status = stage change, add = new lead, update = edited lead.",
)
@click.option("--lead-id", type=click.IntRange(min=1), default=DEFAULT_LEAD_ID, show_default=True)
@click.option(
    "--status-id", type=click.IntRange(min=1), default=DEFAULT_STATUS_ID, show_default=True
)
@click.option(
    "--old-status-id",
    type=click.IntRange(min=1),
    default=DEFAULT_OLD_STATUS_ID,
    show_default=True,
    help="The stage the lead left (status kind only).",
)
@click.option(
    "--pipeline-id", type=click.IntRange(min=1), default=DEFAULT_PIPELINE_ID, show_default=True
)
@click.option("--subdomain", help="Sending account. Default: AMOCRM_SUBDOMAIN.")
@click.option(
    "--account-id",
    type=click.IntRange(min=1),
    help="Sending account id. Default: AMOCRM_ACCOUNT_ID, else a sample id.",
)
@click.option(
    "--token",
    help="The intake's webhook secret. Default: AMOCRM_WEBHOOK_SECRET. It is never printed.",
)
def send_command(
    *,
    url: str,
    kind: str,
    lead_id: int,
    status_id: int,
    old_status_id: int,
    pipeline_id: int,
    subdomain: str | None,
    account_id: int | None,
    token: str | None,
) -> None:
    """Post a realistic amoCRM webhook (form body, ?token=) and print the answer.

    The body has the current time as the lead's updated_at, so every send is a new change
    and starts a new run (a repeated body would be dropped by Inngest's event id check).
    Exit code 0 on a 2xx answer, 1 otherwise.

    \b
    Examples:
      python -m prometei webhook send
      python -m prometei webhook send --kind add --lead-id 25400001
      python -m prometei webhook send --url https://prometei.vercel.app/api/webhook \\
          --status-id 142 --pipeline-id 7012345
    """
    settings = load_services().settings
    subdomain = subdomain or settings.amocrm_subdomain
    if not subdomain:
        exit_with(EXIT_USAGE, "no account: pass --subdomain or set AMOCRM_SUBDOMAIN")
    secret = settings.amocrm_webhook_secret
    token = token or (secret.get_secret_value() if secret else None)
    secrets = [*settings.secret_values(), *([token] if token else [])]

    lead = SampleLead(
        lead_id=lead_id, pipeline_id=pipeline_id, status_id=status_id, old_status_id=old_status_id
    )
    sample_kind = cast(WebhookKind, kind)
    fields = webhook_fields(
        sample_kind,
        subdomain=subdomain,
        account_id=account_id or settings.amocrm_account_id or 29085955,
        base_domain=settings.amocrm_base_domain,
        lead=lead,
    )
    target = with_token(url, token)
    click.echo(f"POST {shown_url(target)}")
    click.echo(f"  {describe(sample_kind, lead)}, account {subdomain}")
    if not token:
        click.echo("  (no token: the intake accepts that in dev mode only)")
    try:
        response = post_webhook(target, encode_form(fields))
    except PrometeiError as exc:
        host = urlsplit(url).hostname or ""
        start = (
            " (locally: `make serve`, or python -m prometei serve)"
            if host in ("127.0.0.1", "localhost", "::1")
            else ""
        )
        message = f"request failed: {exc.message}; is the intake running at that URL?{start}"
        exit_with(EXIT_FAILED, mask_values(message, secrets))
    click.echo(f"HTTP {response.status_code}")
    click.echo(mask_values(_render_body(response), secrets))
    if 200 <= response.status_code < 300:
        sys.exit(EXIT_OK)
    hint = HINTS.get(response.status_code)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(EXIT_FAILED)
