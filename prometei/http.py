"""Shared `requests` plumbing: one session per outside API, explicit timeouts, clean errors.

Every client in the project builds its session here and sends through `send()`, which turns
`requests` exceptions into `UpstreamUnavailable` with a message that names the service and
never the URL's query string (it may carry a secret).
"""

from __future__ import annotations

from typing import Any

import requests

from prometei import __version__
from prometei.errors import UpstreamUnavailable

# (connect, read) seconds. Each Inngest step call must finish well inside Vercel's
# maxDuration, and a stuck socket should become a retry, not a hung function.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 20.0)
USER_AGENT = f"prometei/{__version__} (+amoCRM-to-Rukovoditel)"


def make_session() -> requests.Session:
    """A session with our User-Agent and no automatic retries (Inngest owns retries)."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # Never pick up proxy or netrc credentials from the environment implicitly.
    session.trust_env = False
    return session


def send(
    session: requests.Session,
    service: str,
    method: str,
    url: str,
    *,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    **kwargs: Any,
) -> requests.Response:
    """Send a request; network failures and timeouts become `UpstreamUnavailable`."""
    try:
        return session.request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.Timeout:
        raise UpstreamUnavailable(
            service, f"no answer within {timeout[1]:g}s (timeout); will retry"
        ) from None
    except requests.ConnectionError as exc:
        reason = type(exc.__cause__ or exc).__name__
        raise UpstreamUnavailable(service, f"connection failed ({reason}); will retry") from None
    except requests.RequestException as exc:
        raise UpstreamUnavailable(service, f"request failed ({type(exc).__name__})") from None


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    return None
