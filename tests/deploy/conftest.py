"""The deploy tier: one real `vercel build` per session, shared by every test here."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.vercel_build import ROOT, BuildResult, python312, run_build

_summary: list[str] = []


def _repository_state() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    """One temporary directory for everything the check writes; removed at the end."""
    directory = Path(tempfile.mkdtemp(prefix="prometei-deploy-check-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def build(scratch: Path) -> Iterator[BuildResult]:
    before = _repository_state()
    result = run_build(scratch)
    _summary.append(f"vercel build: {result.seconds:.1f} s")
    for route, function in sorted(result.functions.items()):
        files, size = result.bundle_size(function)
        vendored_files, vendored = result.bundle_size(function, "_vendor/")
        _summary.append(
            f"  {route}.func: {size / 1_000_000:.1f} MB uncompressed in {files} files "
            f"(packages {vendored / 1_000_000:.1f} MB in {vendored_files}; ours "
            f"{(size - vendored) / 1000:.0f} kB in {files - vendored_files}), "
            f"{function.config.get('runtime')}, maxDuration {function.config.get('maxDuration')}"
        )
    _summary.append(f"  static: {', '.join(sorted(result.static_files)) or '(none)'}")
    yield result
    assert _repository_state() == before, "the deploy check changed the working tree"


@pytest.fixture(scope="session")
def python() -> str:
    return python312()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _summary:
        terminalreporter.section("deploy check")
        for line in _summary:
            terminalreporter.write_line(line)
