"""The rotation markers and the lease renewal, the same on both stores (KV over the fakeredis
shim, and the file store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from prometei.store.base import ANY, TokenRecord, TokenStore
from prometei.store.file import FileTokenStore
from prometei.store.kv import KVClient, KVTokenStore
from tests.support.kvshim import running_shim


def record(tag: str) -> TokenRecord:
    return TokenRecord(
        access_token=SecretStr(f"acc-SECRET-{tag}"),
        refresh_token=SecretStr(f"ref-SECRET-{tag}"),
        expires_at=2_000_000_000,
        obtained_at=1_900_000_000,
        host="example.amocrm.ru",
    )


@pytest.fixture(params=["kv", "file"])
def store(request, tmp_path: Path) -> Iterator[TokenStore]:
    if request.param == "file":
        yield FileTokenStore(tmp_path / "state")
        return
    with running_shim() as shim:
        yield KVTokenStore(KVClient(shim.url, shim.token))


def test_markers_are_compare_and_set_and_fenced_by_the_version(store):
    assert store.read_state().version == 0 and store.read_state().record is None
    assert store.put_marker("rotation", '{"a":1}', version=0, expect=None)
    assert not store.put_marker("rotation", '{"b":2}', version=0, expect=None)  # taken
    assert not store.put_marker("rotation", '{"b":2}', version=0, expect='{"x":0}')
    assert store.put_marker("rotation", '{"b":2}', version=0, expect='{"a":1}')
    assert not store.put_marker("refused", '{"v":3}', version=3)  # another version
    assert store.put_marker("refused", '{"v":0}', version=0, expect=ANY)
    assert dict(store.read_state().markers) == {"rotation": '{"b":2}', "refused": '{"v":0}'}
    assert store.put_marker("refused", None, version=0)  # None deletes
    assert dict(store.read_state().markers) == {"rotation": '{"b":2}'}


def test_every_write_of_a_pair_drops_the_markers(store):
    assert store.write_if_version(record("a"), 0) is not None
    assert store.put_marker("pending", '{"p":1}', version=1, expect=None)
    state = store.read_state()
    assert state.version == 1 and state.markers == {"pending": '{"p":1}'}
    assert store.write_if_version(record("b"), 1) is not None
    assert store.read_state().markers == {}
    assert store.put_marker("rotation", '{"r":1}', version=2, expect=None)
    store.write(record("c"))  # a reconnect
    state = store.read_state()
    assert state.markers == {} and state.version == 3
    assert state.record.refresh_token.get_secret_value() == "ref-SECRET-c"


def test_the_lease_is_renewed_only_by_its_owner(store):
    owner = store.acquire_lock(5_000, "owner-a")
    assert owner == "owner-a"
    assert store.acquire_lock(5_000, "owner-b") is None
    assert store.renew_lock("owner-a", 5_000) is True
    assert store.renew_lock("owner-b", 5_000) is False
    assert store.release_lock("owner-a") is True
    assert store.renew_lock("owner-a", 5_000) is False  # released: nothing to renew
    assert store.acquire_lock(5_000) is not None  # a random owner when none is given


def test_marker_names_and_values_are_checked(store):
    with pytest.raises(ValueError, match="unknown"):
        store.put_marker("tokens", "{}", version=0)
    with pytest.raises(ValueError, match="non-empty"):
        store.put_marker("rotation", "", version=0)
