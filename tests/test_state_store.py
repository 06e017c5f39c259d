"""The shared state store (`StateStore`): the same rules over KV (REST shim) and the local file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prometei.store import build_state_store
from prometei.store.base import StateStore, StoreCorrupt
from prometei.store.file import FileStateStore
from prometei.store.kv import KVClient, KVStateStore
from tests.support.kvshim import running_shim


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["file", "kv"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "file":
        yield FileStateStore(tmp_path / "state")
        return
    with running_shim() as shim:
        yield KVStateStore(KVClient(shim.url, shim.token))


def test_put_get_delete(store: StateStore) -> None:
    assert store.get("cursor") is None
    store.put("cursor", '{"updated_at": 5}')
    assert store.get("cursor") == '{"updated_at": 5}'
    store.put("cursor", "6")
    assert store.get("cursor") == "6"
    assert store.delete("cursor") is True
    assert store.delete("cursor") is False
    assert store.get("cursor") is None


def test_put_if_absent_then_delete_is_single_use(store: StateStore) -> None:
    assert store.put_if_absent("nonce:abc", "1", ttl_s=600) is True
    assert store.put_if_absent("nonce:abc", "2", ttl_s=600) is False
    assert store.get("nonce:abc") == "1"
    assert [store.delete("nonce:abc") for _ in range(3)] == [True, False, False]


def test_keys_are_checked(store: StateStore) -> None:
    for bad in ("", "a b", "../etc", "x" * 201, "ключ"):
        with pytest.raises(ValueError, match="state key"):
            store.get(bad)
    with pytest.raises(ValueError, match="ttl_s"):
        store.put("k", "v", ttl_s=0)


def test_file_values_expire(tmp_path: Path) -> None:
    clock = Clock()
    store = FileStateStore(tmp_path, clock=clock)
    store.put("short", "1", ttl_s=10)
    store.put("long", "2")
    clock.now += 11
    assert store.get("short") is None
    assert store.put_if_absent("short", "3") is True
    assert store.get("long") == "2"
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600


def test_kv_values_expire_and_live_under_a_prefix() -> None:
    with running_shim() as shim:
        store = KVStateStore(KVClient(shim.url, shim.token))
        store.put("lead:1", "812", ttl_s=30)
        assert shim.redis.ttl("prometei:state:lead:1") in range(25, 31)
        assert shim.redis.get("prometei:state:lead:1") == "812"


def test_file_store_refuses_a_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"k": 5}')
    with pytest.raises(StoreCorrupt, match="malformed"):
        FileStateStore(tmp_path).get("k")


def test_builder_picks_kv_file_or_refuses_on_vercel(set_env, project_env) -> None:
    from prometei.config import get_settings
    from prometei.errors import ConfigError

    assert isinstance(build_state_store(get_settings()), FileStateStore)
    set_env(KV_REST_API_URL="https://kv.example.test", KV_REST_API_TOKEN="t-SECRET")
    assert isinstance(build_state_store(get_settings()), KVStateStore)
    set_env(KV_REST_API_URL=None, KV_REST_API_TOKEN=None, VERCEL="1")
    with pytest.raises(ConfigError, match="KV_REST_API_URL"):
        build_state_store(get_settings())
