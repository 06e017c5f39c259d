"""Run the real `vercel build` on a throwaway copy of this tree and read what it produced.

The copy is the working tree minus git-ignored files (`git ls-files --cached --others
--exclude-standard`): what the next commit would deploy, uncommitted edits included, and in a
fresh CI clone exactly HEAD. None of the developer's ignored files (a real `.env`, token store,
virtualenvs) is copied; dummy ones are planted instead, because a developer's working copy has
them and `vercel build` / `vercel deploy` read the disk.

Everything the CLI writes goes under one temporary directory (HOME and XDG dirs included),
which the caller removes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import PROJECT_ENV_PREFIXES

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(__file__).resolve().parent
VERCEL_BIN = TOOLS / "node_modules" / ".bin" / "vercel"
BUILD_TIMEOUT = 600

# A value that must never reach the output: it sits in every planted file.
MARKER = "deploy-check-planted-secret-7f3a9c"

# What a developer's working copy holds besides the committed files (README's setup makes a
# .env; `make serve` writes .prometei/; `make test` makes .venv; CI on 3.12 makes .venv-py312).
PLANTED = {
    ".env": f"AMOCRM_WEBHOOK_SECRET={MARKER}\nCRM_API_PASSWORD={MARKER}\n",
    ".env.local": f"AMOCRM_ACCESS_TOKEN={MARKER}\n",
    ".prometei/tokens.json": json.dumps({"refresh_token": MARKER}),
    ".venv/lib/python3.12/site-packages/planted.py": f"SECRET = {MARKER!r}\n",
    ".venv-py312/lib/python3.12/site-packages/planted.py": f"SECRET = {MARKER!r}\n",
    "notes.txt": f"scratch notes {MARKER}\n",
}


# Variables not passed to the CLI: the project's settings, Vercel's (a token or linked project
# would change what the CLI does), and anything that would redirect Python or uv.
_NOT_PASSED = (*PROJECT_ENV_PREFIXES, "VERCEL", "NOW_", "UV_", "PYTHON", "VIRTUAL_ENV")


class DeployCheckError(RuntimeError):
    """The check cannot run here; the message says what to install or set."""


@dataclass
class Function:
    """One `.func` directory of `.vercel/output/functions`."""

    route: str  # "api/inngest"
    config: dict[str, Any]
    directory: Path

    @property
    def file_map(self) -> dict[str, str]:
        """Bundle path -> source path (relative to the build directory)."""
        return dict(self.config.get("filePathMap", {}))


@dataclass
class BuildResult:
    project: Path  # the copy that was built
    output: Path  # its .vercel/output
    log: str
    seconds: float
    functions: dict[str, Function] = field(default_factory=dict)
    static_files: set[str] = field(default_factory=set)

    def bundle_size(self, function: Function, prefix: str = "") -> tuple[int, int]:
        """(files, bytes) of one function bundle, uncompressed; only paths under `prefix` if given."""
        sizes = [
            (self.project / source).stat().st_size
            for inside, source in function.file_map.items()
            if inside.startswith(prefix)
        ]
        if not prefix:  # the .func directory's own files (the runtime's trampoline)
            sizes += [p.stat().st_size for p in function.directory.rglob("*") if p.is_file()]
        return len(sizes), sum(sizes)


def python312() -> str:
    """An absolute path to a Python 3.12 interpreter (what Vercel runs), or a clear error."""
    candidate = os.environ.get("DEPLOY_CHECK_PYTHON") or shutil.which("python3.12")
    if candidate:
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.executable); print(sys.version_info[:2])"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = probe.stdout.split("\n")
        if probe.returncode == 0 and lines[1].strip() == "(3, 12)":
            return lines[0].strip()
    raise DeployCheckError(
        "the deploy check needs Python 3.12 (Vercel's runtime): put python3.12 on PATH or set "
        "DEPLOY_CHECK_PYTHON=/path/to/python3.12"
    )


def copy_tree(destination: Path) -> list[str]:
    """Copy the working tree minus ignored files; return the relative paths copied."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    copied = []
    for relative in sorted(set(filter(None, listed.split("\0")))):
        source = ROOT / relative
        if not source.is_file():  # deleted but not yet committed
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(relative)
    return copied


def plant(project: Path) -> None:
    for relative, content in PLANTED.items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")


def _tool_path(scratch: Path, python: str) -> str:
    """A PATH where `python3`/`python3.12` are the 3.12 interpreter and `uv` is the pinned one."""
    uv = Path(sys.executable).parent / "uv"  # the test venv's, pinned in requirements-dev.txt
    found_uv = str(uv) if uv.exists() else shutil.which("uv")
    if not found_uv:
        raise DeployCheckError("uv not found: run `make install` (requirements-dev.txt pins it)")
    bin_dir = scratch / "bin"
    bin_dir.mkdir()
    for name in ("python3", "python3.12", "python"):
        (bin_dir / name).symlink_to(python)
    (bin_dir / "uv").symlink_to(found_uv)
    return os.pathsep.join([str(bin_dir), os.environ.get("PATH", "/usr/bin:/bin")])


def run_build(scratch: Path) -> BuildResult:
    """Copy, plant, link a dummy project and run `vercel build`; raise if the build fails."""
    if not VERCEL_BIN.exists():
        raise DeployCheckError(
            f"{VERCEL_BIN.relative_to(ROOT)} is missing: run `make deploy-check` (it installs "
            "the pinned Vercel CLI from tests/deploy/package-lock.json)"
        )
    python = python312()
    project = scratch / "project"
    project.mkdir()
    copy_tree(project)
    plant(project)
    # `vercel build` needs a linked project; it never contacts Vercel with one.
    (project / ".vercel").mkdir()
    (project / ".vercel" / "project.json").write_text(
        json.dumps(
            {
                "projectId": "prj_deploycheck",
                "orgId": "team_deploycheck",
                "settings": {"framework": None},
            }
        ),
        encoding="utf-8",
    )
    home = scratch / "home"
    home.mkdir()
    env = {
        # The machine's own settings (CA certificates, proxies) stay; ours and Vercel's go.
        **{key: value for key, value in os.environ.items() if not key.startswith(_NOT_PASSED)},
        "PATH": _tool_path(scratch, python),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "VERCEL_TELEMETRY_DISABLED": "1",
        "NO_UPDATE_NOTIFIER": "1",
        "UV_PYTHON_DOWNLOADS": "never",  # use the 3.12 above, never fetch one
        "CI": "1",
    }
    started = time.monotonic()
    completed = subprocess.run(
        [str(VERCEL_BIN), "build", "--yes", "--global-config", str(home / "vercel")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    seconds = time.monotonic() - started
    log = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise DeployCheckError(f"vercel build failed ({completed.returncode}):\n{log[-4000:]}")
    return read_output(project, log, seconds)


def upload_list(project: Path) -> list[str]:
    """What `vercel deploy` would upload from `project` (relative paths), as the CLI decides it."""
    completed = subprocess.run(
        [
            "node",
            str(TOOLS / "upload_list.mjs"),
            str(VERCEL_BIN.parent.parent / "vercel"),
            str(project),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise DeployCheckError(f"listing the upload failed: {completed.stderr[-2000:]}")
    return sorted(
        Path(path).relative_to(project).as_posix() for path in json.loads(completed.stdout)
    )


def read_output(project: Path, log: str, seconds: float) -> BuildResult:
    output = project / ".vercel" / "output"
    result = BuildResult(project=project, output=output, log=log, seconds=seconds)
    functions = output / "functions"
    for config_path in sorted(functions.rglob("*.func/.vc-config.json")):
        directory = config_path.parent
        route = directory.relative_to(functions).as_posix().removesuffix(".func")
        result.functions[route] = Function(
            route=route,
            config=json.loads(config_path.read_text(encoding="utf-8")),
            directory=directory,
        )
    static = output / "static"
    if static.is_dir():
        result.static_files = {
            path.relative_to(static).as_posix() for path in static.rglob("*") if path.is_file()
        }
    return result
