"""SlidingWindowLimiter and the 429 brake: on a fake clock (the rules), then with real threads
and real HTTP against the fake amoCRM, where the sliding window is counted on arrival.

A request counts from its grant until one window after its answer: that is what makes the bound
hold whenever amoCRM counts a request between our send and its answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from prometei.amocrm import budget
from prometei.amocrm.client import (
    BRAKE_WITHOUT_RETRY_AFTER_S,
    RATE_LIMITED_BACKOFF_SECONDS,
    AmoCRMClient,
)
from prometei.amocrm.ratelimit import COOLDOWN_S, Brake, SlidingWindowLimiter
from prometei.errors import UpstreamUnavailable
from prometei.services import get_services
from tests.fakes.amocrm import FakeAmoCRM, rate_limited
from tests.support.amo_listing import FakeClock, Tokens
from tests.support.loopback import LoopbackServer

TOKEN = "limiter-token-SECRET"


def most_busy_at_once(intervals: list[tuple[float, float]], window: float) -> int:
    """The most requests whose [grant, answer] intervals could all land within one window:
    for each grant g, the intervals that end after g - window and start before g."""
    best = 0
    for grant, _ in intervals:
        best = max(best, sum(1 for g, r in intervals if g <= grant and r > grant - window))
    return best


def test_instant_answers_allow_the_limit_per_window_and_no_more() -> None:
    clock = FakeClock(1000.0)
    limiter = SlidingWindowLimiter(6, clock=clock, sleep=clock.sleep)
    grants = []
    for _ in range(30):
        with limiter.slot():
            grants.append(clock())
    # Six go at once, the seventh one window after the first answer, and so on.
    assert grants[:6] == [1000.0] * 6
    assert grants[6] == pytest.approx(1001.0)
    for first, seventh in zip(grants, grants[6:], strict=False):
        assert seventh - first >= 1.0


def test_slow_answers_keep_their_slot_until_a_window_after_the_answer() -> None:
    clock = FakeClock(1000.0)
    limiter = SlidingWindowLimiter(2, clock=clock, sleep=clock.sleep)
    intervals = []
    for _ in range(8):
        ticket = limiter.acquire()
        granted = clock()
        clock.t += 0.4  # the answer takes 0.4 s: amoCRM counted it somewhere in between
        limiter.release(ticket)
        intervals.append((granted, clock()))
    assert most_busy_at_once(intervals, 1.0) <= 2
    # The third request waits for the first one's answer + 1 s, not for its grant + 1 s.
    assert intervals[2][0] >= intervals[0][1] + 1.0


def test_idle_time_is_not_banked_into_a_burst() -> None:
    clock = FakeClock(1000.0)
    limiter = SlidingWindowLimiter(3, clock=clock, sleep=clock.sleep)
    with limiter.slot():
        pass
    clock.t += 60
    grants = []
    for _ in range(9):
        with limiter.slot():
            grants.append(clock())
    assert grants[:3] == [grants[0]] * 3
    assert all(later - earlier >= 1.0 for earlier, later in zip(grants, grants[3:], strict=False))


def test_the_brake_stops_every_limiter_that_shares_it_then_halves_them() -> None:
    clock = FakeClock(1000.0)
    brake = Brake(clock=clock)
    runs = SlidingWindowLimiter(4, brake=brake, clock=clock, sleep=clock.sleep)
    listing = SlidingWindowLimiter(2, brake=brake, clock=clock, sleep=clock.sleep)

    until = brake.engage(3.0)  # amoCRM's 429 said: wait 3 s
    with runs.slot():
        assert clock() == until == 1003.0
    with listing.slot():
        assert clock() == 1003.0
    assert runs.effective_limit(clock()) == 2 and listing.effective_limit(clock()) == 1
    assert runs.effective_limit(until + COOLDOWN_S + 1) == 4
    # A later, shorter pause never shortens the one in force.
    brake.engage(10.0)
    assert brake.engage(1.0) == pytest.approx(clock() + 10.0)


@pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (3, 0.0)])
def test_bad_limits_are_refused(limit: int, window: float) -> None:
    with pytest.raises(ValueError, match=r"limit|window"):
        SlidingWindowLimiter(limit, window_s=window)


def test_threads_share_one_limit_and_a_release_wakes_a_waiter() -> None:
    """Real time, short window: 5 threads x 4 requests through a limit of 3 per 0.2 s."""
    limiter = SlidingWindowLimiter(3, window_s=0.2)
    lock = threading.Lock()
    intervals: list[tuple[float, float]] = []

    def worker() -> None:
        for _ in range(4):
            ticket = limiter.acquire()
            granted = time.monotonic()
            limiter.release(ticket)
            with lock:
                intervals.append((granted, time.monotonic()))

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(intervals) == 20
    assert most_busy_at_once(intervals, 0.2) <= 3
    assert limiter.waited_s > 0  # the bound was exercised


# ---- at the fake amoCRM, over real HTTP ---------------------------------------------------------


@pytest.fixture
def amo() -> Iterator[tuple[FakeAmoCRM, str]]:
    fake = FakeAmoCRM(access_tokens=(TOKEN,))
    fake.add_lead(4242)
    server = LoopbackServer(fake.wsgi, "fake-amocrm").start()
    try:
        yield fake, server.url
    finally:
        fake.stopping.set()
        server.stop()


def hammer(calls: list[Callable[[], object]], each: int) -> list[BaseException]:
    """One thread per entry of `calls` (an amoCRM request; entries may repeat), each making
    it `each` times; the 429s and 5xx they met."""
    errors: list[BaseException] = []

    def worker(call: Callable[[], object]) -> None:
        for _ in range(each):
            try:
                call()
            except UpstreamUnavailable as exc:
                errors.append(exc)

    started = [threading.Thread(target=worker, args=(call,)) for call in calls]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=60)
    return errors


def test_many_threads_never_put_more_than_the_limit_into_any_second_at_the_fake(amo) -> None:
    """amoCRM's own view: 8 threads at once, slow answers, counted on arrival at the fake."""
    fake, url = amo
    fake.fail_next(delay_s=0.15, times=6)  # some answers are slow, the others are not
    limiter = SlidingWindowLimiter(7)
    client = AmoCRMClient(Tokens(TOKEN), limiter=limiter, api_base_url=url)

    assert hammer([lambda: client.get_lead(4242)] * 8, each=3) == []

    assert fake.lead_reads(4242) == 24
    assert fake.peak_rate(1.0) <= 7
    assert fake.peak_rate(1.0) >= 6  # and the limit is used, not wasted
    assert limiter.waited_s > 0


@pytest.mark.parametrize(
    ("retry_after_s", "pause_s", "asked_wait_s"),
    [
        # amoCRM as the reference has it (§4.1): no Retry-After. The brake's own default
        # stops the process; the failed request is retried after the long back-off.
        (None, BRAKE_WITHOUT_RETRY_AFTER_S, RATE_LIMITED_BACKOFF_SECONDS),
        # The other reading: amoCRM names its wait, and the brake and the retry take it.
        (1, 1.0, 1.0),
    ],
    ids=["no-retry-after", "retry-after-1"],
)
def test_one_429_pauses_every_thread_of_every_lane_of_the_process(
    amo, retry_after_s, pause_s, asked_wait_s
) -> None:
    fake, url = amo
    fake.fail_next(rate_limited(retry_after_s))
    settings = get_services().settings
    runs, reconcile = (
        AmoCRMClient(Tokens(TOKEN), limiter=budget.limiter_for(settings, lane), api_base_url=url)
        for lane in ("runs", "reconcile")
    )
    brake = budget.process_brake()

    # The runs lane reads the lead, the reconcile lane the account: the log tells them apart.
    errors = hammer([lambda: runs.get_lead(4242)] * 4 + [reconcile.account], each=2)

    assert len(errors) == 1 and errors[0].retry_after_seconds == asked_wait_s
    assert len(fake.log) == 10
    [limited] = [entry for entry in fake.log if entry.status == 429]
    assert limited.answered_at is not None
    # Requests already on their way when the 429 came back arrive within a few ms; after
    # that nothing leaves this process, from any thread of either lane, until the pause is
    # over.
    settled = limited.answered_at + 0.1
    later = [entry for entry in fake.log if entry.at > settled]
    assert {entry.path for entry in later} == {"/api/v4/leads/4242", "/api/v4/account"}
    assert min(entry.at for entry in later) >= limited.answered_at + pause_s - 0.05
    assert brake.engaged == 1


def test_the_whole_process_budget_never_trips_amocrms_own_limit_under_a_burst(amo) -> None:
    """The fake enforces amoCRM's 7/s itself (429 for the 8th request in a sliding second).
    Every lane of one process at once, threads, some slow answers: not one 429."""
    fake, url = amo
    fake.enforce_rate_limit = 7
    fake.fail_next(delay_s=0.2, times=5)
    settings = get_services().settings
    clients = {
        lane: AmoCRMClient(
            Tokens(TOKEN), limiter=budget.limiter_for(settings, lane), api_base_url=url
        )
        for lane in budget.LANES
    }
    burst = [lambda: clients["runs"].get_lead(4242)] * 8 + [
        lambda: clients["backfill"].get_lead(4242),
        clients["reconcile"].account,
    ]

    errors = hammer(burst, each=2)

    assert errors == []
    assert [entry.status for entry in fake.log] == [200] * 20
    assert fake.peak_rate(1.0) >= 6  # the budget is used, not wasted
    assert budget.process_brake().engaged == 0
