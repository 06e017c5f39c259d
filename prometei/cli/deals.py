"""`deals`: send deal events to Inngest (one deal, or a batch from a JSON file).

Operators use it to create ERP records by hand, and to check a file before handing it to
another system (`--dry-run` validates and shows the events without sending anything).
The work is done by `prometei.deals.send_deals`, which other internal systems call directly.
Exit codes: 0 sent (or valid, with --dry-run), 1 the event API failed, 2 invalid input or
configuration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from prometei.deals.events import CREATE_DEAL_EVENT, TASK_CREATE_EVENT
from prometei.deals.send import SendReport, send_deals
from prometei.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _echo_events(report: SendReport) -> None:
    for event in report.events:
        click.echo(f"  {event['name']}  id={event.get('id')}")


def _finish(report: SendReport, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    elif report.status == "invalid":
        click.echo("invalid input, nothing was sent:", err=True)
        for problem in report.problems:
            click.echo(f"  - {problem}", err=True)
    elif report.status == "validated":
        click.echo(f"valid: {report.total} deal(s); would send {len(report.events)} event(s):")
        _echo_events(report)
        click.echo("dry run: nothing was sent")
    elif report.status == "sent":
        click.echo(f"sent {len(report.events)} event(s) for {report.total} deal(s):")
        _echo_events(report)
        click.echo(
            "Each run shows in the Inngest dashboard under these event ids. Sending the same "
            "deals again within 24 h is ignored by Inngest (use --key to send them again)."
        )
    else:
        click.echo(f"sending failed: {report.error}", err=True)
        click.echo(
            f"{len(report.event_ids)} of {len(report.events)} event(s) were accepted before "
            "the failure; running the same command again is safe (same event ids).",
            err=True,
        )
    code = {"invalid": EXIT_INVALID, "failed": EXIT_FAILED}.get(report.status, EXIT_OK)
    sys.exit(code)


def _run(
    deals: list[Any],
    *,
    batch: bool,
    dry_run: bool,
    as_json: bool,
    problems: list[str] | None = None,
    **extra: Any,
) -> NoReturn:
    """Validate (and unless dry_run/problems, send); `problems` found by the CLI itself are
    reported together with the deal's own."""
    try:
        report = send_deals(deals, batch=batch, dry_run=dry_run or bool(problems), **extra)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc.message}", err=True)
        sys.exit(EXIT_INVALID)
    if problems:
        report.problems[:0] = problems
        report.events = []
    _finish(report, as_json)


def _parse_fields(values: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    fields: dict[str, str] = {}
    problems: list[str] = []
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            problems.append(f"--field {value!r}: write it as field_1041=value")
            continue
        fields[name.strip()] = text
    return fields, problems


@click.group()
def deals() -> None:
    """Send crm/create-deal and crm/batch-create-deals events (ERP records from other systems).

    \b
    Examples:
      python -m prometei deals send --name "Order #1042" --amount 15000 --dry-run
      python -m prometei deals send --name "Order #1042" --amount 15000.50 \\
          --external-id shop-1042 --field field_1041=Website
      python -m prometei deals batch deals.json --dry-run
      python -m prometei deals batch deals.json --key import-2026-11-21

    Exit codes: 0 sent (or valid with --dry-run), 1 sending failed, 2 invalid input.
    """


@deals.command("send")
@click.option("--name", "name", required=True, help="Deal name (1-255 characters).")
@click.option("--amount", help="Amount, e.g. 15000 or 15000.50; left out when 0.")
@click.option("--entity-id", help="Rukovoditel entity id (default: ERP_ENTITY_ID).")
@click.option(
    "--external-id",
    help="Your id for the deal; with ERP_LEAD_ID_FIELD a resend updates the same record.",
)
@click.option("--field", "fields", multiple=True, metavar="field_N=VALUE", help="Extra ERP field.")
@click.option(
    "--event",
    "event_name",
    type=click.Choice([CREATE_DEAL_EVENT, TASK_CREATE_EVENT]),
    default=CREATE_DEAL_EVENT,
    show_default=True,
)
@click.option("--key", help="Idempotency key for the event id (default: from the content).")
@click.option("--dry-run", is_flag=True, help="Validate and show the event; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def send_one(
    *,
    name: str,
    amount: str | None,
    entity_id: str | None,
    external_id: str | None,
    fields: tuple[str, ...],
    event_name: str,
    key: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Send one deal as a crm/create-deal event.

    \b
    Example:
      python -m prometei deals send --name "Order #1042" --amount 15000 --dry-run
    """
    extra, problems = _parse_fields(fields)
    deal: dict[str, Any] = {"dealName": name}
    for json_key, value in (
        ("amount", amount),
        ("entityId", entity_id),
        ("externalId", external_id),
    ):
        if value is not None:
            deal[json_key] = value
    if extra:
        deal["fields"] = extra
    _run(
        [deal],
        batch=False,
        dry_run=dry_run,
        as_json=as_json,
        problems=problems,
        key=key,
        event_name=event_name,
    )


def _read_deals(path: str) -> list[Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        click.echo(f"{path}: cannot read it ({exc.strerror})", err=True)
        sys.exit(EXIT_INVALID)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        click.echo(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})", err=True)
        sys.exit(EXIT_INVALID)
    if isinstance(data, dict) and isinstance(data.get("deals"), list):
        return list(data["deals"])
    if isinstance(data, list):
        return data
    click.echo(f'{path}: expected a JSON list of deals or {{"deals": [...]}}', err=True)
    sys.exit(EXIT_INVALID)


@deals.command("batch")
@click.argument("file", metavar="FILE.json")
@click.option("--key", help="Idempotency key for the batch event id (default: from the content).")
@click.option("--dry-run", is_flag=True, help="Validate and show the event; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def send_batch(file: str, key: str | None, dry_run: bool, as_json: bool) -> None:
    """Send FILE.json (a list of deals, or {"deals": [...]}) as one crm/batch-create-deals
    event; "-" reads standard input. Nothing is sent if any deal is invalid.

    \b
    Example file:
      [{"dealName": "Order #1042", "amount": 15000, "externalId": "shop-1042"},
       {"dealName": "Order #1043", "amount": "990.50"}]
    """
    _run(_read_deals(file), batch=True, dry_run=dry_run, as_json=as_json, key=key)
