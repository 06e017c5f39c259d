"""Rotation policy: when to refresh, what a refusal means, how a new pair is kept and adopted.

`Rotation.assess(store, state, stale)` reads one snapshot of the store and says what to do:
use the stored pair, adopt a pending one, wait, refresh, or fail (`ReconnectRequired` only
when the stored refresh token is known dead and nobody can still store a newer pair).
`Rotation.rotate(store, stale, holding)` is the refresh itself, called with the refresh lease
held (`prometei.tokens.lease`). The invariants it keeps are listed at the top of
docs/token-rotation.md; in short:

- a stored refresh token is sent by the one owner that set the `rotation` marker for its
  version (a compare-and-set fenced by the version): never two at once, and never again after
  amoCRM refused it, because the refusal is stored (`refused`) and read by everyone;
- a new pair is written with a compare-version write, retried for PERSIST_WINDOW_S, then also
  offered as a `pending` pair any instance adopts, before the holder gives up;
- a refusal becomes final (non-retriable) only after every earlier sender's write window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometei.amocrm.domains import is_account_host, is_configured_account, split_account_host
from prometei.amocrm.oauth import TOKEN_TIMEOUT, AccountMaybeMoved, OAuthClient, RefreshTokenRevoked
from prometei.config import Settings
from prometei.errors import (
    InputError,
    PrometeiError,
    ReconnectRequired,
    UpstreamError,
    UpstreamUnavailable,
)
from prometei.http import NotDelivered, request_deadline
from prometei.store.base import ANY, TokenRecord, TokenState, TokenStore
from prometei.tokens.lease import Holding, store_deadline_s
from prometei.tokens.markers import LOST, SENT, PendingPair, Refusal, RotationMark, same_token
from prometei.tokens.sources import RECONNECT, SERVICE

log = logging.getLogger("prometei.tokens")

# How long a holder keeps trying to store a pair amoCRM issued (the old refresh token is dead
# by then, so this pair is the connection): record writes with growing pauses, and a pending
# pair from the second failure on. Longer store outages lose the pair (docs: the hazard).
PERSIST_WINDOW_S = 20.0
# Clock skew allowed between instances when one waits out another's write window.
SKEW_S = 2.0
# Store commands before a pending offer's last write lands: set, read back, set again.
PENDING_OFFER_COMMANDS = 3


def sender_window_s(persist_window_s: float = PERSIST_WINDOW_S) -> float:
    """How long after setting its `rotation` marker a sender may still store a pair: the
    refresh, the moved-account lookup and the refresh at the moved host (each one token request
    deadline), the re-read after a refusal and the refusal marker (two store commands), and the
    persist window."""
    return 3 * request_deadline(TOKEN_TIMEOUT) + 2 * store_deadline_s() + persist_window_s


@dataclass(frozen=True)
class Use:
    """Use this pair. `ours`: this call rotated it."""

    record: TokenRecord
    ours: bool = False


@dataclass(frozen=True)
class Wait:
    """Nothing to do now; poll again. `reason` ends up in the give-up error."""

    reason: str


@dataclass(frozen=True)
class Refresh:
    """The pair needs a refresh: take the lease and call `rotate`."""


Step = Use | Wait | Refresh
Stale = Callable[[TokenRecord | None], bool]


class Rotation:
    """The policy half of the OAuth provider (the other half is the lease)."""

    def __init__(
        self,
        settings: Settings,
        oauth: OAuthClient,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        persist_window_s: float = PERSIST_WINDOW_S,
    ) -> None:
        self._settings = settings
        self._oauth = oauth
        self._clock = clock
        self._sleep = sleep
        self.persist_window_s = persist_window_s

    # ---- reading a snapshot ------------------------------------------------------------------
    def assess(self, store: TokenStore, state: TokenState, stale: Stale) -> Step:
        record = state.record
        if record is not None and not stale(record):
            return Use(record)
        pending = PendingPair.parse(state.markers.get("pending"))
        if pending is not None and pending.replaces == state.version:
            adopted = self._adopt(store, pending)
            if adopted is not None:
                return Use(adopted)
            return Wait("another instance is adopting a pending pair")
        refusal = Refusal.parse(state.markers.get("refused"))
        if refusal is not None and refusal.version == state.version:
            if self._now_ms() >= refusal.final_at_ms:
                raise self._refused_error(refusal.seed)
            return Wait(
                "amoCRM refused the stored refresh token; the instance that sent it before may "
                f"still store its new pair until {_iso(refusal.final_at_ms)}"
            )
        if record is None and self._settings.amocrm_refresh_token is None:
            raise ReconnectRequired(
                f"amoCRM is not connected: the token store ({store.describe()}) holds no "
                f"tokens; {RECONNECT}"
            )
        return Refresh()

    # ---- the refresh, under the lease --------------------------------------------------------
    def rotate(self, store: TokenStore, stale: Stale, holding: Holding) -> Step:
        state = store.read_state()  # re-read under the lease: the previous holder may be done
        step = self.assess(store, state, stale)
        if not isinstance(step, Refresh):
            return step
        version = state.version
        prior_raw = state.markers.get("rotation")
        prior = RotationMark.parse(prior_raw)
        prior_until = prior.until_ms if prior and prior.may_still_write(version) else None
        if prior_until is not None:
            # Its owner's lease ran out (we hold it now): dead, or cut off from the store.
            log.warning("taking over a refresh whose instance stopped renewing its lease")
        window_ms = int(sender_window_s(self.persist_window_s) * 1000)
        mark = RotationMark(version, holding.owner, SENT, self._now_ms() + window_ms)
        if not self._put(store, "rotation", mark.to_json(), version, prior_raw):
            return Wait("another instance started the same refresh")
        try:
            new = self._send(state.record)
        except RefreshTokenRevoked:
            return self._after_refusal(store, state, mark, prior_until)
        except PrometeiError as exc:
            if _maybe_spent(exc):  # sent, but no usable answer: nobody will know the outcome
                lost = _lost(mark, self._now_ms())  # and we have nothing left to write
                self._put(store, "rotation", lost.to_json(), version, ANY, quiet=True)
            else:  # never delivered, or amoCRM answered with an error: the token is unspent
                self._forget(store, mark, version)
            raise
        stored, ours = self._persist(store, new, version, mark)
        if ours:
            log.info(
                "amoCRM token pair refreshed (version %s, expires at %s)",
                stored.version,
                stored.expires_at,
            )
        return Use(stored, ours)

    def _send(self, record: TokenRecord | None) -> TokenRecord:
        """One refresh request (or, for an account that moved, the lookup and the refresh at
        its new host); the new pair carries the old one's history."""
        if record is None:
            log.info("token store is empty: seeding it once from AMOCRM_REFRESH_TOKEN")
            seed = self._settings.amocrm_refresh_token
            assert seed is not None  # assess() checked
            return self._oauth.refresh(seed, self._settings.amocrm_host)
        try:
            new = self._oauth.refresh(record.refresh_token, self.host_of(record))
        except AccountMaybeMoved:
            moved = self._refresh_at_moved_host(record)
            if moved is None:
                raise
            return moved
        return new.model_copy(
            update={"obtained_at": record.obtained_at, "moved_from": record.moved_from}
        )

    def _after_refusal(
        self, store: TokenStore, state: TokenState, mark: RotationMark, prior_until: int | None
    ) -> Step:
        """amoCRM answered "Token has been revoked" to the token we sent."""
        log.warning("amoCRM refused the stored refresh token as spent; re-reading the store")
        again = store.read_state()
        if again.version != state.version:
            return Wait("a newer pair was stored meanwhile")
        current = RotationMark.parse(again.markers.get("rotation"))
        if current is None or current.owner != mark.owner:
            # Our lease ran out and another instance took this refresh over: its outcome wins.
            return Wait("another instance took over this refresh")
        if state.record is not None:
            try:
                moved = self._refresh_at_moved_host(state.record)
            except RefreshTokenRevoked:
                moved = None
            if moved is not None:
                stored, _ = self._persist(store, moved, state.version, mark)
                return Use(stored, True)
        now = self._now_ms()
        # An earlier sender of the same token (whose lease ran out) may still store its pair
        # until the end of its window: the refusal is final only after that.
        final_at = now if prior_until is None else max(now, prior_until + int(SKEW_S * 1000))
        refusal = Refusal(state.version, final_at, seed=state.record is None)
        if not self._put(store, "refused", refusal.to_json(), state.version, ANY, quiet=True):
            log.warning("could not record the refusal in the token store")
        if final_at <= now:
            raise self._refused_error(refusal.seed)
        return Wait(
            "amoCRM refused the stored refresh token; the instance that sent it before may "
            f"still store its new pair until {_iso(final_at)}"
        )

    def _persist(
        self, store: TokenStore, new: TokenRecord, replaces: int, mark: RotationMark
    ) -> tuple[TokenRecord, bool]:
        """Store the pair amoCRM just issued, before anyone uses it. Returns (pair now stored,
        True when it is ours); a newer pair stored meanwhile (a reconnect) wins."""
        started = self._clock()
        # Never start a write that could land after our window: others may then act on it.
        stop_at = min(started + self.persist_window_s, mark.until_ms / 1000 - store_deadline_s())
        expected, pause, attempt, offered = replaces, 0.05, 0, False
        while True:
            attempt += 1
            try:
                stored = store.write_if_version(new, expected)
            except PrometeiError as exc:
                log.error(
                    "could not save the rotated amoCRM pair (attempt %d): %s", attempt, exc.message
                )
                if attempt >= 2 and not offered and self._pending_lands_in_time(mark):
                    offered = self._put(
                        store,
                        "pending",
                        PendingPair(expected, new).to_json(),
                        expected,
                        ANY,
                        quiet=True,
                    )
                    if offered:
                        log.warning(
                            "the rotated pair is stored as pending; the next reader adopts it"
                        )
                        return new.model_copy(update={"version": expected}), True
            else:
                if stored is not None:
                    return stored, True
                found = self._read_quietly(store)
                if found is not None and found.record is not None:
                    if same_token(found.record.refresh_token, new.refresh_token):
                        return found.record, True  # an earlier attempt landed, its answer lost
                    log.warning(
                        "a newer amoCRM token pair (version %s) was stored meanwhile; using "
                        "it, discarding ours",
                        found.version,
                    )
                    return found.record, False
                if found is not None:
                    expected = found.version  # the record vanished: ours is the live pair
            if self._clock() + pause >= stop_at:
                break
            self._sleep(pause)
            pause = min(pause * 2, 1.0)
        log.error(
            "amoCRM issued a new token pair, but the token store did not take it within "
            "%gs; the pair is lost (see docs/token-rotation.md)",
            self._clock() - started,
        )
        raise UpstreamUnavailable(
            SERVICE,
            "amoCRM issued a new token pair but the token store refused every write for "
            f"{self.persist_window_s:g}s; the pair could not be kept (see "
            "docs/token-rotation.md, 'Store write failed')",
        )

    def _pending_lands_in_time(self, mark: RotationMark) -> bool:
        """Whether a pending offer (`_put`: compare-and-set, read, compare-and-set again) lands
        before our `until`: after it, others may already treat the refusal as final."""
        return self._clock() + PENDING_OFFER_COMMANDS * store_deadline_s() <= mark.until_ms / 1000

    def _adopt(self, store: TokenStore, pending: PendingPair) -> TokenRecord | None:
        try:
            stored = store.write_if_version(pending.record, pending.replaces)
        except PrometeiError as exc:
            log.warning("could not adopt the pending amoCRM pair: %s", exc.message)
            return None
        if stored is not None:
            log.info("adopted the pending amoCRM pair (version %s)", stored.version)
        return stored

    # ---- markers -----------------------------------------------------------------------------
    def _put(
        self,
        store: TokenStore,
        name: str,
        value: str | None,
        version: int,
        expect: str | None,
        *,
        quiet: bool = False,
    ) -> bool:
        """Compare-and-set a marker; an attempt whose answer was lost counts if it landed.
        Store errors propagate unless `quiet` (then: False)."""
        for attempt in (1, 2):
            try:
                if store.put_marker(name, value, version=version, expect=expect):
                    return True
            except PrometeiError:
                if attempt == 2 and not quiet:
                    raise
            found = self._read_quietly(store)
            if found is not None and found.version == version and found.markers.get(name) == value:
                return True
            if found is not None:
                return False
        return False

    def _forget(self, store: TokenStore, mark: RotationMark, version: int) -> None:
        """Our token was not spent: drop our `rotation` marker so the next holder may send it."""
        self._put(store, "rotation", None, version, mark.to_json(), quiet=True)

    @staticmethod
    def _read_quietly(store: TokenStore) -> TokenState | None:
        try:
            return store.read_state()
        except PrometeiError:
            return None

    # ---- hosts and accounts ------------------------------------------------------------------
    def _refresh_at_moved_host(self, record: TokenRecord) -> TokenRecord | None:
        new_host = self._oauth.discover_moved_host(record.access_token, record.refresh_token)
        if new_host is None or new_host == record.host or not is_account_host(new_host):
            return None
        if not self.same_subdomain(new_host):
            # The API client only ever calls <AMOCRM_SUBDOMAIN>.<known domain>: refreshing there
            # would spend the pair on a host nothing can use. Leave the tokens where they are.
            raise ReconnectRequired(
                f"amoCRM reports that the account {record.host} moved to {new_host}, a "
                f"different subdomain; this deployment only serves "
                f"'{self._settings.require_subdomain()}' (AMOCRM_SUBDOMAIN), so the tokens were "
                "not sent there. If the account really moved to another subdomain, update "
                f"AMOCRM_SUBDOMAIN (and AMOCRM_BASE_DOMAIN), redeploy, then {RECONNECT}"
            )
        log.warning(
            "amoCRM reports the account moved from %s to %s; update AMOCRM_BASE_DOMAIN",
            record.host,
            new_host,
        )
        new = self._oauth.refresh(record.refresh_token, new_host)
        configured = self._settings.amocrm_host
        return new.model_copy(
            update={
                "obtained_at": record.obtained_at,
                "moved_from": None if new_host == configured else configured,
            }
        )

    def same_subdomain(self, host: str) -> bool:
        """`host` is the configured account on any known domain (amocrm.ru/.com, kommo.com)."""
        parts = split_account_host(host)
        return parts is not None and parts[0] == self._settings.require_subdomain()

    def host_of(self, record: TokenRecord) -> str:
        configured = self._settings.amocrm_host
        if record.host == configured:
            return configured
        if record.moved_from == configured and self.same_subdomain(record.host):
            return record.host
        raise ReconnectRequired(
            f"the stored amoCRM tokens belong to {record.host}, but this deployment serves "
            f"{configured} (AMOCRM_SUBDOMAIN / AMOCRM_BASE_DOMAIN); {RECONNECT}"
        )

    def check_exchanged(self, record: TokenRecord) -> None:
        subdomain = self._settings.require_subdomain()
        if not is_configured_account(record.host, subdomain, self._settings.amocrm_base_domain):
            raise InputError(
                f"tokens for {record.host} do not belong to the configured account "
                f"{self._settings.amocrm_host}; check AMOCRM_SUBDOMAIN and AMOCRM_BASE_DOMAIN"
            )

    def _refused_error(self, seed: bool) -> ReconnectRequired:
        if seed:
            return ReconnectRequired(
                "AMOCRM_REFRESH_TOKEN was refused as already used or revoked (refresh tokens "
                f"are single-use); remove it and {RECONNECT}"
            )
        return ReconnectRequired(
            "amoCRM refused the stored refresh token as already used or revoked, and no "
            f"instance holds a newer pair; the connection must be renewed: {RECONNECT}"
        )

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _maybe_spent(exc: PrometeiError) -> bool:
    """The request may have reached amoCRM's token logic and rotated: no answer at all (read
    timeout, deadline, connection dropped) or a 200 we could not read."""
    if isinstance(exc, NotDelivered) or not isinstance(exc, UpstreamError):
        return False
    return exc.status is None or exc.status == 200


def _lost(mark: RotationMark, now_ms: int) -> RotationMark:
    return RotationMark(mark.version, mark.owner, LOST, now_ms)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S UTC")
