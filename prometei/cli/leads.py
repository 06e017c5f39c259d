"""`replay` and `backfill`: send `amocrm/lead.sync` events for chosen or listed leads.

Both only hand events to Inngest; the `amocrm-webhook-handler` function then fetches each lead
and upserts its ERP record, so running either twice never creates a second record.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from prometei.cli._ops import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    exit_with,
    inngest_hint,
    load_services,
)
from prometei.errors import ConfigError, PrometeiError
from prometei.redaction import mask_values

if TYPE_CHECKING:
    from prometei.services import Services
    from prometei.sync.backfill import BackfillReport

MAX_RATE = 7  # amoCRM's limit per integration; the backfill's share is smaller (AMOCRM_BUDGET_*)
REPLAY_BATCH = 50
# Without a terminal (a file, CI), one plain progress line at most this often.
PROGRESS_EVERY_S = 10.0

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
    failure: PrometeiError | None = None


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
            result.failure = exc
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
                f"sending failed for {left} lead(s): {result.error}"
                f"{inngest_hint(services.settings, result.failure)}\n"
                f"then run the same command again with --key {result.key}; leads already sent "
                "will not run twice",
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
    rate: int | None,
    batch_size: int,
    page_size: int,
    dry_run: bool,
    state_file: Path,
    restart: bool = False,
    on_progress: Callable[[BackfillReport], None] | None = None,
) -> BackfillReport:
    """The backfill engine with its own amoCRM client on the backfill lane of the budget:
    at most `rate` (default and at most AMOCRM_BUDGET_BACKFILL) requests per second."""
    from prometei.amocrm.client import AmoCRMClient
    from prometei.amocrm.ratelimit import Brake, SlidingWindowLimiter
    from prometei.sync.backfill import Backfill, BackfillFilters

    settings = services.settings
    share = settings.amocrm_budget_backfill
    if rate is not None and rate > share:
        raise ConfigError(
            f"--rate {rate} is more than the backfill's share of amoCRM's 7 requests/s "
            f"(AMOCRM_BUDGET_BACKFILL={share}); raise AMOCRM_BUDGET_BACKFILL and lower "
            "AMOCRM_BUDGET_RUNS or AMOCRM_BUDGET_RECONCILE so the three stay within 7"
        )
    limiter = SlidingWindowLimiter(
        rate or share, brake=Brake(clock=clock), clock=clock, sleep=sleep, name="amocrm-backfill"
    )
    client = AmoCRMClient.from_settings(settings, services.tokens, limiter=limiter)
    engine = Backfill(
        client, services.events.send, state_file, batch_size, page_size=page_size, sleep=sleep
    )
    filters = BackfillFilters(pipeline_id, tuple(status_ids), updated_since)
    return engine.run(filters, dry_run=dry_run, resume=not restart, on_progress=on_progress)


def _parse_since(value: datetime | None) -> int | None:
    if value is None:
        return None
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _utc(second: int | None) -> str:
    if not second:
        return "-"
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def progress_line(report: BackfillReport) -> str:
    totals = report.totals
    sent = f"{totals.matched} to sync" if report.dry_run else f"{totals.sent} sent"
    return (
        f"backfill: {totals.listed} listed, {sent}, {totals.filtered} filtered, "
        f"{totals.failed} failed; {report.requests} amoCRM request(s); leads updated up to "
        f"{_utc(report.outcome.newest)}"
    )


class ProgressPrinter:
    """Progress on stderr: one line rewritten in place on a terminal, else a plain line at
    most every PROGRESS_EVERY_S seconds (a file or a CI log gets readable lines)."""

    def __init__(self, stream: TextIO, *, interactive: bool) -> None:
        self.stream = stream
        self.interactive = interactive
        self.last_at: float | None = None
        self.last_line = ""

    def __call__(self, report: BackfillReport) -> None:
        line = progress_line(report)
        if line == self.last_line:
            return
        if self.interactive:
            self.stream.write("\r" + line)
            self.stream.flush()
        elif self.last_at is None or clock() - self.last_at >= PROGRESS_EVERY_S:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_at = clock()
        else:
            return
        self.last_line = line

    def close(self) -> None:
        if self.interactive and self.last_line:
            self.stream.write("\n")
            self.stream.flush()


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
    default=None,
    help="At most this many amoCRM requests in any one second. Default and maximum: "
    "AMOCRM_BUDGET_BACKFILL (1), the backfill's share of amoCRM's 7 requests/s.",
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
    help="Leads per amoCRM request; halved by itself when amoCRM answers 504. Changing it "
    "does not lose saved progress.",
)
@click.option("--dry-run", is_flag=True, help="List and count the leads; send nothing.")
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Progress file for resuming. Default: PROMETEI_STATE_DIR/backfill-<filters>.json.",
)
@click.option("--restart", is_flag=True, help="Ignore saved progress and start from the beginning.")
def backfill(
    *,
    pipeline_id: int | None,
    status_ids: tuple[int, ...],
    updated_since: datetime | None,
    rate: int | None,
    batch_size: int,
    page_size: int,
    dry_run: bool,
    state_file: Path | None,
    restart: bool,
) -> None:
    """Send amocrm/lead.sync events for every amoCRM lead matching the filters.

    Lists GET /api/v4/leads oldest update first, by update time rather than by page
    number, so leads edited during the run never make it skip one, and sends the events in
    batches. Progress (a point in time, the counts) is saved after every accepted batch: if
    the run stops (Ctrl-C, a network error), the same command continues from there, with any
    --page-size. Event ids are sync-<lead id>-<updated_at>, so anything sent twice runs once.
    At the end: listed = sent + filtered + failed.

    Exit code 0 when done, 1 when amoCRM or Inngest failed (progress is kept), 2 on bad
    options or configuration.

    \b
    Examples:
      python -m prometei backfill --pipeline-id 7012345 --status-id 142 --dry-run
      python -m prometei backfill --pipeline-id 7012345 --status-id 142 --status-id 143
      python -m prometei backfill --updated-since 2025-01-01 --page-size 50
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
    printer = ProgressPrinter(sys.stderr, interactive=sys.stderr.isatty())
    try:
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
            on_progress=printer,
        )
    except ConfigError as exc:
        printer.close()
        exit_with(EXIT_USAGE, mask_values(f"configuration error: {exc.message}", secrets))
    except KeyboardInterrupt:
        printer.close()
        exit_with(EXIT_FAILED, _stopped("interrupted", path, dry_run))
    printer.close()
    error = report.outcome.error
    if isinstance(error, ConfigError):
        exit_with(EXIT_USAGE, mask_values(f"configuration error: {error.message}", secrets))
    if error is not None:
        hint = inngest_hint(settings, error)
        stopped = _stopped(f"failed: {error.message}{hint}\n{_counts(report)}", path, dry_run)
        exit_with(EXIT_FAILED, mask_values(stopped, secrets))
    _print_report(report, path, settings.reconcile_schedule)
    sys.exit(EXIT_OK)


def _counts(report: BackfillReport) -> str:
    totals = report.totals
    if report.dry_run:
        return (
            f"{totals.listed} lead(s) listed = {totals.matched} to sync + {totals.filtered} "
            f"filtered out; {report.requests} amoCRM request(s)"
        )
    return (
        f"{totals.listed} lead(s) listed = {totals.sent} sent + {totals.filtered} filtered "
        f"out + {totals.failed} failed; {report.requests} amoCRM request(s)"
    )


def _stopped(what: str, path: Path, dry_run: bool) -> str:
    if dry_run:
        return f"backfill (dry run) {what}"
    return (
        f"backfill {what}\nprogress is saved in {path}; run the same command again to continue "
        "from there (events already sent do not run twice)"
    )


def _print_report(report: BackfillReport, path: Path, reconcile: str | None) -> None:
    if report.dry_run:
        click.echo(f"dry run: {_counts(report)}; nothing was sent")
        return
    resumed = " (resumed from saved progress)" if report.resumed_from else ""
    click.echo(f"done{resumed}: {_counts(report)}")
    newest = _utc(report.outcome.newest)
    later = (
        "amocrm-reconcile syncs them within its interval"
        if reconcile
        else "amocrm-reconcile is off (AMOCRM_RECONCILE_CRON); run this command again to catch them"
    )
    click.echo(
        f"leads updated up to {newest} are covered; later changes arrive by webhook, and "
        f"{later}. Record of this run: {path}"
    )
