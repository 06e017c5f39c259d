"""The three markers a rotation leaves next to the stored pair, as small JSON values.

Each names the stored version it is about; a write of a new pair drops them all (the stores
do that atomically), so a marker about an older version never survives. What they mean:

- `rotation` (`RotationMark`): "owner O sent the refresh token of version V to amoCRM"; state
  `sent` while O may still store the answer (until `until_ms`), `lost` when O got no answer.
  Only the owner that set it (compare-and-set, fenced by the version) may send that token.
- `refused` (`Refusal`): amoCRM refused the refresh token of version V. Once `final_at_ms` has
  passed, everyone gets `ReconnectRequired` without sending anything.
- `pending` (`PendingPair`): a rotated pair that could not be written as the record; any
  instance adopts it with a compare-version write.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from prometei.store.base import StoreCorrupt, TokenRecord

log = logging.getLogger("prometei.tokens")

SENT = "sent"
LOST = "lost"


def _load(raw: str | None, name: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        log.warning("ignoring an unreadable %s marker in the token store", name)
        return None
    return data


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class RotationMark:
    version: int
    owner: str
    state: str
    until_ms: int

    def to_json(self) -> str:
        return _dump(
            {"v": self.version, "owner": self.owner, "state": self.state, "until": self.until_ms}
        )

    @classmethod
    def parse(cls, raw: str | None) -> RotationMark | None:
        data = _load(raw, "rotation")
        try:
            return (
                None
                if data is None
                else cls(int(data["v"]), str(data["owner"]), str(data["state"]), int(data["until"]))
            )
        except (KeyError, TypeError, ValueError):
            return None

    def may_still_write(self, version: int) -> bool:
        """True when this mark says another sender of `version`'s token may store a pair."""
        return self.version == version and self.state == SENT


@dataclass(frozen=True)
class Refusal:
    version: int
    final_at_ms: int
    seed: bool = False

    def to_json(self) -> str:
        return _dump({"v": self.version, "final_at": self.final_at_ms, "seed": self.seed})

    @classmethod
    def parse(cls, raw: str | None) -> Refusal | None:
        data = _load(raw, "refused")
        try:
            return (
                None
                if data is None
                else cls(int(data["v"]), int(data["final_at"]), bool(data.get("seed", False)))
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class PendingPair:
    replaces: int
    record: TokenRecord

    def to_json(self) -> str:
        """Contains the tokens: only ever handed to the store."""
        return _dump({"replaces": self.replaces, "record": self.record.to_storage()})

    @classmethod
    def parse(cls, raw: str | None) -> PendingPair | None:
        data = _load(raw, "pending")
        try:
            if data is None:
                return None
            replaces = int(data["replaces"])
            return cls(replaces, TokenRecord.from_storage(str(data["record"]), replaces))
        except (KeyError, TypeError, ValueError, StoreCorrupt):
            return None


def same_token(a: SecretStr, b: SecretStr) -> bool:
    return a.get_secret_value() == b.get_secret_value()
