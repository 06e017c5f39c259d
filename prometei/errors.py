"""The project's small error tree.

Every error says what went wrong and what to do about it, never carries a secret, and has a
`retryable` bit. Inngest functions translate it at their boundary (`prometei.functions.boundary`):
retryable errors let Inngest retry the step, the rest become `NonRetriableError`.
"""

from __future__ import annotations


class PrometeiError(Exception):
    """Base class. `retryable` tells the function boundary whether a retry can help."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class ConfigError(PrometeiError):
    """A setting is missing or malformed; the message names the variable."""


class InputError(PrometeiError):
    """Data we were given (an event payload, a webhook body) is invalid."""


class ReconnectRequired(PrometeiError):
    """amoCRM OAuth tokens are gone or revoked; a person must reconnect via the callback page."""


class UpstreamError(PrometeiError):
    """An outside system (amocrm, erp, kv, inngest) failed or refused a request.

    `status` is the HTTP status when there was one; `body_excerpt` is a short, already
    redacted piece of the answer, for logs and run output.
    """

    def __init__(
        self,
        service: str,
        message: str,
        *,
        status: int | None = None,
        body_excerpt: str = "",
        retryable: bool | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(f"{service}: {message}", retryable=retryable)
        self.service = service
        self.status = status
        self.body_excerpt = body_excerpt
        self.retry_after_seconds = retry_after_seconds


class UpstreamUnavailable(UpstreamError):
    """Network failure, timeout, 429 or 502/503/504: worth retrying later."""

    retryable = True


class UpstreamAuthError(UpstreamError):
    """Credentials refused (401/403) or the account is blocked or unpaid (402)."""


class UpstreamRejected(UpstreamError):
    """The outside system understood the request and said no (validation, unknown field)."""


class UpstreamProtocolError(UpstreamError):
    """The answer had a shape we do not understand (HTML instead of JSON, missing fields)."""


def excerpt(text: str | bytes | None, limit: int = 300) -> str:
    """A short single-line piece of a response body for error messages."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"
