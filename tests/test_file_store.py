"""The local file store: atomic 0600 writes, versions, and the lease lock across processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from prometei.store.base import StoreCorrupt, TokenRecord
from prometei.store.file import FileTokenStore
from tests.support import token_workers

SPAWN = multiprocessing.get_context("spawn")


def record(access: str = "acc-SECRET-1") -> TokenRecord:
    return TokenRecord(
        access_token=SecretStr(access),
        refresh_token=SecretStr("ref-SECRET-1"),
        expires_at=2_000_000_000,
        obtained_at=1_900_000_000,
        host="example.amocrm.ru",
    )


def test_roundtrip_with_versions(tmp_path: Path):
    store = FileTokenStore(tmp_path / "state")
    assert store.read() is None
    assert store.write(record()).version == 1
    written = store.write(record("acc-SECRET-2"))
    assert written.version == 2
    assert store.read() == written


def test_file_and_directory_are_private(tmp_path: Path):
    old = os.umask(0o000)  # even a permissive umask must not widen the modes
    try:
        store = FileTokenStore(tmp_path / "state")
        store.write(record())
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.tokens_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700


def test_a_failed_replace_leaves_the_old_file_and_no_temp_files(tmp_path, monkeypatch):
    store = FileTokenStore(tmp_path)
    store.write(record("acc-SECRET-old"))

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.write(record("acc-SECRET-new"))
    monkeypatch.undo()

    current = store.read()
    assert current is not None and current.access_token.get_secret_value() == "acc-SECRET-old"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_written_json_is_complete(tmp_path: Path):
    store = FileTokenStore(tmp_path)
    store.write(record())
    data = json.loads(store.tokens_path.read_text())
    assert data["version"] == 1 and data["refresh_token"] == "ref-SECRET-1"


def test_garbage_file_is_reported_as_corrupt(tmp_path: Path):
    store = FileTokenStore(tmp_path)
    tmp_path.joinpath("amocrm-tokens.json").write_text("not json")
    with pytest.raises(StoreCorrupt, match="reconnect"):
        store.read()


def test_lock_is_exclusive_owner_checked_and_leased(tmp_path: Path):
    now = [1000.0]
    store = FileTokenStore(tmp_path, clock=lambda: now[0])
    owner = store.acquire_lock(5000)
    assert owner is not None
    assert store.acquire_lock(5000) is None
    assert store.release_lock("not-the-owner") is False
    assert store.acquire_lock(5000) is None
    now[0] += 5.001  # lease over: a new holder may take it
    second = store.acquire_lock(5000)
    assert second is not None and second != owner
    assert store.release_lock(owner) is False  # the expired owner cannot release it
    assert store.release_lock(second) is True
    assert store.acquire_lock(5000) is not None


def test_lock_excludes_another_process(tmp_path: Path):
    state_dir = str(tmp_path / "s")
    results, release = SPAWN.Queue(), SPAWN.Event()
    holder = SPAWN.Process(
        target=token_workers.hold_file_lock, args=(state_dir, 30_000, results, release)
    )
    holder.start()
    try:
        assert results.get(timeout=60) is True  # the other process holds it
        store = FileTokenStore(state_dir)
        assert store.acquire_lock(30_000) is None
    finally:
        release.set()
    assert results.get(timeout=30) is True  # it released its own lease
    holder.join(timeout=30)
    assert store.acquire_lock(30_000) is not None


def test_write_if_version_is_a_compare_version_write(tmp_path: Path):
    store = FileTokenStore(tmp_path)
    assert store.write_if_version(record(), 1) is None
    assert store.read() is None
    assert store.write_if_version(record(), 0).version == 1
    newer = store.write(record("acc-SECRET-newer"))
    assert newer.version == 2
    # A late writer that read version 1 must not overwrite the newer pair.
    assert store.write_if_version(record("acc-SECRET-late"), 1) is None
    assert store.read() == newer
    assert store.write_if_version(record("acc-SECRET-3"), 2).version == 3
    assert store.read().access_token.get_secret_value() == "acc-SECRET-3"
