"""Logging: one JSON object per line on stdout, secrets scrubbed from every record.

`configure_logging(settings)` is called once per process by each entrypoint. It makes our
stdout handler the root logger's only one and scrubs every record when it is created, so every
logger, the Inngest SDK's included, goes through the redaction. `log_context(lead_id=...,
event_id=..., run_id=...)` adds fields to every line logged inside the block.

Under Vercel's Python runtime (PyPI `vercel-runtime`), the runtime installs its own root handler
before it imports our entrypoint; that handler forwards each record to Vercel's log view, and the
runtime also forwards everything written to stdout. Left in place, every line would show twice
and the SDK's probe refusals would reach the log at level error, so configuring logging removes
the handlers that were there before ours (see `configure_logging`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

from prometei.redaction import redact, register_secrets

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "prometei_log_context", default=None
)
_CONTEXT_KEYS = ("lead_id", "event_id", "run_id", "fn_id")
_HANDLER_NAME = "prometei"
# The logger the Inngest client logs through (prometei.functions.client passes it to the SDK).
SDK_LOGGER = "inngest"


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (lead_id, event_id, run_id, ...) to every log line inside the block."""
    current = dict(_context.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    token = _context.set(current)
    try:
        yield
    finally:
        _context.reset(token)


def _scrub(record: logging.LogRecord) -> None:
    """Render the message, scrub it and freeze it, so no handler ever sees the raw text."""
    try:
        message = record.getMessage()
    except Exception:  # a bad %-format must not lose the line
        message = str(record.msg)
    record.msg = redact(message)
    record.args = None
    if record.exc_info:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    for key in _CONTEXT_KEYS:
        if not hasattr(record, key):
            value = (_context.get() or {}).get(key)
            if value is not None:
                setattr(record, key, value)


class RedactingFilter(logging.Filter):
    """Handler-level twin of the record factory below, for records built before it existed."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub(record)
        return True


_base_factory = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    _scrub(record)
    return record


def install_redaction() -> None:
    """Scrub every record of every logger (the SDK's included) at creation time."""
    if logging.getLogRecordFactory() is not _redacting_factory:
        logging.setLogRecordFactory(_redacting_factory)


class InngestProbeFilter(logging.Filter):
    """Inngest Cloud probes every Vercel deploy with unsigned requests; the SDK logs each
    refusal as an ERROR `unauthorized:` line. They are expected, so demote them to DEBUG.

    Installed on the SDK's logger (so no handler ever sees the ERROR) and on our handler (for
    records from its child loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(SDK_LOGGER) and "unauthorized" in str(record.msg).lower():
            record.levelno = logging.DEBUG
            record.levelname = "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            line.update({k: v for k, v in extra.items() if k not in line})
        if record.exc_text:
            line["exception"] = record.exc_text
        return redact(json.dumps(line, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{key}={getattr(record, key)}"
            for key in _CONTEXT_KEYS
            if getattr(record, key, None) is not None
        )
        base = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        if context:
            base += f" [{context}]"
        if record.exc_text:
            base += "\n" + record.exc_text
        return base


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is now (test capture, CLI redirection), not to the
    stream that existed when logging was first configured."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        del value


def configure_logging(
    *, level: str = "INFO", fmt: str = "json", secrets: list[str] | None = None
) -> None:
    """Make our stdout handler the root logger's only one (idempotent: safe on every warm import).

    The first call removes whatever root handlers were installed before it (a runtime's, or a
    `basicConfig` somewhere): each record is then written once, as one line on stdout, after
    the redaction and the probe filter. Handlers added after that are left alone (a debugging
    handler, pytest's capture): later calls only update the level, format and secrets.
    """
    register_secrets(secrets or [])
    install_redaction()
    _filter_sdk_probes(logging.getLogger(SDK_LOGGER))
    root = logging.getLogger()
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    for handler in root.handlers:
        if handler.get_name() == _HANDLER_NAME:
            handler.setFormatter(formatter)
            root.setLevel(level)
            return
    for foreign in list(root.handlers):
        root.removeHandler(foreign)
    handler = _StdoutHandler()
    handler.set_name(_HANDLER_NAME)
    _filter_sdk_probes(handler)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
    # The SDK's own logger must reach our handler (and its filters) too.
    logging.getLogger(SDK_LOGGER).propagate = True


def _filter_sdk_probes(target: logging.Logger | logging.Handler) -> None:
    if not any(isinstance(existing, InngestProbeFilter) for existing in target.filters):
        target.addFilter(InngestProbeFilter())
