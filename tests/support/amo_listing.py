"""The fake amoCRM wired into `responses` on a fake clock, for tests of the listing engines.

    with fake_amo() as wired:
        wired.amo.add_lead(...)
        client = wired.client(limit=7)        # an AmoCRMClient whose limiter runs on wired.clock

Every request reaches `FakeAmoCRM.handle` with the fake time, so the fake's request log (and
`peak_rate`) measures the limiter without anything sleeping for real.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import responses

from prometei.amocrm.client import AmoCRMClient
from prometei.amocrm.ratelimit import Brake, SlidingWindowLimiter
from tests.conftest import AMO_BASE, TEST_SECRETS
from tests.fakes.amocrm import FakeAmoCRM

TOKEN = TEST_SECRETS["AMOCRM_ACCESS_TOKEN"]
AMO_URL = re.compile(re.escape(AMO_BASE) + r"/.*")
BASE_TIME = 1_735_700_000  # 2025-01-01 02:53:20 UTC


class FakeClock:
    def __init__(self, start: float = 5000.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    __call__ = now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.t += seconds


class Tokens:
    """A token source that always has `token` (the amoCRM client's `TokenSource`)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token

    def access_token(self) -> str:
        return self.token

    def after_unauthorized(self, rejected: str) -> str | None:
        return None

    def account_host(self) -> str:
        return "example.amocrm.ru"


@dataclass
class WiredAmo:
    amo: FakeAmoCRM
    clock: FakeClock
    mock: responses.RequestsMock
    limiters: list[SlidingWindowLimiter] = field(default_factory=list)

    def client(self, limit: int = 7) -> AmoCRMClient:
        limiter = SlidingWindowLimiter(
            limit, brake=Brake(clock=self.clock), clock=self.clock, sleep=self.clock.sleep
        )
        self.limiters.append(limiter)
        return AmoCRMClient(Tokens(), limiter=limiter, expected_subdomain="example")

    def add_leads(self, count: int, *, first: int = 1, spacing: int = 1, **fields: object) -> None:
        """Leads `first`..`first + count - 1`, updated `spacing` seconds apart from BASE_TIME."""
        for n in range(count):
            lead_id = first + n
            self.amo.add_lead(lead_id, updated_at=BASE_TIME + n * spacing, **fields)


@contextmanager
def fake_amo(mock: responses.RequestsMock | None = None) -> Iterator[WiredAmo]:
    """The fake amoCRM behind `responses` (a new mock, or `mock` when the test has one)."""
    clock = FakeClock()
    amo = FakeAmoCRM(access_tokens=(TOKEN,))
    if mock is not None:
        for method in (responses.GET, responses.POST, responses.DELETE, responses.PATCH):
            mock.add_callback(method, AMO_URL, callback=amo.responses_callback(clock))
        yield WiredAmo(amo, clock, mock)
        return
    with responses.RequestsMock(assert_all_requests_are_fired=False) as own:
        for method in (responses.GET, responses.POST, responses.DELETE, responses.PATCH):
            own.add_callback(method, AMO_URL, callback=amo.responses_callback(clock))
        yield WiredAmo(amo, clock, own)
