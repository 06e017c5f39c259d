"""What a token store holds and what every store can do.

`TokenRecord` is the one amoCRM OAuth pair this deployment uses, plus the facts needed to
decide when to refresh it. `TokenStore` is the interface shared by the Vercel KV store
(`prometei.store.kv`) and the local file store (`prometei.store.file`); `prometei.tokens` is
the only code that should talk to a store directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from prometei.errors import PrometeiError

# `put_marker(expect=ANY)`: set the marker whatever its current value is.
ANY = "*"


class TokenRecord(BaseModel):
    """One access/refresh pair and its metadata. Times are unix seconds.

    The tokens are `SecretStr`, so `repr()`, `str()` and `model_dump()` never show them; use
    `to_storage()` / `from_storage()` to move a record in and out of a store.
    `version` is assigned by the store: it grows by one on every write.
    `moved_from` is set when amoCRM reported that the account now lives at `host` (reference
    amocrm.md §2.7) while the deployment is still configured for the old host.
    """

    model_config = ConfigDict(frozen=True)

    access_token: SecretStr
    refresh_token: SecretStr
    expires_at: int
    obtained_at: int
    refreshed_at: int | None = None
    host: str
    version: Annotated[int, Field(ge=0)] = 0
    moved_from: str | None = None

    def expires_within(self, seconds: float, now: float) -> bool:
        """True when the access token is expired or expires within `seconds` from `now`."""
        return self.expires_at - now <= seconds

    def last_rotated_at(self) -> int:
        """When this pair was last issued (a refresh, or the first code exchange)."""
        return self.refreshed_at if self.refreshed_at is not None else self.obtained_at

    def to_storage(self) -> str:
        """The JSON a store persists. Contains the secrets: never log it."""
        data: dict[str, Any] = self.model_dump(exclude={"version"})
        data["access_token"] = self.access_token.get_secret_value()
        data["refresh_token"] = self.refresh_token.get_secret_value()
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_storage(cls, raw: str | bytes, version: int) -> TokenRecord:
        """Parse what `to_storage()` wrote; `version` comes from the store."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            data["version"] = version
            return cls.model_validate(data)
        except (ValueError, ValidationError) as exc:
            # The message of a ValidationError can quote input values: keep only its type.
            raise StoreCorrupt(
                f"the stored token record is unreadable ({type(exc).__name__}); "
                "reconnect amoCRM via /api/oauth/callback to write a fresh one"
            ) from None

    def public_view(self) -> dict[str, Any]:
        """Metadata safe to show on a page, in a log line or in a step output."""
        return {
            "expires_at": self.expires_at,
            "obtained_at": self.obtained_at,
            "refreshed_at": self.refreshed_at,
            "host": self.host,
            "version": self.version,
            "moved_from": self.moved_from,
        }


# The side fields kept next to the pair (prometei.tokens.rotation gives them meaning). Each
# refers to one stored version and is dropped by every write of a new pair.
MARKERS = ("pending", "rotation", "refused")


@dataclass(frozen=True)
class TokenState:
    """Everything a refresher needs to decide, read in one round-trip: the pair (None when
    nothing is stored), its version (0 when nothing was ever written) and the raw marker
    strings (`MARKERS`) that are present."""

    record: TokenRecord | None
    version: int
    markers: Mapping[str, str]


@runtime_checkable
class TokenStore(Protocol):
    """Where the one OAuth pair lives, shared by every instance that can see the store.

    `acquire_lock`/`renew_lock`/`release_lock` are a lease lock with an owner token (Redis
    `SET NX PX`, owner-checked `PEXPIRE` and compare-and-delete semantics): `acquire_lock`
    returns the owner token (`owner`, or a new random one) or None when the lock is taken;
    `renew_lock`/`release_lock` act only if `owner` still holds it (so `renew_lock` also tells
    whether an acquire whose answer was lost did land).
    A lease can run out under a slow holder, so the lock alone does not protect the record: a
    refresher writes with `write_if_version`, so a late writer never overwrites a newer pair,
    and coordinates through version-fenced markers (`put_marker`).
    """

    kind: str

    def describe(self) -> str:
        """Where the tokens are kept, for status pages (no secrets)."""
        ...

    def read(self) -> TokenRecord | None: ...

    def read_state(self) -> TokenState:
        """The pair, its version and the markers, atomically."""
        ...

    def write(self, record: TokenRecord) -> TokenRecord:
        """Persist `record` unconditionally (its `version` is ignored) and drop the markers;
        returns it with the new version. Only for a pair nobody else can have superseded (a
        fresh code exchange)."""
        ...

    def write_if_version(self, record: TokenRecord, expected_version: int) -> TokenRecord | None:
        """Compare-version write (fencing): persist `record` only if the stored version still
        equals `expected_version` (0: nothing stored yet), atomically, and drop the markers.
        Returns the record with its new version, or None when someone else wrote meanwhile
        (nothing was changed)."""
        ...

    def put_marker(
        self, name: str, value: str | None, *, version: int, expect: str | None = ANY
    ) -> bool:
        """Set marker `name` to `value` (None deletes it), only if the stored version is still
        `version` and the marker's current value is `expect` (None: absent; `ANY`: whatever it
        is), atomically. True when it was set."""
        ...

    def acquire_lock(self, ttl_ms: int, owner: str | None = None) -> str | None: ...

    def renew_lock(self, owner: str, ttl_ms: int) -> bool: ...

    def release_lock(self, owner: str) -> bool: ...


@runtime_checkable
class StateStore(Protocol):
    """Small shared values that live beside the tokens: cursors, lead -> ERP record ids,
    single-use nonces. Same place as the token store (KV, or the local state folder).

    Keys are short names (letters, digits, `:._-`), values are strings (JSON by convention).
    `ttl_s` makes a value expire; None keeps it. `put_if_absent` is atomic across instances
    (Redis `SET NX`), and so is `delete`: exactly one caller gets True for a key that existed,
    which makes `put_if_absent` + `delete` a single-use token.
    """

    kind: str

    def describe(self) -> str: ...

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, *, ttl_s: int | None = None) -> None: ...

    def put_if_absent(self, key: str, value: str, *, ttl_s: int | None = None) -> bool: ...

    def delete(self, key: str) -> bool: ...


def check_marker(name: str, value: str | None, expect: str | None) -> None:
    """ValueError for a marker name or value the stores cannot hold (a programming error)."""
    if name not in MARKERS:
        raise ValueError(f"unknown token-store marker {name!r}")
    if value is not None and value in ("", ANY):
        raise ValueError("a marker value must be a non-empty string other than ANY")
    if expect == "":
        raise ValueError("expect an absent marker with None, not an empty string")


STATE_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,199}$")


def check_state_key(key: str) -> str:
    """`key` unchanged, or ValueError when it is not a short plain name (a programming error)."""
    if not STATE_KEY_RE.match(key):
        raise ValueError(f"state key {key[:40]!r} must be 1-200 of letters, digits and ':._-'")
    return key


def check_ttl(ttl_s: int | None) -> int | None:
    if ttl_s is not None and ttl_s <= 0:
        raise ValueError("ttl_s must be a positive number of seconds, or None")
    return ttl_s


class StoreCorrupt(PrometeiError):
    """The store holds something that is not a token record; the message says where."""


def store_summary(status: Mapping[str, Any]) -> str:
    """`kind: description` of the token store in a `status()` dict, for pages and the CLI."""
    parts = [str(p) for p in (status.get("store"), status.get("store_description")) if p]
    return ": ".join(parts) if parts else "—"
