"""Vercel KV (Upstash Redis) over its REST API, with plain `requests`.

Use `KVClient` for single Redis commands and `KVTokenStore` for the amoCRM token pair and the
refresh lock. Protocol (reference vercel-kv.md §B6): POST the command as a JSON array to the
base URL with `Authorization: Bearer <token>`; the answer is `{"result": ...}` on success and
`{"error": "..."}` (HTTP 400) when the command failed; a bad token is HTTP 401.
"""

from __future__ import annotations

import re
import secrets
import threading
from typing import Any
from urllib.parse import urlsplit

import requests
from pydantic import SecretStr

from prometei.errors import (
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
    excerpt,
)
from prometei.http import make_session, retry_after_seconds, send
from prometei.redaction import redact
from prometei.store.base import (
    ANY,
    MARKERS,
    TokenRecord,
    TokenState,
    check_marker,
    check_state_key,
    check_ttl,
)

SERVICE = "kv"
# KV calls sit on the path of every amoCRM call: fail fast rather than eat the step's budget.
KV_TIMEOUT: tuple[float, float] = (3.0, 10.0)
# The token store's commands run while the refresh lock is (or is about to be) held, so they get
# a tighter budget: the lease must outlast every step taken under it (docs/token-rotation.md).
TOKEN_STORE_TIMEOUT: tuple[float, float] = (1.0, 3.0)
# The connect page's state commands (the nonce's check and spend) share the OAuth callback's
# 30 s with the code exchange, so they get the shortest budget of all (docs/token-rotation.md,
# "Connect page").
CONNECT_STATE_TIMEOUT: tuple[float, float] = (1.0, 1.0)
# Upstash plan quotas arrive as command errors, but they clear by themselves (next second or
# next day): worth retrying, unlike a real command error. "max request size exceeded" is not
# one of them: the same request would fail again.
_QUOTA_RE = re.compile(r"\bmax (?:daily |monthly )?requests? limit exceeded", re.IGNORECASE)
# Redis' own "not now" errors, relayed as command errors while the database restarts, fails over
# or runs a long script: they clear by themselves, so retry like a 503.
_TRANSIENT_PREFIXES = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")
AUTH_ENV_NAMES = "KV_REST_API_TOKEN (or UPSTASH_REDIS_REST_TOKEN)"
URL_ENV_NAMES = "KV_REST_API_URL (or UPSTASH_REDIS_REST_URL)"

Arg = str | int | float


class KVClient:
    """A minimal Upstash REST client: one command per request, explicit timeouts, no retries.

    `command("SET", "k", "v", "NX", "PX", 30000)` returns the decoded `result` (`"OK"`,
    `None`, ints, strings, lists). Errors: 401 → `UpstreamAuthError`, `{"error"}` →
    `UpstreamRejected` (`UpstreamAuthError` for `NOPERM`, i.e. a read-only token;
    `UpstreamUnavailable` for the plan's request quotas and Redis' LOADING/BUSY/TRYAGAIN),
    429/5xx/network → `UpstreamUnavailable`, anything unparseable → `UpstreamProtocolError`.
    """

    def __init__(
        self,
        url: str,
        token: str | SecretStr,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = KV_TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)
        self._session = session or make_session()
        self._timeout = timeout
        # Upstash replicas: echoing the last sync token gives read-your-writes (§B6).
        self._sync_token: str | None = None
        self._sync_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KVClient(host={self.host!r})"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "?"

    def command(self, *args: Arg, timeout: tuple[float, float] | None = None) -> Any:
        """Run one Redis command and return its `result` (`timeout` overrides the client's)."""
        if not args:
            raise ValueError("command() needs at least the command name")
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        with self._sync_lock:
            if self._sync_token:
                headers["Upstash-Sync-Token"] = self._sync_token
        name = str(args[0]).upper()
        response = send(
            self._session,
            SERVICE,
            "POST",
            self.url,
            timeout=timeout or self._timeout,
            json=list(args),
            headers=headers,
        )
        sync = response.headers.get("Upstash-Sync-Token")
        if sync:
            with self._sync_lock:
                self._sync_token = sync
        return self._decode(name, response)

    def _decode(self, name: str, response: requests.Response) -> Any:
        status = response.status_code
        body_text = redact(excerpt(response.text))
        if status == 401:
            raise UpstreamAuthError(
                SERVICE,
                f"{AUTH_ENV_NAMES} was refused (HTTP 401) by {self.host}; copy the token from the "
                "store's settings (Vercel → Storage, or the Upstash console)",
                status=status,
                body_excerpt=body_text,
            )
        if status == 429 or status >= 500:
            raise UpstreamUnavailable(
                SERVICE,
                f"{name} failed with HTTP {status} at {self.host}",
                status=status,
                body_excerpt=body_text,
                retry_after_seconds=retry_after_seconds(response),
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not ("result" in body or "error" in body):
            hint = f"; check {URL_ENV_NAMES}" if status in (404, 405) or body is None else ""
            raise UpstreamProtocolError(
                SERVICE,
                f"{name}: HTTP {status} without a {{result}}/{{error}} JSON envelope{hint}",
                status=status,
                body_excerpt=body_text,
            )
        if "error" in body:
            error = redact(str(body["error"]))
            if error.startswith("NOPERM"):
                # A write with the Read Only token fails as a command error, not as a 401.
                raise UpstreamAuthError(
                    SERVICE,
                    f"{name} not permitted ({excerpt(error, 120)}); {AUTH_ENV_NAMES} must be the "
                    "standard (read-write) token, not the read-only one",
                    status=status,
                    body_excerpt=body_text,
                )
            if _QUOTA_RE.search(error):
                raise UpstreamUnavailable(
                    SERVICE,
                    f"{name} refused: the Upstash plan's request quota is used up "
                    f"({excerpt(error, 120)}); it clears by itself. If it keeps happening, "
                    "raise the KV store's plan limits (Vercel → Storage, or the Upstash console)",
                    status=status,
                    body_excerpt=body_text,
                )
            if error.split(" ", 1)[0] in _TRANSIENT_PREFIXES:
                raise UpstreamUnavailable(
                    SERVICE,
                    f"{name} failed while the KV store is restarting or busy "
                    f"({excerpt(error, 120)}); it clears by itself",
                    status=status,
                    body_excerpt=body_text,
                )
            raise UpstreamRejected(
                SERVICE,
                f"{name} failed: {excerpt(error, 200)}",
                status=status,
                body_excerpt=body_text,
            )
        if status != 200:
            raise UpstreamProtocolError(
                SERVICE, f"{name}: unexpected HTTP {status}", status=status, body_excerpt=body_text
            )
        return body["result"]


# KEYS[1] = record hash. Bumps the version and stores the JSON in one atomic step, so two
# writers can never end up with the same version; the markers refer to the old version and go.
# Unconditional: only for a code exchange.
_WRITE_SCRIPT = (
    "local v = redis.call('HINCRBY', KEYS[1], 'version', 1) "
    "redis.call('HSET', KEYS[1], 'record', ARGV[1]) "
    "redis.call('HDEL', KEYS[1], 'pending', 'rotation', 'refused') "
    "return v"
)
# Compare-version write (fencing, reference §B8): ARGV[1] = JSON, ARGV[2] = the version the
# writer read. Writes and returns the new version only if the stored version (0 when absent)
# still equals it; otherwise changes nothing and returns -1.
_WRITE_IF_VERSION_SCRIPT = (
    "local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') "
    "if cur ~= tonumber(ARGV[2]) then return -1 end "
    "local v = redis.call('HINCRBY', KEYS[1], 'version', 1) "
    "redis.call('HSET', KEYS[1], 'record', ARGV[1]) "
    "redis.call('HDEL', KEYS[1], 'pending', 'rotation', 'refused') "
    "return v"
)
# Version-fenced compare-and-set of one marker field: ARGV = name, value ('' deletes), the
# version the caller read, the value expected now ('*' any, '' absent). 1 set, 0 the marker
# differs, -1 the version differs.
_PUT_MARKER_SCRIPT = (
    "local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') "
    "if cur ~= tonumber(ARGV[3]) then return -1 end "
    "if ARGV[4] ~= '*' then "
    "local now = redis.call('HGET', KEYS[1], ARGV[1]) "
    "if ARGV[4] == '' then if now then return 0 end "
    "elseif now ~= ARGV[4] then return 0 end "
    "end "
    "if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) "
    "else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end "
    "return 1"
)
# Owner-checked renewal (reference §B8 "extend", in milliseconds).
_RENEW_SCRIPT = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
# Compare-and-delete (reference §B8): only the owner may release; never a bare DEL.
_RELEASE_SCRIPT = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end"
)


class KVTokenStore:
    """The token pair in a Redis hash and the refresh lock as a lease key.

    Keys: `<prefix>:tokens` (hash: `record` JSON + `version`, plus the markers `pending`,
    `rotation` and `refused` while a rotation is in trouble) and `<prefix>:refresh-lock`.
    Every command uses `timeout` (default `TOKEN_STORE_TIMEOUT`, tighter than the client's)
    and so the whole-request deadline connect + read.
    """

    kind = "kv"

    def __init__(
        self,
        client: KVClient,
        prefix: str = "prometei:amocrm",
        timeout: tuple[float, float] = TOKEN_STORE_TIMEOUT,
    ) -> None:
        self.client = client
        self.tokens_key = f"{prefix}:tokens"
        self.lock_key = f"{prefix}:refresh-lock"
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"KVTokenStore({self.describe()!r})"

    def describe(self) -> str:
        return f"Vercel KV (Upstash REST) at {self.client.host}, key {self.tokens_key}"

    def read(self) -> TokenRecord | None:
        return self.read_state().record

    def read_state(self) -> TokenState:
        fields = ("record", "version", *MARKERS)
        result = self._command("HMGET", self.tokens_key, *fields)
        if not isinstance(result, list) or len(result) != len(fields):
            raise UpstreamProtocolError(
                SERVICE, f"HMGET answered something other than {len(fields)} values"
            )
        raw, version, *markers = result
        number = int(version or 0)
        record = None if raw is None else TokenRecord.from_storage(raw, number)
        present = {n: str(v) for n, v in zip(MARKERS, markers, strict=True) if v is not None}
        return TokenState(record, number, present)

    def write(self, record: TokenRecord) -> TokenRecord:
        version = self._command("EVAL", _WRITE_SCRIPT, 1, self.tokens_key, record.to_storage())
        if not isinstance(version, int):
            raise UpstreamProtocolError(SERVICE, "token write did not return the new version")
        return record.model_copy(update={"version": version})

    def write_if_version(self, record: TokenRecord, expected_version: int) -> TokenRecord | None:
        version = self._command(
            "EVAL",
            _WRITE_IF_VERSION_SCRIPT,
            1,
            self.tokens_key,
            record.to_storage(),
            int(expected_version),
        )
        if not isinstance(version, int):
            raise UpstreamProtocolError(SERVICE, "token write did not return the new version")
        if version < 0:
            return None
        return record.model_copy(update={"version": version})

    def put_marker(
        self, name: str, value: str | None, *, version: int, expect: str | None = ANY
    ) -> bool:
        check_marker(name, value, expect)
        result = self._command(
            "EVAL",
            _PUT_MARKER_SCRIPT,
            1,
            self.tokens_key,
            name,
            value or "",
            int(version),
            "" if expect is None else expect,
        )
        return bool(result == 1)

    def acquire_lock(self, ttl_ms: int, owner: str | None = None) -> str | None:
        # "OK" when we set it; null when the key exists (NX prevented the write).
        token = owner or secrets.token_hex(16)
        result = self._command("SET", self.lock_key, token, "NX", "PX", int(ttl_ms))
        return token if result == "OK" else None

    def renew_lock(self, owner: str, ttl_ms: int) -> bool:
        result = self._command("EVAL", _RENEW_SCRIPT, 1, self.lock_key, owner, int(ttl_ms))
        return bool(result == 1)

    def release_lock(self, owner: str) -> bool:
        result = self._command("EVAL", _RELEASE_SCRIPT, 1, self.lock_key, owner)
        return bool(result == 1)

    def _command(self, *args: Arg) -> Any:
        return self.client.command(*args, timeout=self.timeout)


class KVStateStore:
    """`StateStore` over Vercel KV: one Redis string per key under `<prefix>:`. `timeout`
    overrides the client's for every command (the connect page passes a short one)."""

    kind = "kv"

    def __init__(
        self,
        client: KVClient,
        prefix: str = "prometei:state",
        timeout: tuple[float, float] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"KVStateStore({self.describe()!r})"

    def describe(self) -> str:
        return f"Vercel KV (Upstash REST) at {self.client.host}, keys {self.prefix}:*"

    def get(self, key: str) -> str | None:
        result = self._command("GET", self._key(key))
        return None if result is None else str(result)

    def put(self, key: str, value: str, *, ttl_s: int | None = None) -> None:
        self._command("SET", self._key(key), value, *self._expiry(ttl_s))

    def put_if_absent(self, key: str, value: str, *, ttl_s: int | None = None) -> bool:
        # "OK" when written; null when the key already existed.
        result = self._command("SET", self._key(key), value, "NX", *self._expiry(ttl_s))
        return bool(result == "OK")

    def delete(self, key: str) -> bool:
        return bool(self._command("DEL", self._key(key)) == 1)

    def _command(self, *args: Arg) -> Any:
        return self.client.command(*args, timeout=self.timeout)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{check_state_key(key)}"

    @staticmethod
    def _expiry(ttl_s: int | None) -> tuple[Arg, ...]:
        checked = check_ttl(ttl_s)
        return () if checked is None else ("EX", int(checked))
