"""The OAuth callback's time budget: the code goes to amoCRM only while the rest still fits.

Vercel stops `/api/oauth/callback` at its maxDuration (30 s, vercel.json). The one moment that
must never be cut off is between sending the single-use code and storing the pair amoCRM
answers with: cut there, the pair is lost and the person has to connect again. So the page keeps
a `ConnectBudget` from the moment the request reached our handler and asks it twice before the
code leaves:

- before spending the state (one state-store command, `CONNECT_STATE_TIMEOUT`), and
- right before the exchange,

whether the exchange and both write attempts of the pair (`EXCHANGE_RESERVE_S`) still fit before
`CALLBACK_MAX_DURATION_S - START_MARGIN_S`. If not, `ConnectTooSlow` is raised and nothing was
sent: a slow state store, a slow lease acquisition or a long wait for the lock all end in a
"try again" page, never in a spent code. The release of the lease afterwards gets what is left
(`time_left`) and otherwise lets the lease run out by itself.

docs/token-rotation.md ("Connect page") has the table; `tests/test_oauth_callback.py` checks it
against these constants.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometei.amocrm.oauth import TOKEN_TIMEOUT
from prometei.errors import UpstreamUnavailable
from prometei.http import request_deadline
from prometei.store.kv import CONNECT_STATE_TIMEOUT
from prometei.tokens.lease import store_deadline_s
from prometei.tokens.sources import EXCHANGE_WRITE_ATTEMPTS, EXCHANGE_WRITE_PAUSE_S

# vercel.json: functions["api/oauth/callback.py"].maxDuration (a test keeps them equal).
CALLBACK_MAX_DURATION_S = 30.0
# Time our handler does not see: a cold start's imports before it, the page written after it.
START_MARGIN_S = 2.0


def state_command_s() -> float:
    """Whole-request deadline of one connect-state command (the nonce's GET or DEL)."""
    return request_deadline(CONNECT_STATE_TIMEOUT)


def exchange_reserve_s() -> float:
    """What must still fit once the code is sent: the token request and the pair's writes."""
    writes = EXCHANGE_WRITE_ATTEMPTS * store_deadline_s()
    pauses = (EXCHANGE_WRITE_ATTEMPTS - 1) * EXCHANGE_WRITE_PAUSE_S
    return request_deadline(TOKEN_TIMEOUT) + writes + pauses


def send_by_s() -> float:
    """The latest moment (seconds into the request) the code may be sent."""
    return CALLBACK_MAX_DURATION_S - START_MARGIN_S - exchange_reserve_s()


class ConnectTooSlow(UpstreamUnavailable):
    """The checks before the exchange took so long that the exchange and the write might not
    finish inside the callback's maxDuration: the code was not sent."""


class ConnectBudget:
    """Seconds left for one callback request, on `clock` (monotonic; tests pass a fake)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ends_at = clock() + CALLBACK_MAX_DURATION_S - START_MARGIN_S

    def time_left(self) -> float:
        return max(0.0, self._ends_at - self._clock())

    def before_spending_state(self) -> None:
        """Room for the state's spend, then the exchange and the writes; else ConnectTooSlow."""
        self._require(state_command_s() + exchange_reserve_s(), "spending the connect state")

    def before_sending_code(self) -> None:
        """Room for the exchange and the writes; else ConnectTooSlow."""
        self._require(exchange_reserve_s(), "sending the authorization code")

    def _require(self, seconds: float, step: str) -> None:
        left = self.time_left()
        if left < seconds:
            raise ConnectTooSlow(
                "kv",
                f"the checks before {step} took too long ({left:.1f}s of the page's "
                f"{CALLBACK_MAX_DURATION_S:g}s left, {seconds:.1f}s needed); the authorization "
                "code was not sent to amoCRM",
            )
