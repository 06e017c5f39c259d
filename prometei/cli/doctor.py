"""`doctor`: check every part of the pipeline and print a table with a fix for each failure."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import click

from prometei.cli._ops import EXIT_FAILED, EXIT_OK, setup_logging
from prometei.config import secret_env_values
from prometei.doctor import Check, check_environment, run_checks
from prometei.redaction import mask_values

NAME_WIDTH = 24
STATUS_WIDTH = 7
DETAIL_WIDTH = 72


def _row(check: Check, secrets: list[str]) -> str:
    """One table row: the detail wrapped under its column, the fix on one unwrapped line
    (it is often a command to copy)."""
    indent = " " * (NAME_WIDTH + STATUS_WIDTH)
    detail = textwrap.wrap(mask_values(check.detail, secrets), DETAIL_WIDTH) or [""]
    lines = []
    if len(check.name) >= NAME_WIDTH:
        # A row named after a long variable: the name alone, so the columns stay aligned.
        lines.append(check.name)
        name = " " * NAME_WIDTH
    else:
        name = f"{check.name:<{NAME_WIDTH - 1}} "
    lines.append(f"{name}{check.status:<{STATUS_WIDTH}}{detail[0]}")
    lines += [indent + line for line in detail[1:]]
    if check.fix and check.status in ("FAIL", "WARN"):
        lines.append(f"{indent}fix: {mask_values(check.fix, secrets)}")
    return "\n".join(lines)


@click.command()
@click.option("--offline", is_flag=True, help="Check variables only; contact nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON document.")
def doctor(offline: bool, as_json: bool) -> None:
    """Check every part in turn and print a table with a one-line fix for each failure.

    \b
    Checks, in order:
      environment     every variable well-formed, the required ones present (else one
                      row per bad variable); a WARN row named after CRM_API_URL (http://),
                      AMOCRM_WEBHOOK_ALLOW_LEGACY_URL or AMOCRM_API_BASE_URL while risky
      kv              Vercel KV answers and accepts a write with the configured token
      amocrm          the access token is accepted by the configured account
      amocrm write-back, amocrm erp id field
                      write-back on only: the token's user may edit leads, and
                      AMOCRM_ERP_ID_FIELD is a lead field that can hold the record id
      webhook subscription
                      amoCRM lists our webhook (PUBLIC_URL), enabled, for status changes
      erp             Rukovoditel accepts the API key, username and password (login)
      erp entity, erp field map, erp one record
                      a write would work and keep every value
      inngest dev server
                      dev mode: the dev server answers where INNGEST_DEV points
      inngest         event and signing keys present (cloud mode) and of the right form;
                      the serve origin Inngest syncs register
      webhook secret  AMOCRM_WEBHOOK_SECRET is set (WARN when short, or while
                      AMOCRM_WEBHOOK_SECRET_PREVIOUS is accepted too)

    With --offline, rows that would contact something are SKIP, each under its
    own name.

    Secrets are never printed: only whether they are set and how long they are.
    Exit code 0 when nothing failed (warnings and skipped rows are fine), 1 otherwise.

    \b
    Examples:
      python -m prometei doctor
      python -m prometei --env-file .env.production doctor
      python -m prometei doctor --offline --json
    """
    environ = dict(os.environ)
    secrets = secret_env_values(environ)
    _, settings = check_environment(environ)
    if settings is not None:
        # Each failure is already a row of the table; the clients' warnings would repeat it.
        setup_logging(settings, quiet_level="ERROR")

    def show(check: Check) -> None:
        if not as_json:
            click.echo(_row(check, secrets))

    if not as_json:
        click.echo(f"{'CHECK':<{NAME_WIDTH}}{'STATUS':<{STATUS_WIDTH}}DETAIL")
    checks = run_checks(environ, offline=offline, on_check=show)
    failed = [check for check in checks if not check.ok]
    if as_json:
        document = {
            "ok": not failed,
            "checks": [
                {
                    "name": check.name,
                    "status": check.status.lower(),
                    "detail": mask_values(check.detail, secrets),
                    "fix": (
                        mask_values(check.fix, secrets) if check.status in ("FAIL", "WARN") else ""
                    ),
                }
                for check in checks
            ],
        }
        click.echo(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        warned = sum(1 for check in checks if check.status == "WARN")
        passed = sum(1 for check in checks if check.status == "OK")
        click.echo(
            f"\n{passed} ok, {warned} warning(s), {len(failed)} failed"
            + ("" if failed else ": ready")
        )
    sys.exit(EXIT_FAILED if failed else EXIT_OK)
