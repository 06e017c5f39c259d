"""`python -m bench [--quick] [--only coldstart,load,...] [--merge] [--output BENCHMARKS.md]`.

Runs every section, prints its tables and writes BENCHMARKS.md at the repository root with
the machine, the date, the method and the tables. `--merge` replaces only the sections that
ran in the existing file (each then names its own date and machine), e.g.
`python -m bench --only executor --merge`. The robustness tests (property-based intake
fuzzing and the fault matrix) run in a pytest subprocess; the fault matrix table they produce
is written to docs/fault-matrix.md and included here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench import PYTHON, ROOT, Section, clean_env

SECTIONS = (
    "coldstart",
    "load",
    "economy",
    "contention",
    "batch",
    "robustness",
    "executor",
    "sync",
)
FAULT_MATRIX_DOC = ROOT / "docs" / "fault-matrix.md"


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    versions = []
    for package in ("inngest", "flask", "werkzeug", "requests", "pydantic"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} ?")
    return [
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}"
        + (f", commit `{commit}` (plus uncommitted changes, if any)" if commit else ""),
        f"- Machine: {platform.system()} {platform.release()}, {cpu}, "
        f"{os.cpu_count()} CPUs{', ' + memory if memory else ''}",
        f"- Python {platform.python_version()} ({sys.executable}); {', '.join(versions)}",
    ]


def robustness() -> Section:
    """Run the robustness tests; report their result and include the fault matrix."""
    started = time.perf_counter()
    env = clean_env(FAULT_MATRIX_OUT=str(FAULT_MATRIX_DOC))
    for key in list(env):  # the tests set their own environment
        if key.startswith(("INNGEST_", "AMOCRM_", "CRM_API_", "PROMETEI_")):
            del env[key]
    proc = subprocess.run(
        [
            PYTHON,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_robustness_intake.py",
            "tests/test_fault_matrix.py",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else f"pytest exited with {proc.returncode}"
    notes = [f"`pytest tests/test_robustness_intake.py tests/test_fault_matrix.py`: {summary}"]
    if proc.returncode != 0:
        notes.append("**Failures:**\n\n```\n" + "\n".join(lines[-40:]) + "\n```")
    section = Section(
        key="robustness",
        title="6. Robustness",
        method=(
            "Property-based tests (hypothesis, derandomized) throw random, truncated, mutated, "
            "huge, deeply nested and wrongly encoded bodies at the form parser and at "
            "/api/webhook; every answer must be a documented status with a JSON error. The "
            "fault matrix makes amoCRM, the ERP, KV and the Inngest event API fail in every "
            "way the references document and checks the outcome and that no ERP record is "
            "ever duplicated. Regenerate the matrix with "
            "`FAULT_MATRIX_OUT=docs/fault-matrix.md .venv/bin/python -m pytest "
            "tests/test_fault_matrix.py -q`."
        ),
        notes=notes,
    )
    if FAULT_MATRIX_DOC.exists():
        body = FAULT_MATRIX_DOC.read_text(encoding="utf-8")
        # Drop the document's own title; keep its table.
        body = "\n".join(line for line in body.splitlines() if not line.startswith("# "))
        section.notes.append("Fault matrix (also in docs/fault-matrix.md):\n\n" + body.strip())
    section.seconds = time.perf_counter() - started
    return section


def render(sections: list[Section], quick: bool, total_s: float) -> str:
    parts = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench"
        + (" --quick" if quick else "")
        + "`); do not edit by hand. Every timed figure is a median over repeated runs, "
        "measured side by side with its reference in the same run and reported as a ratio "
        "next to the absolute numbers. Counted figures (economy, contention, batch) are exact "
        "counts of requests seen by fakes of the outside systems.",
        "",
        *machine(),
        f"- Total bench time: {total_s:.0f} s"
        + (" (quick mode: fewer repetitions)" if quick else ""),
        "",
    ]
    for section in sections:
        parts += [section.markdown(), ""]
    return "\n".join(parts).rstrip() + "\n"


def merge(existing: str, sections: list[Section], quick: bool) -> str:
    """`existing` with each of `sections` replacing its namesake (or appended at the end)."""
    stamp = "; ".join(line.removeprefix("- ") for line in machine()[:2])
    blocks: list[str] = []  # the text before the first section, then one block per section
    for line in existing.splitlines(keepends=True):
        if line.startswith("## ") or not blocks:
            blocks.append(line)
        else:
            blocks[-1] += line
    for section in sections:
        section.notes.append(
            f"Measured separately (`python -m bench --only {section.key} --merge"
            + (" --quick" if quick else "")
            + f"`): {stamp}."
        )
        text = section.markdown() + "\n\n"
        title = f"## {section.title}\n"
        found = [i for i, block in enumerate(blocks) if block.startswith(title)]
        if found:
            blocks[found[0]] = text
        else:
            blocks[-1] = blocks[-1].rstrip("\n") + "\n\n"
            blocks.append(text)
    return "".join(blocks).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (~1-2 min)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument(
        "--merge", action="store_true", help="replace only these sections in --output"
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    started = time.perf_counter()
    sections: list[Section] = []
    for key in SECTIONS:
        if key not in chosen:
            continue
        print(f"-- running {key} ...", flush=True)
        if key == "robustness":
            section = robustness()
        else:
            module = importlib.import_module(f"bench.{key}")
            section = module.run(quick=args.quick)
        sections.append(section)
        print(section.text(), flush=True)
        print(f"   ({section.seconds:.1f} s)\n", flush=True)
    total = time.perf_counter() - started
    output = Path(args.output)
    if args.merge and output.exists():
        text = merge(output.read_text(encoding="utf-8"), sections, args.quick)
    else:
        text = render(sections, args.quick, total)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} in {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
