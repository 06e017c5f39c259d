"""The local token store: a JSON file under PROMETEI_STATE_DIR (the embedded default).

Use it for local development and single-machine deployments; on Vercel the filesystem is
neither shared between instances nor persistent, so `build_store` refuses it there.

Files in the directory (created with mode 0700):
- `amocrm-tokens.json`: the record plus its version, replaced atomically (temp file in the same
  directory, fsync, `os.replace`), mode 0600. A reader sees the old or the new file, never half.
- `amocrm-refresh-lease.json`: the refresh lock's current owner token and lease expiry.
- `amocrm-token-markers.json`: the rotation markers (`pending`, `rotation`, `refused`) that
  refer to the stored version; removed by every write of a new pair.
- `state.json`: the `StateStore` values (cursors, lead -> record ids, nonces) with their expiry.
- `.guard`: an `fcntl.flock` mutex held only for the few milliseconds it takes to check and
  change the two files above, so version bumps, compare-version writes and lease take-overs
  are atomic across processes. The refresh lock itself is the lease, not the flock: a holder
  that crashes loses it when the lease runs out, exactly like the KV lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometei.store.base import (
    ANY,
    MARKERS,
    StoreCorrupt,
    TokenRecord,
    TokenState,
    check_marker,
    check_state_key,
    check_ttl,
)

TOKENS_FILE = "amocrm-tokens.json"
LEASE_FILE = "amocrm-refresh-lease.json"
MARKERS_FILE = "amocrm-token-markers.json"
GUARD_FILE = ".guard"
STATE_FILE = "state.json"


class _GuardedDirectory:
    """A private folder whose JSON files are changed under one cross-process flock."""

    def __init__(self, directory: str | os.PathLike[str], clock: Callable[[], float] = time.time):
        self.directory = Path(directory)
        self._clock = clock

    def _ensure_dir(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        self._ensure_dir()
        fd = os.open(self.directory / GUARD_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _load(self, path: Path) -> dict[str, Any] | None:
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise StoreCorrupt(
                f"{path} is not a JSON object; delete it and reconnect amoCRM via "
                "/api/oauth/callback"
            )
        return data

    def _atomic_write(self, path: Path, data: dict[str, Any]) -> None:
        self._ensure_dir()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)  # whatever the umask says
                json.dump(data, handle, separators=(",", ":"), sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)


class FileTokenStore(_GuardedDirectory):
    """Token pair and refresh lease as files in `directory`; safe across local processes."""

    kind = "file"

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.directory)!r})"

    @property
    def tokens_path(self) -> Path:
        return self.directory / TOKENS_FILE

    def describe(self) -> str:
        return f"local file {self.tokens_path}"

    @property
    def markers_path(self) -> Path:
        return self.directory / MARKERS_FILE

    # ---- token record -------------------------------------------------------------------
    def read(self) -> TokenRecord | None:
        data = self._load(self.tokens_path)
        if data is None:
            return None
        version = data.pop("version", 0)
        if not isinstance(version, int):
            raise StoreCorrupt(f"{self.tokens_path} has a non-integer version; reconnect amoCRM")
        return TokenRecord.from_storage(json.dumps(data), version)

    def read_state(self) -> TokenState:
        # Under the guard: the record and the markers must come from the same moment.
        with self._guard():
            record = self.read()
            version = self._stored_version()
            markers = self._markers()
        return TokenState(record, version, markers)

    def write(self, record: TokenRecord) -> TokenRecord:
        with self._guard():
            version = self._stored_version() + 1
            self._write_record(record, version)
        return record.model_copy(update={"version": version})

    def write_if_version(self, record: TokenRecord, expected_version: int) -> TokenRecord | None:
        # The check and the replace happen under the same flock, so no writer slips between.
        with self._guard():
            current = self._stored_version()
            if current != expected_version:
                return None
            self._write_record(record, current + 1)
        return record.model_copy(update={"version": current + 1})

    def put_marker(
        self, name: str, value: str | None, *, version: int, expect: str | None = ANY
    ) -> bool:
        check_marker(name, value, expect)
        with self._guard():
            if self._stored_version() != version:
                return False
            markers = self._markers()
            if expect != ANY and markers.get(name) != expect:
                return False
            if value is None:
                markers.pop(name, None)
            else:
                markers[name] = value
            self._atomic_write(self.markers_path, dict(markers))
        return True

    def _stored_version(self) -> int:
        """The stored record's version (0 when there is none). Call with the guard held."""
        current = self._load(self.tokens_path)
        previous = current.get("version", 0) if current else 0
        return previous if isinstance(previous, int) else 0

    def _markers(self) -> dict[str, str]:
        data = self._load(self.markers_path) or {}
        return {k: v for k, v in data.items() if k in MARKERS and isinstance(v, str)}

    def _write_record(self, record: TokenRecord, version: int) -> None:
        data = json.loads(record.to_storage())
        data["version"] = version
        self._atomic_write(self.tokens_path, data)
        self.markers_path.unlink(missing_ok=True)  # they referred to the version just replaced

    # ---- refresh lease ------------------------------------------------------------------
    def acquire_lock(self, ttl_ms: int, owner: str | None = None) -> str | None:
        path = self.directory / LEASE_FILE
        owner = owner or secrets.token_hex(16)
        with self._guard():
            lease = self._load(path)
            now_ms = int(self._clock() * 1000)
            expires_at_ms = lease.get("expires_at_ms") if lease else None
            held = isinstance(expires_at_ms, int) and expires_at_ms > now_ms
            if held and lease is not None and lease.get("owner") != owner:
                return None
            self._atomic_write(path, {"owner": owner, "expires_at_ms": now_ms + int(ttl_ms)})
            return owner

    def renew_lock(self, owner: str, ttl_ms: int) -> bool:
        path = self.directory / LEASE_FILE
        with self._guard():
            lease = self._load(path)
            now_ms = int(self._clock() * 1000)
            if not lease or lease.get("owner") != owner:
                return False
            if int(lease.get("expires_at_ms", 0)) <= now_ms:
                return False  # ran out: it may be someone else's by now
            self._atomic_write(path, {"owner": owner, "expires_at_ms": now_ms + int(ttl_ms)})
            return True

    def release_lock(self, owner: str) -> bool:
        path = self.directory / LEASE_FILE
        with self._guard():
            lease = self._load(path)
            if not lease or lease.get("owner") != owner:
                return False
            expired = int(lease.get("expires_at_ms", 0)) <= int(self._clock() * 1000)
            path.unlink(missing_ok=True)
            # Like the KV lock, an expired lease no longer belongs to anyone.
            return not expired


class FileStateStore(_GuardedDirectory):
    """`StateStore` as one JSON file (`state.json`) in the state folder; for local runs.

    Every change rewrites the file under the folder's flock, which is fine for the few hundred
    values a local deployment keeps; expired values are dropped on the next write.
    """

    kind = "file"

    def __repr__(self) -> str:
        return f"FileStateStore({str(self.directory)!r})"

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def describe(self) -> str:
        return f"local file {self.path}"

    def get(self, key: str) -> str | None:
        entry = self._live(self._load(self.path) or {}).get(check_state_key(key))
        return entry["value"] if entry else None

    def put(self, key: str, value: str, *, ttl_s: int | None = None) -> None:
        self._change(key, value, ttl_s, only_if_absent=False)

    def put_if_absent(self, key: str, value: str, *, ttl_s: int | None = None) -> bool:
        return self._change(key, value, ttl_s, only_if_absent=True)

    def delete(self, key: str) -> bool:
        check_state_key(key)
        with self._guard():
            entries = self._live(self._load(self.path) or {})
            existed = entries.pop(key, None) is not None
            if existed:
                self._atomic_write(self.path, entries)
        return existed

    def _change(self, key: str, value: str, ttl_s: int | None, *, only_if_absent: bool) -> bool:
        check_state_key(key)
        check_ttl(ttl_s)
        with self._guard():
            entries = self._live(self._load(self.path) or {})
            if only_if_absent and key in entries:
                return False
            expires_at = None if ttl_s is None else self._clock() + ttl_s
            entries[key] = {"value": value, "expires_at": expires_at}
            self._atomic_write(self.path, entries)
        return True

    def _live(self, entries: dict[str, Any]) -> dict[str, Any]:
        now = self._clock()
        live: dict[str, Any] = {}
        for key, entry in entries.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
                raise StoreCorrupt(f"{self.path} holds a malformed entry; delete the file")
            expires_at = entry.get("expires_at")
            if expires_at is None or float(expires_at) > now:
                live[key] = entry
        return live
