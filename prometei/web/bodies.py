"""Read a request body whole, bounded, and refuse one that is shorter than it said it was.

Every endpoint that looks at a body reads it through `read_body(request, limit)`, once, before
anything parses it. A body whose declared Content-Length is over the limit is refused before a
byte is read (413); one without a length is read to at most `limit + 1` bytes (413 past the
limit). A body that ends before its Content-Length is a truncated upload (400): werkzeug notices
that on its own only when the server hands it a raw socket stream; servers that mark their
input as already terminated (gunicorn, the test client) pass the short body through, and it
would be parsed as if it were whole.

The body is cached on the request (Flask's `get_data(cache=True)`), so later readers - the
Inngest SDK, the webhook parser - get the same bytes without touching the stream again.
"""

from __future__ import annotations

import flask
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge


class BodyRefused(Exception):
    """The body cannot be used: `status` (400 or 413) and a message that says what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def too_large(limit: int, why: str) -> BodyRefused:
    return BodyRefused(413, f"body is larger than {limit} bytes; {why}")


def truncated(received: int, declared: int) -> BodyRefused:
    return BodyRefused(
        400,
        f"the body ended after {received} of the {declared} bytes its Content-Length "
        "announced (a truncated upload); send the whole body again",
    )


def read_body(
    request: flask.Request, limit: int, *, why: str = "that is the most allowed"
) -> bytes:
    """The whole body (at most `limit` bytes), or BodyRefused. Safe to call more than once."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(limit, why)
    # Per-request limit for a body without a length (chunked): werkzeug stops reading there
    # without complaint, so allow one byte more and treat that byte as "too large".
    request.max_content_length = limit + 1
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise too_large(limit, why) from None
    except ClientDisconnected:
        # werkzeug's own check: the stream ended before Content-Length bytes arrived.
        raise BodyRefused(
            400,
            "the body ended before its Content-Length (a truncated upload, or the client "
            "disconnected); send the whole body again",
        ) from None
    except Exception:
        raise BodyRefused(400, "could not read the request body (client disconnected?)") from None
    if len(body) > limit:
        raise too_large(limit, why)
    if declared is not None and len(body) < declared:
        raise truncated(len(body), declared)
    return body
