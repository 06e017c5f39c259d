"""Token provider behaviour: long-lived mode, cache, margin, 401-once, revoked re-read,
seeding, moved accounts, keepalive, store failures, waiting losers, and no secrets in logs."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from pydantic import SecretStr

from prometei.amocrm.oauth import OAuthClient
from prometei.config import settings_from_mapping
from prometei.errors import (
    ConfigError,
    InputError,
    ReconnectRequired,
    UpstreamUnavailable,
)
from prometei.store.base import ANY, TokenRecord, TokenStore
from prometei.store.file import FileTokenStore
from prometei.tokens import OAuthTokenProvider, StaticTokenSource, build_token_source
from prometei.tokens.lease import Deadline
from prometei.tokens.markers import SENT, RotationMark
from tests.support.fake_amo_oauth import REVOKED_BODY

HOST = "example.amocrm.ru"
TOKEN_URL = f"https://{HOST}/oauth2/access_token"
SECRET = "client-secret-SECRET-9999"
ENV = {
    "AMOCRM_SUBDOMAIN": "example",
    "AMOCRM_CLIENT_ID": "cid",
    "AMOCRM_CLIENT_SECRET": SECRET,
    "AMOCRM_REDIRECT_URI": "https://prometei.example.test/api/oauth/callback",
}
T0 = 1_700_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class CountingStore:
    """Wraps a real store, counting reads and optionally failing writes."""

    def __init__(self, inner: TokenStore) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.reads = 0
        self.writes = 0
        self.fail_writes = 0
        self.fail_everything = False

    def describe(self) -> str:
        return self.inner.describe()

    def read(self) -> TokenRecord | None:
        self.reads += 1
        return self.inner.read()

    def read_state(self):
        self.reads += 1
        return self.inner.read_state()

    def put_marker(self, name, value, *, version, expect=ANY) -> bool:
        if self.fail_everything:
            raise UpstreamUnavailable("kv", "write failed (simulated)")
        return self.inner.put_marker(name, value, version=version, expect=expect)

    def write(self, record: TokenRecord) -> TokenRecord:
        self._maybe_fail()
        return self.inner.write(record)

    def write_if_version(self, record: TokenRecord, expected_version: int) -> TokenRecord | None:
        self._maybe_fail()
        return self.inner.write_if_version(record, expected_version)

    def _maybe_fail(self) -> None:
        if self.fail_everything:
            raise UpstreamUnavailable("kv", "write failed (simulated)")
        if self.fail_writes:
            self.fail_writes -= 1
            raise UpstreamUnavailable("kv", "write failed (simulated)")
        self.writes += 1

    def acquire_lock(self, ttl_ms: int, owner: str | None = None) -> str | None:
        return self.inner.acquire_lock(ttl_ms, owner)

    def renew_lock(self, owner: str, ttl_ms: int) -> bool:
        return self.inner.renew_lock(owner, ttl_ms)

    def release_lock(self, owner: str) -> bool:
        return self.inner.release_lock(owner)


class AmoEndpoint:
    """responses callback with amoCRM's single-use refresh rotation."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.calls: list[dict[str, Any]] = []
        self.n = 0
        self.before_answer: Any = None

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        self.calls.append(body)
        if self.before_answer:
            self.before_answer(body)
        token = body["refresh_token"]
        if token not in self.live:
            return 401, {}, json.dumps(REVOKED_BODY)
        self.live.discard(token)
        self.n += 1
        self.live.add(f"ref-SECRET-{self.n}")
        answer = {
            "token_type": "Bearer",
            "expires_in": 86400,
            "access_token": f"acc-SECRET-{self.n}",
            "refresh_token": f"ref-SECRET-{self.n}",
        }
        return 200, {}, json.dumps(answer)


@pytest.fixture
def amo():
    endpoint = AmoEndpoint()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(
            responses.POST, TOKEN_URL, callback=endpoint, content_type="application/json"
        )
        endpoint.mock = mock
        yield endpoint


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> CountingStore:
    return CountingStore(FileTokenStore(tmp_path / "state", clock=clock))


def make(store, clock, env=None, **kw) -> OAuthTokenProvider:
    settings = settings_from_mapping(env or ENV)
    oauth = OAuthClient.from_settings(settings)
    oauth._clock = clock  # token expiry computed on the test clock
    return OAuthTokenProvider(settings, lambda: store, oauth, clock=clock, sleep=clock.sleep, **kw)


def put(
    store,
    amo,
    *,
    expires_in: float,
    access="acc-SECRET-0",
    refresh="ref-SECRET-0",
    host=HOST,
    now=T0,
    **extra,
) -> TokenRecord:
    amo.live.add(refresh)
    return store.inner.write(
        TokenRecord(
            access_token=SecretStr(access),
            refresh_token=SecretStr(refresh),
            expires_at=int(now + expires_in),
            obtained_at=now - 1000,
            host=host,
            **extra,
        )
    )


# ---- long-lived mode -----------------------------------------------------------------------
def test_long_lived_token_never_touches_a_store():
    settings = settings_from_mapping({**ENV, "AMOCRM_ACCESS_TOKEN": "long-lived-SECRET-x"})

    def no_store() -> TokenStore:
        raise AssertionError("the store must not be built in long-lived mode")

    source = build_token_source(settings, no_store)
    assert isinstance(source, StaticTokenSource)
    assert source.access_token() == "long-lived-SECRET-x"
    assert source.after_unauthorized("long-lived-SECRET-x") is None
    assert source.account_host() == HOST
    assert "long-lived-SECRET-x" not in json.dumps(source.status()) + repr(source)
    with pytest.raises(ConfigError, match="AMOCRM_ACCESS_TOKEN"):
        source.store_exchanged(
            TokenRecord(
                access_token=SecretStr("a"),
                refresh_token=SecretStr("r"),
                expires_at=1,
                obtained_at=1,
                host=HOST,
            )
        )


def test_oauth_mode_needs_the_client_variables():
    with pytest.raises(ConfigError, match="AMOCRM_CLIENT_SECRET"):
        build_token_source(settings_from_mapping({"AMOCRM_SUBDOMAIN": "example"}), lambda: None)
    assert isinstance(
        build_token_source(settings_from_mapping(ENV), lambda: None), OAuthTokenProvider
    )


# ---- cache and margin ------------------------------------------------------------------------
def test_warm_instance_reads_the_store_once_then_serves_from_cache(store, clock, amo):
    put(store, amo, expires_in=3600)
    provider = make(store, clock)
    assert provider.access_token() == "acc-SECRET-0"
    assert store.reads == 1
    for _ in range(5):
        clock.now += 60
        assert provider.access_token() == "acc-SECRET-0"
    assert store.reads == 1 and amo.calls == []


def test_refresh_happens_inside_the_margin_not_before(store, clock, amo):
    put(store, amo, expires_in=1200)
    provider = make(store, clock, margin_s=600)
    assert provider.access_token() == "acc-SECRET-0" and amo.calls == []
    clock.now += 601  # 599 s left: inside the 10 min margin
    assert provider.access_token() == "acc-SECRET-1"
    assert [c["refresh_token"] for c in amo.calls] == ["ref-SECRET-0"]
    stored = store.inner.read()
    assert stored.refresh_token.get_secret_value() == "ref-SECRET-1"
    assert stored.refreshed_at == int(clock.now) and stored.obtained_at == T0 - 1000
    assert stored.version == 2
    assert store.inner.acquire_lock(1000) is not None  # the refresh lock was released


# ---- after a 401 -----------------------------------------------------------------------------
def test_after_unauthorized_refreshes_once_and_returns_the_new_token(store, clock, amo):
    put(store, amo, expires_in=3600)
    provider = make(store, clock)
    token = provider.access_token()
    assert provider.after_unauthorized(token) == "acc-SECRET-1"
    assert len(amo.calls) == 1
    assert provider.access_token() == "acc-SECRET-1"  # cache updated
    # Another thread reporting the same stale token does not cause a second refresh.
    assert provider.after_unauthorized(token) == "acc-SECRET-1"
    assert len(amo.calls) == 1


def test_after_unauthorized_takes_a_newer_stored_token_without_refreshing(store, clock, amo):
    put(store, amo, expires_in=3600)
    provider = make(store, clock)
    old = provider.access_token()
    put(store, amo, expires_in=3600, access="acc-SECRET-other", refresh="ref-SECRET-other")
    assert provider.after_unauthorized(old) == "acc-SECRET-other"
    assert amo.calls == []


# ---- "Token has been revoked" ----------------------------------------------------------------
def test_revoked_then_reread_finds_the_pair_someone_else_rotated(store, clock, amo):
    put(store, amo, expires_in=-10)

    def someone_else_rotates(body: dict) -> None:
        # Another instance (whose lease ran out) used ref-SECRET-0 first and stored its pair.
        amo.live.discard("ref-SECRET-0")
        put(
            store,
            amo,
            expires_in=86400,
            now=int(clock.now),
            access="acc-SECRET-theirs",
            refresh="ref-SECRET-theirs",
        )
        amo.before_answer = None

    amo.before_answer = someone_else_rotates
    provider = make(store, clock)
    assert provider.access_token() == "acc-SECRET-theirs"
    assert len(amo.calls) == 1


def test_revoked_with_nothing_newer_asks_for_a_reconnect(store, clock, amo):
    put(store, amo, expires_in=-10)
    amo.live.clear()  # the stored refresh token is already spent
    provider = make(store, clock)
    with pytest.raises(ReconnectRequired) as info:
        provider.access_token()
    assert "/api/oauth/callback" in str(info.value) and "Connect amoCRM" in str(info.value)
    assert len(amo.calls) == 1
    assert store.inner.read().refresh_token.get_secret_value() == "ref-SECRET-0"  # untouched
    assert store.inner.acquire_lock(1000) is not None  # lock released on failure


# ---- seeding and empty store -----------------------------------------------------------------
def test_refresh_token_env_seeds_an_empty_store_once(store, clock, amo):
    amo.live.add("seed-SECRET-0")
    provider = make(store, clock, env={**ENV, "AMOCRM_REFRESH_TOKEN": "seed-SECRET-0"})
    assert provider.access_token() == "acc-SECRET-1"
    stored = store.inner.read()
    assert stored.version == 1 and stored.host == HOST
    # A later cold start with the (now spent) seed still in the environment uses the store.
    again = make(store, clock, env={**ENV, "AMOCRM_REFRESH_TOKEN": "seed-SECRET-0"})
    assert again.access_token() == "acc-SECRET-1"
    assert [c["refresh_token"] for c in amo.calls] == ["seed-SECRET-0"]


def test_a_spent_seed_says_so(store, clock, amo):
    provider = make(store, clock, env={**ENV, "AMOCRM_REFRESH_TOKEN": "seed-SECRET-spent"})
    with pytest.raises(ReconnectRequired, match="AMOCRM_REFRESH_TOKEN") as info:
        provider.access_token()
    assert "seed-SECRET-spent" not in str(info.value)
    assert store.inner.read() is None


def test_no_pair_and_no_seed_asks_for_a_reconnect(store, clock, amo):
    provider = make(store, clock)
    with pytest.raises(ReconnectRequired, match=r"/api/oauth/callback.*Connect amoCRM"):
        provider.access_token()
    assert amo.calls == []
    status = provider.status()
    assert status["connected"] is False and status["store"] == "file"


# ---- hosts -----------------------------------------------------------------------------------
def jwt(claims: dict) -> str:
    seg = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{seg}.c2ln"


def test_moved_account_is_discovered_and_remembered(store, clock, amo):
    put(store, amo, expires_in=-10, access=jwt({"api_domain": "api-b.amocrm.ru"}))
    amo.mock.replace(responses.POST, TOKEN_URL, status=404, json={"title": "Not found"})
    amo.mock.get(
        "https://api-b.amocrm.ru/oauth2/account/current/subdomain",
        json={"id": 1, "subdomain": "example", "domain": "example.kommo.com"},
    )
    new_url = "https://example.kommo.com/oauth2/access_token"
    amo.mock.add_callback(responses.POST, new_url, callback=amo, content_type="application/json")
    provider = make(store, clock)
    assert provider.access_token() == "acc-SECRET-1"
    stored = store.inner.read()
    assert (stored.host, stored.moved_from) == ("example.kommo.com", HOST)
    assert provider.account_host() == "example.kommo.com"
    assert make(store, clock).account_host() == "example.kommo.com"  # a cold instance too


def test_tokens_of_another_account_are_not_used(store, clock, amo):
    put(store, amo, expires_in=3600, host="someone-else.amocrm.ru")
    provider = make(store, clock)
    with pytest.raises(ReconnectRequired, match=r"someone-else\.amocrm\.ru"):
        provider.account_host()
    with pytest.raises(ReconnectRequired):
        provider.access_token()


def test_store_exchanged_accepts_only_the_configured_account(store, clock, amo):
    provider = make(store, clock)
    rec = TokenRecord(
        access_token=SecretStr("acc-SECRET-x"),
        refresh_token=SecretStr("r-x"),
        expires_at=T0 + 86400,
        obtained_at=T0,
        host="other.amocrm.ru",
    )
    with pytest.raises(InputError):
        provider.store_exchanged(rec)
    stored = provider.store_exchanged(rec.model_copy(update={"host": HOST}))
    assert stored.version == 1
    assert provider.access_token() == "acc-SECRET-x"
    assert provider.status()["connected"] is True


# ---- keepalive -------------------------------------------------------------------------------
def test_refresh_if_older_than(store, clock, amo):
    put(store, amo, expires_in=86400)
    provider = make(store, clock)
    assert provider.refresh_if_older_than(7 * 86400)["refreshed"] is False
    assert amo.calls == []
    result = provider.refresh_if_older_than(500)  # issued 1000 s ago
    assert result == {"refreshed": True, "expires_at": T0 + 86400, "refreshed_at": T0, "version": 2}
    json.dumps(result)


# ---- store failures and waiting -------------------------------------------------------------
def test_a_refused_write_is_retried_then_offered_as_pending_and_adopted(store, clock, amo):
    """Invariant (e): the store refuses the record write; the pair is kept as a pending pair
    that another instance adopts, without a second refresh."""
    put(store, amo, expires_in=-10)
    provider = make(store, clock)
    store.fail_writes = 3
    assert provider.access_token() == "acc-SECRET-1"
    assert len(amo.calls) == 1 and store.inner.read().version == 1  # the record write failed
    assert "pending" in store.inner.read_state().markers
    other = make(store, clock)  # another instance, cold
    assert other.access_token() == "acc-SECRET-1"  # adopted, not refreshed
    assert len(amo.calls) == 1
    state = store.inner.read_state()
    assert state.version == 2 and state.markers == {}
    assert state.record.refresh_token.get_secret_value() == "ref-SECRET-1"


def test_a_pending_offer_that_could_land_after_the_senders_window_is_not_made(store, clock, amo):
    """The sender window is the last moment a sender may store a pair: a pending offer (up to
    three store commands) is not started when it could land after it."""
    from prometei.tokens import rotation

    put(store, amo, expires_in=-10)
    provider = make(store, clock)
    store.fail_writes = 100

    def slow_answer(body: dict) -> None:
        # amoCRM answers 10 s before the end of the window: too late for a pending offer.
        clock.now += rotation.sender_window_s() - 10

    amo.before_answer = slow_answer
    with pytest.raises(UpstreamUnavailable, match="refused every write"):
        provider.access_token()
    state = store.inner.read_state()
    assert "pending" not in state.markers and state.version == 1
    assert 3 * rotation.store_deadline_s() > 10  # why: the offer could have landed late


def test_the_holders_worst_case_is_inside_the_functions_max_duration():
    """docs/token-rotation.md: the 158.4 s sum of a holder's worst case, from the constants."""
    from prometei.amocrm.oauth import TOKEN_TIMEOUT
    from prometei.http import request_deadline
    from prometei.tokens import lease, rotation

    cmd = lease.store_deadline_s()
    token_req = request_deadline(TOKEN_TIMEOUT)
    marker_put = 4 * cmd  # compare-and-set + read, twice
    total = (
        3 * cmd  # try_acquire: SET NX, its retry, the owner-checked PEXPIRE
        + cmd  # re-read under the lease
        + marker_put  # claim the token
        + 3 * token_req  # refresh, moved lookup, refresh at the moved host
        + cmd
        + 2 * token_req  # after "revoked": re-read, moved lookup and refresh again
        + rotation.PERSIST_WINDOW_S
        + cmd
        + marker_put  # the write started at the window's end, then a pending offer
        + (cmd + 1)
        + lease.RELEASE_ATTEMPTS * cmd
        + sum(lease.RELEASE_PAUSES_S)  # release
    )
    assert total == pytest.approx(158.4)
    root = Path(__file__).resolve().parents[1]
    vercel = json.loads((root / "vercel.json").read_text())
    assert total < vercel["functions"]["api/inngest.py"]["maxDuration"]
    assert "**158.4 s**" in (root / "docs/token-rotation.md").read_text()


def test_a_store_outage_shorter_than_the_persist_window_loses_nothing(store, clock, amo):
    put(store, amo, expires_in=-10)
    provider = make(store, clock)
    store.fail_everything = True
    outage_ends = clock.now + 5

    def sleep(seconds: float) -> None:
        Clock.sleep(clock, seconds)
        if clock.now >= outage_ends:
            store.fail_everything = False

    provider._sleep = sleep
    assert provider.access_token() == "acc-SECRET-1"
    assert store.inner.read().version == 2 and len(amo.calls) == 1


def test_a_store_outage_longer_than_the_window_fails_retryably_then_finally(store, clock, amo):
    """The pair is lost (the documented hazard); others never get a false final answer: until
    the lost holder's window has passed they get retryable errors, then one probe settles it."""
    put(store, amo, expires_in=-10)
    provider = make(store, clock, persist_window_s=3)
    amo.before_answer = lambda body: setattr(store, "fail_everything", True)
    with pytest.raises(UpstreamUnavailable, match="refused every write") as info:
        provider.access_token()
    assert info.value.retryable and len(amo.calls) == 1
    amo.before_answer = None
    store.fail_everything = False
    other = make(store, clock, wait_timeout_s=5)
    with pytest.raises(UpstreamUnavailable, match="may still store") as info:
        other.access_token()  # probes once: "revoked"; the holder's window is still open
    assert info.value.retryable and len(amo.calls) == 2
    clock.now += 120  # every window is over
    with pytest.raises(ReconnectRequired):
        other.access_token()
    assert len(amo.calls) == 2  # the refusal is shared: nothing sent again


def test_a_loser_waits_for_the_winner_instead_of_refreshing(store, clock, amo):
    put(store, amo, expires_in=-10)
    assert store.inner.acquire_lock(30_000) is not None  # another instance is refreshing
    provider = make(store, clock, poll_interval_s=0.5)

    def winner_finishes(seconds: float) -> None:
        Clock.sleep(clock, seconds)
        if len(clock.sleeps) == 3:
            put(
                store,
                amo,
                expires_in=86400,
                now=int(clock.now),
                access="acc-SECRET-winner",
                refresh="ref-SECRET-winner",
            )

    provider._sleep = winner_finishes
    assert provider.access_token() == "acc-SECRET-winner"
    assert clock.sleeps == [0.5, 0.5, 0.5]
    assert amo.calls == []


def test_a_loser_gives_up_after_the_wait_timeout(store, clock, amo):
    put(store, amo, expires_in=-10)
    store.inner.acquire_lock(600_000)
    provider = make(store, clock, wait_timeout_s=5, poll_interval_s=1)
    with pytest.raises(UpstreamUnavailable) as info:
        provider.access_token()
    assert info.value.retryable and amo.calls == []
    assert sum(clock.sleeps) == pytest.approx(5)


# ---- secrets ---------------------------------------------------------------------------------
def test_no_secret_reaches_logs_output_errors_or_status(store, clock, amo, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    put(store, amo, expires_in=-10)
    provider = make(store, clock, persist_window_s=2)
    messages = []
    provider.access_token()  # refresh
    provider.after_unauthorized("acc-SECRET-1")  # second refresh
    clock.now += 86400
    amo.before_answer = lambda body: setattr(store, "fail_everything", True)
    try:
        provider.access_token()  # third refresh, lost to a store outage
    except UpstreamUnavailable as exc:
        messages.append(str(exc))
    amo.before_answer = None
    store.fail_everything = False
    clock.now += 86400
    try:
        provider.access_token()  # the probe: "revoked", final
    except ReconnectRequired as exc:
        messages.append(str(exc))
    status = provider.status()
    out = capsys.readouterr()

    secrets = {SECRET, "ref-SECRET-0", "acc-SECRET-0"}
    for n in range(1, amo.n + 1):
        secrets |= {f"acc-SECRET-{n}", f"ref-SECRET-{n}"}
    assert amo.n == 3 and len(messages) == 2
    haystack = "\n".join(
        [
            caplog.text,
            out.out,
            out.err,
            *messages,
            json.dumps(status),
            repr(provider),
            repr(store.inner.read()),
        ]
    )
    assert "refreshed" in caplog.text  # the logs do talk about the refresh
    leaked = [s for s in secrets if s in haystack]
    assert leaked == []


# ---- the lease, late writers and lost races (review fixes) ----------------------------------
def test_the_lease_table_is_a_bound(store, clock):
    """docs/token-rotation.md: a renewal sent on time lands before the lease ends; a lost holder
    (crash, failed release) costs at most one lease; a sender's window covers every request it
    can still make before its last write."""
    from prometei.amocrm.oauth import TOKEN_TIMEOUT
    from prometei.http import request_deadline
    from prometei.store.kv import TOKEN_STORE_TIMEOUT
    from prometei.tokens import lease, rotation

    store_cmd = request_deadline(TOKEN_STORE_TIMEOUT)
    token_req = request_deadline(TOKEN_TIMEOUT)
    ttl_s = lease.LEASE_TTL_MS / 1000
    assert (store_cmd, token_req) == (4.0, 13.0)
    assert ttl_s / lease.RENEWALS_PER_LEASE + store_cmd < ttl_s
    assert ttl_s + lease.POLL_INTERVAL_S < 10  # recovery target after a lost holder
    assert rotation.sender_window_s() == 3 * token_req + 2 * store_cmd + rotation.PERSIST_WINDOW_S
    provider = make(store, clock)
    assert provider.lock_ttl_ms == lease.LEASE_TTL_MS
    assert provider.wait_timeout_s == lease.WAIT_LIMIT_S


def test_a_late_writer_whose_lease_ran_out_does_not_overwrite_a_newer_pair(store, clock, amo):
    put(store, amo, expires_in=-10)
    provider = make(store, clock)

    def lease_runs_out_and_someone_stores_a_newer_pair(body: dict) -> None:
        clock.now += provider.lock_ttl_ms / 1000 + 1  # amoCRM was slow: the lease is over
        assert store.inner.acquire_lock(60_000) is not None  # another instance takes it
        put(
            store,
            amo,
            expires_in=86400,
            now=int(clock.now),
            access="acc-SECRET-newer",
            refresh="ref-SECRET-newer",
        )
        amo.before_answer = None

    amo.before_answer = lease_runs_out_and_someone_stores_a_newer_pair
    assert provider.access_token() == "acc-SECRET-newer"  # the newer pair wins
    stored = store.inner.read()
    assert stored.refresh_token.get_secret_value() == "ref-SECRET-newer"
    assert stored.version == 2  # the late write changed nothing
    assert len(amo.calls) == 1


def test_a_refusal_after_a_takeover_is_final_only_after_the_first_senders_window(store, clock, amo):
    """Invariant (a): an instance whose lease ran out sent the token and may still store its
    pair; the one that took over gets "revoked" and must not call that final yet."""
    record = put(store, amo, expires_in=-10)
    amo.live.clear()  # the first sender spent it
    first = RotationMark(record.version, "someone-else", SENT, int((clock.now + 60) * 1000))
    assert store.inner.put_marker("rotation", first.to_json(), version=1, expect=None)
    provider = make(store, clock, wait_timeout_s=5)
    with pytest.raises(UpstreamUnavailable, match="may still store") as info:
        provider.access_token()
    assert info.value.retryable and len(amo.calls) == 1
    put(
        store,
        amo,
        expires_in=86400,
        now=int(clock.now),
        access="acc-SECRET-late",
        refresh="ref-SECRET-late",
    )  # the first sender stores its pair after all
    assert provider.access_token() == "acc-SECRET-late" and len(amo.calls) == 1


def test_a_refusal_is_shared_so_the_token_is_sent_once(store, clock, amo):
    """Invariant (b): every instance reads the stored refusal instead of rediscovering it."""
    put(store, amo, expires_in=-10)
    amo.live.clear()
    for _ in range(3):
        with pytest.raises(ReconnectRequired):
            make(store, clock).access_token()
    assert len(amo.calls) == 1
    assert make(store, clock).status()["problem"].startswith("amoCRM refused")


def test_a_token_being_sent_by_a_live_holder_is_never_sent_again(store, clock, amo):
    put(store, amo, expires_in=-10)
    other = store.inner.acquire_lock(60_000)
    mark = RotationMark(1, other, SENT, int((clock.now + 60) * 1000))
    assert store.inner.put_marker("rotation", mark.to_json(), version=1, expect=None)
    provider = make(store, clock, wait_timeout_s=2)
    with pytest.raises(UpstreamUnavailable, match="holds the refresh lock"):
        provider.access_token()
    assert amo.calls == []


def test_a_request_that_never_reached_amocrm_leaves_the_token_to_the_next_holder(store, clock, amo):
    from prometei.http import NotDelivered

    put(store, amo, expires_in=-10)
    amo.mock.replace(
        responses.POST,
        TOKEN_URL,
        body=requests.ConnectionError(ConnectionRefusedError(111, "Connection refused")),
    )
    provider = make(store, clock)
    with pytest.raises(NotDelivered, match="refused") as info:
        provider.access_token()
    assert info.value.retryable
    assert store.inner.read_state().markers == {}  # nobody sent it: no marker left behind
    amo.mock.remove(responses.POST, TOKEN_URL)
    amo.mock.add_callback(responses.POST, TOKEN_URL, callback=amo, content_type="application/json")
    assert provider.access_token() == "acc-SECRET-1"


def test_a_lost_answer_lets_the_next_holder_probe_once(store, clock, amo):
    put(store, amo, expires_in=-10)

    def spend_then_time_out(request):
        amo(request)  # amoCRM rotated, the answer never arrives
        raise requests.ReadTimeout("no answer")

    amo.mock.replace(responses.POST, TOKEN_URL, body=None)
    amo.mock.remove(responses.POST, TOKEN_URL)
    amo.mock.add_callback(responses.POST, TOKEN_URL, callback=spend_then_time_out)
    provider = make(store, clock)
    with pytest.raises(UpstreamUnavailable, match="read timeout"):
        provider.access_token()
    assert RotationMark.parse(store.inner.read_state().markers["rotation"]).state == "lost"
    amo.mock.remove(responses.POST, TOKEN_URL)
    amo.mock.add_callback(responses.POST, TOKEN_URL, callback=amo, content_type="application/json")
    with pytest.raises(ReconnectRequired):
        make(store, clock).access_token()  # the probe: revoked, and nobody can still write
    assert len(amo.calls) == 2


def test_threads_of_one_instance_wait_no_longer_than_the_limit(store, clock, amo):
    """Invariant (d): a thread queued behind another thread of the same instance gives up with
    the same limit as any waiter."""
    put(store, amo, expires_in=-10)
    provider = make(store, clock, wait_timeout_s=0.2)
    inside = provider._gate.enter(Deadline(clock, 1))  # another thread is inside, for good
    with inside, pytest.raises(UpstreamUnavailable, match="this instance") as info:
        provider.access_token()
    assert info.value.retryable and amo.calls == []


def test_a_move_to_another_subdomain_is_refused_without_sending_the_tokens(store, clock, amo):
    put(store, amo, expires_in=-10, access=jwt({"api_domain": "api-b.amocrm.ru"}))
    amo.mock.replace(responses.POST, TOKEN_URL, status=404, json={"title": "Not found"})
    amo.mock.get(
        "https://api-b.amocrm.ru/oauth2/account/current/subdomain",
        json={"id": 1, "subdomain": "renamed", "domain": "renamed.kommo.com"},
    )
    elsewhere = amo.mock.post("https://renamed.kommo.com/oauth2/access_token", json={})
    provider = make(store, clock)
    with pytest.raises(ReconnectRequired) as info:
        provider.access_token()
    message = str(info.value)
    assert "renamed.kommo.com" in message and "AMOCRM_SUBDOMAIN" in message
    assert "different subdomain" in message
    assert elsewhere.call_count == 0  # neither the refresh token nor the secret went there
    assert store.inner.read().refresh_token.get_secret_value() == "ref-SECRET-0"


def test_a_stored_pair_moved_to_another_subdomain_is_not_used(store, clock, amo):
    put(store, amo, expires_in=3600, host="renamed.kommo.com", moved_from=HOST)
    provider = make(store, clock)
    with pytest.raises(ReconnectRequired, match=r"renamed\.kommo\.com"):
        provider.account_host()
