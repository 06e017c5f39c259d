"""requirements.txt is the pinned closure of requirements.in (offline: reads installed metadata).

Vercel installs requirements.txt into every function bundle, so it must pin every package the
functions import, transitive ones included, and nothing else. `make requirements` regenerates
it; these checks fail when someone edits one file and forgets the other.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def _lines(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _direct() -> list[Requirement]:
    return [Requirement(line) for line in _lines(ROOT / "requirements.in")]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in _lines(ROOT / "requirements.txt"):
        match = PIN.match(line)
        assert match, f"requirements.txt: {line!r} is not pinned as name==version"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"requirements.txt pins {name} twice"
        pins[name] = match.group(2)
    return pins


def _closure(direct: list[Requirement]) -> set[str]:
    """Every distribution the direct requirements pull in on this Python, from installed metadata."""
    seen: set[str] = set()
    todo = [(canonicalize_name(req.name), frozenset(req.extras)) for req in direct]
    while todo:
        name, extras = todo.pop()
        if name in seen and not extras:
            continue
        seen.add(name)
        for spec in metadata.distribution(name).requires or []:
            req = Requirement(spec)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in environments):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return seen


def test_every_direct_requirement_is_pinned_within_its_specifier() -> None:
    pins = _pins()
    for req in _direct():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in requirements.in but not requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.txt pins {name}=={pins[name]}, outside {req} in requirements.in"
        )


def test_pins_are_exactly_the_closure_of_the_direct_requirements() -> None:
    pinned = set(_pins())
    needed = _closure(_direct())
    assert needed - pinned == set(), "needed but not pinned; run `make requirements`"
    assert pinned - needed == set(), "pinned but nothing needs it; run `make requirements`"


def test_the_test_environment_runs_the_pinned_versions() -> None:
    # The unit tiers exercise exactly what Vercel bundles.
    for name, version in _pins().items():
        assert metadata.version(name) == version, name


def test_dev_tools_stay_out_of_the_runtime_set() -> None:
    pinned = set(_pins())
    for tool in ("pytest", "responses", "ruff", "mypy", "hypothesis", "fakeredis", "uv"):
        assert tool not in pinned
