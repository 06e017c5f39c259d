"""JSON error answers shared by every endpoint."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify


def json_error(status: int, message: str, **extra: Any) -> Response:
    """`{"error": "<what and how to fix>"}` with the given status."""
    response = jsonify({"error": message, **extra})
    response.status_code = status
    return response
