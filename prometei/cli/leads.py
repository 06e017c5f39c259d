"""`replay` and `backfill`: send `amocrm/lead.sync` events for chosen or listed leads.

Both only hand events to Inngest; the `amocrm-webhook-handler` function then fetches each lead
and upserts its ERP record, so running either twice never creates a second record.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from prometei.cli._ops import EXIT_FAILED, EXIT_OK, EXIT_USAGE, exit_with, load_services
from prometei.errors import ConfigError, PrometeiError
from prometei.redaction import mask_values

if TYPE_CHECKING:
    from prometei.backfill import BackfillReport
    from prometei.services import Services

DEFAULT_RATE = 6  # requests/second; amoCRM allows 7 per integration
MAX_RATE = 7
REPLAY_BATCH = 50

# The backfill limiter's clock and sleep; tests swap them for a fake clock (no real sleeping).
clock: Callable[[], float] = time.monotonic
sleep: Callable[[float], None] = time.sleep
# The replay's default dedupe key (one per invocation); tests freeze it.
now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


# ---- replay -----------------------------------------------------------------------------------


@dataclass
class ReplayResult:
    key: str
    sent: list[tuple[int, str]] = field(default_factory=list)  # (lead id, event id)
    error: str | None = None


def replay_event_id(lead_id: int, key: str) -> str:
    return f"replay-{lead_id}-{key}"


def replay_leads(
    services: Services, lead_ids: list[int], key: str, batch_size: int = REPLAY_BATCH
) -> ReplayResult:
    """Send one `amocrm/lead.sync` per lead (in order, duplicates dropped), in batches.

    The event id is `replay-<lead>-<key>`: the same key sent again within 24 h is dropped by
    Inngest, so a failed replay can be repeated with the same key without double runs.
    """
    from prometei.events import sync_event

    unique = list(dict.fromkeys(lead_ids))
    result = ReplayResult(key=key)
    # An operator's replay rewrites the ERP record even when nothing changed in amoCRM.
    events = [
        sync_event(lead_id, id=replay_event_id(lead_id, key), force=True) for lead_id in unique
    ]
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        try:
            services.events.send(batch)
        except ConfigError:
            raise
        except PrometeiError as exc:
            result.error = exc.message
            return result
        result.sent += [(event["data"]["lead_id"], event["id"]) for event in batch]
    return result


@click.command()
@click.argument(
    "lead_ids", nargs=-1, required=True, type=click.IntRange(min=1), metavar="LEAD_ID..."
)
@click.option(
    "--key",
    help="Dedupe key in the event ids (default: the current UTC time). Reuse the key a "
    "failed replay printed to repeat it without running leads twice.",
)
def replay(lead_ids: tuple[int, ...], key: str | None) -> None:
    """Send amocrm/lead.sync events for LEAD_ID... (re-run the ERP sync of those leads).

    Each lead gets an event with id replay-<LEAD_ID>-<KEY>; Inngest drops an id it saw in
    the last 24 h. Exit code 0 when every event was accepted, 1 when sending failed,
    2 on bad input or configuration.

    \b
    Examples:
      python -m prometei replay 25399013
      python -m prometei replay 25399013 25400001 25400002
      python -m prometei replay 25399013 --key retry-after-erp-outage
    """
    from prometei.events import SYNC_EVENT

    services = load_services()
    secrets = services.settings.secret_values()
    if key is not None and not key.replace("-", "").replace("_", "").isalnum():
        exit_with(EXIT_USAGE, "--key may hold letters, digits, '-' and '_' only")
    key = key or now().strftime("%Y%m%dT%H%M%S")
    try:
        result = replay_leads(services, list(lead_ids), key)
    except ConfigError as exc:
        exit_with(EXIT_USAGE, mask_values(f"configuration error: {exc.message}", secrets))
    for lead_id, event_id in result.sent:
        click.echo(f"lead {lead_id}: sent {SYNC_EVENT} id={event_id}")
    if result.error:
        left = len(set(lead_ids)) - len(result.sent)
        exit_with(
            EXIT_FAILED,
            mask_values(
                f"sending failed for {left} lead(s): {result.error}\n"
                f"run the same command again with --key {result.key} to retry; leads already "
                "sent will not run twice",
                secrets,
            ),
        )
    click.echo(f"{len(result.sent)} event(s) sent (key {result.key})")
    sys.exit(EXIT_OK)


# ---- backfill ---------------------------------------------------------------------------------


def default_state_file(
    state_dir: Path, pipeline_id: int | None, status_ids: list[int], updated_since: int | None
) -> Path:
    """One state file per filter set, so different backfills never resume each other."""
    filters = json.dumps([pipeline_id, sorted(status_ids), updated_since])
    digest = hashlib.sha256(filters.encode()).hexdigest()[:10]
    return state_dir / f"backfill-{digest}.json"


def run_backfill(
    services: Services,
    *,
    pipeline_id: int | None,
    status_ids: list[int],
    updated_since: int | None,
    rate: int,
    batch_size: int,
    page_size: int,
    dry_run: bool,
    state_file: Path,
    restart: bool = False,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> BackfillReport:
    """The backfill engine with its own amoCRM client limited to `rate` requests/second."""
    from prometei.amocrm.client import AmoCRMClient
    from prometei.amocrm.ratelimit import RateLimiter
    from prometei.backfill import Backfill

    limiter = RateLimiter(rate, clock=clock, sleep=sleep)
    client = AmoCRMClient.from_settings(services.settings, services.tokens, limiter=limiter)
    events = services.events
    engine = Backfill(
        client,
        events.send,
        state_file,
        batch_size,
        page_size=page_size,
        sleep=sleep,
    )
    return engine.run(
        pipeline_id=pipeline_id,
        status_ids=status_ids or None,
        updated_since=updated_since,
        dry_run=dry_run,
        on_progress=on_progress,
        resume=not restart,
    )


def _unknown_length() -> Iterator[int]:
    yield from ()


def _parse_since(value: datetime | None) -> int | None:
    if value is None:
        return None
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return int(moment.timestamp())


@click.command()
@click.option("--pipeline-id", type=click.IntRange(min=1), help="Only leads of this pipeline.")
@click.option(
    "--status-id",
    "status_ids",
    type=click.IntRange(min=1),
    multiple=True,
    help="Only leads in this stage of --pipeline-id (repeatable).",
)
@click.option(
    "--updated-since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    metavar="DATE",
    help="Only leads updated on or after this date (UTC), YYYY-MM-DD[THH:MM:SS].",
)
@click.option(
    "--rate",
    type=click.IntRange(1, MAX_RATE),
    default=DEFAULT_RATE,
    show_default=True,
    help="At most this many amoCRM requests in any one second (amoCRM allows 7 per "
    "integration; leave room for the live webhook traffic).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 500),
    default=50,
    show_default=True,
    help="Events per request to Inngest.",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 250),
    default=250,
    show_default=True,
    help="Leads per amoCRM page; lower it if amoCRM answers 504.",
)
@click.option("--dry-run", is_flag=True, help="List and count the leads; send nothing.")
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Progress file for resuming. Default: PROMETEI_STATE_DIR/backfill-<filters>.json.",
)
@click.option("--restart", is_flag=True, help="Ignore saved progress and start from page 1.")
def backfill(
    *,
    pipeline_id: int | None,
    status_ids: tuple[int, ...],
    updated_since: datetime | None,
    rate: int,
    batch_size: int,
    page_size: int,
    dry_run: bool,
    state_file: Path | None,
    restart: bool,
) -> None:
    """Send amocrm/lead.sync events for every amoCRM lead matching the filters.

    Pages through GET /api/v4/leads (oldest update first) at most --rate requests per
    second and sends the events in batches. Progress is saved after every batch: if the run
    stops (Ctrl-C, a network error), the same command resumes after the last finished page.
    Event ids are sync-<lead id>-<updated_at>, so anything sent twice runs once.

    Exit code 0 when done, 1 when amoCRM or Inngest failed (progress is kept), 2 on bad
    options or configuration.

    \b
    Examples:
      python -m prometei backfill --pipeline-id 7012345 --status-id 142 --dry-run
      python -m prometei backfill --pipeline-id 7012345 --status-id 142 --status-id 143
      python -m prometei backfill --updated-since 2025-01-01 --rate 3
    """
    if status_ids and pipeline_id is None:
        raise click.UsageError(
            "--status-id needs --pipeline-id (amoCRM filters stages per pipeline)"
        )
    services = load_services()
    settings = services.settings
    secrets = settings.secret_values()
    since = _parse_since(updated_since)
    path = state_file or default_state_file(
        settings.prometei_state_dir, pipeline_id, list(status_ids), since
    )
    try:
        _ = services.tokens  # a token configuration error is reported before any output
    except ConfigError as exc:
        exit_with(EXIT_USAGE, mask_values(f"configuration error: {exc.message}", secrets))
    label = "listing leads (dry run)" if dry_run else "sending sync events"
    stderr = sys.stderr
    try:
        with click.progressbar(_unknown_length(), label=label, show_pos=True, file=stderr) as bar:
            seen = 0

            def progress(leads_seen: int, total: int | None) -> None:
                nonlocal seen
                del total
                bar.update(leads_seen - seen)
                seen = leads_seen

            report = run_backfill(
                services,
                pipeline_id=pipeline_id,
                status_ids=list(status_ids),
                updated_since=since,
                rate=rate,
                batch_size=batch_size,
                page_size=page_size,
                dry_run=dry_run,
                state_file=path,
                restart=restart,
                on_progress=progress,
            )
    except ConfigError as exc:
        exit_with(EXIT_USAGE, mask_values(f"configuration error: {exc.message}", secrets))
    except KeyboardInterrupt:
        exit_with(EXIT_FAILED, _stopped("interrupted", path, dry_run))
    except PrometeiError as exc:
        stopped = _stopped(f"failed: {exc.message}", path, dry_run)
        exit_with(EXIT_FAILED, mask_values(stopped, secrets))
    _print_report(report, path)
    sys.exit(EXIT_OK)


def _stopped(what: str, path: Path, dry_run: bool) -> str:
    if dry_run:
        return f"backfill (dry run) {what}"
    return (
        f"backfill {what}\nprogress is saved in {path}; run the same command again to resume "
        "(events already sent will not run twice)"
    )


def _print_report(report: BackfillReport, path: Path) -> None:
    resumed = f", resumed at page {report.resumed_from_page}" if report.resumed_from_page else ""
    if report.dry_run:
        click.echo(
            f"dry run: {report.leads_seen} lead(s) in {report.pages} page(s) would be synced; "
            "nothing was sent"
        )
        return
    click.echo(
        f"done: {report.events_sent} sync event(s) sent for {report.leads_seen} lead(s) in "
        f"{report.pages} page(s){resumed}"
    )
    started = datetime.fromtimestamp(report.started_at, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    click.echo(
        f"leads changed during the run are caught by: --updated-since {started} "
        f"(progress file {path.name} removed)"
    )
