"""Small helpers shared by the operator commands (doctor, webhook, replay, backfill, tokens).

Exit codes every command keeps: 0 success, 1 a check or request failed, 2 usage or
configuration error (click's own usage errors are 2 as well).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from prometei.config import Settings
from prometei.errors import ConfigError
from prometei.services import Services, get_services

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def load_services() -> Services:
    """The process services with valid settings, or exit 2 naming the bad variable."""
    try:
        services = get_services()
        _ = services.settings
    except ConfigError as exc:
        exit_with(EXIT_USAGE, f"configuration error: {exc.message}")
    setup_logging(services.settings)
    return services


def setup_logging(settings: Settings, quiet_level: str = "WARNING") -> None:
    """JSON (or text) log lines with secrets scrubbed, at `quiet_level` unless
    PROMETEI_LOG_LEVEL=DEBUG, so a command's own output stays readable."""
    from prometei.logs import configure_logging

    level = "DEBUG" if settings.log_level == "DEBUG" else quiet_level
    configure_logging(level=level, fmt=settings.log_format, secrets=settings.secret_values())


def inngest_hint(settings: Settings, error: object) -> str:
    """What to check when sending events failed: in dev mode, the dev server (and how to start
    it); otherwise the event key and Inngest's status. Empty for other failures."""
    from prometei.config import dev_server_command
    from prometei.errors import UpstreamError

    if not isinstance(error, UpstreamError) or error.service != "inngest":
        return ""
    if settings.is_dev:
        return (
            f"\ncheck that the Inngest dev server runs at {settings.event_api_origin} (start it: "
            f"{dev_server_command()}), or point INNGEST_DEV at it"
        )
    return "\ncheck INNGEST_EVENT_KEY (python -m prometei doctor) and Inngest's status page"


def exit_with(code: int, message: str) -> NoReturn:
    """Print `message` on stderr and exit with `code`."""
    click.echo(message, err=True)
    sys.exit(code)
