"""README.md, .env.example and `doctor --help` name what the code has, and nothing it lacks.

Each test reads the names from the code (config.py's variables, the functions' ids and events,
doctor's rows, the Makefile's targets, the package folders) and looks them up in the documents,
so a setting, function or row added without its documentation fails here, and so does a
document that still names something the code no longer has.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from click.testing import CliRunner

import prometei.functions
from prometei.cli.doctor import doctor
from prometei.config import ENV_NAMES, SECRET_FIELDS
from prometei.doctor import amocrm_writeback
from prometei.doctor.runner import STEPS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")

# `NAME=value` or `# NAME=` at the start of a line: a setting the file documents.
ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]+)=(.*)$")
# How the README spells a variable of ours (a trailing `_*` family such as CRM_API_* is prose).
PROJECT_VARIABLE = re.compile(
    r"\b(?:AMOCRM|CRM|ERP|INNGEST|KV|PROMETEI|UPSTASH|VERCEL|PUBLIC)_[A-Z0-9_]*[A-Z0-9]\b(?!_)"
)
# Variables the README names that only the test tiers and the Makefile read, never the product.
TOOLING_VARIABLES = {"INNGEST_CLI": "tests/e2e", "DEPLOY_CHECK_PYTHON": "tests/deploy"}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Z][A-Z0-9_]+", text))


def _section(title: str) -> str:
    """The README text from the heading `title` up to the next heading of the same level."""
    level = "#" * (len(title) - len(title.lstrip("#")))
    start = README.index(title + "\n")
    rest = README[start + len(title) :]
    end = re.search(rf"^{level} ", rest, flags=re.M)
    return rest if end is None else rest[: end.start()]


# ---- .env.example ------------------------------------------------------------------------


def test_env_example_names_only_variables_the_code_reads() -> None:
    assigned = {m[1] for line in ENV_EXAMPLE.splitlines() if (m := ASSIGNMENT.match(line))}
    assert assigned - ENV_NAMES.keys() == set()


def test_env_example_mentions_every_variable_including_aliases() -> None:
    assert sorted(ENV_NAMES.keys() - _words(ENV_EXAMPLE)) == []


def test_env_example_leaves_every_secret_empty() -> None:
    secrets = {env for env, field in ENV_NAMES.items() if field in SECRET_FIELDS}
    filled = [
        m[1]
        for line in ENV_EXAMPLE.splitlines()
        if (m := ASSIGNMENT.match(line)) and m[1] in secrets and m[2].strip()
    ]
    assert filled == []


def test_env_example_explains_every_setting_in_a_comment_above_it() -> None:
    lines = ENV_EXAMPLE.splitlines()
    unexplained = []
    for number, line in enumerate(lines):
        if not ASSIGNMENT.match(line):
            continue
        above = number - 1
        while above >= 0 and ASSIGNMENT.match(lines[above]):
            above -= 1  # settings grouped under one comment share it
        if above < 0 or not re.match(r"^#\s*\S", lines[above]):
            unexplained.append(line)
    assert unexplained == []


# ---- README: variables ---------------------------------------------------------------------


def test_readme_mentions_every_variable() -> None:
    assert sorted(ENV_NAMES.keys() - _words(README)) == []


def test_readme_names_no_variable_that_nothing_reads() -> None:
    named = set(PROJECT_VARIABLE.findall(README))
    assert sorted(named - ENV_NAMES.keys() - TOOLING_VARIABLES.keys()) == []
    for variable, reader in TOOLING_VARIABLES.items():
        sources = (p.read_text(encoding="utf-8") for p in (ROOT / reader).rglob("*.py"))
        assert any(variable in text for text in sources), (variable, reader)


# ---- README: functions, events, doctor rows ------------------------------------------------


def _function_modules() -> list[object]:
    return [
        importlib.import_module(f"prometei.functions.{info.name}")
        for info in pkgutil.iter_modules(prometei.functions.__path__)
    ]


def test_readme_function_table_lists_every_function_id() -> None:
    table = _section("## Functions and events")
    ids = {module.FN_ID for module in _function_modules() if hasattr(module, "FN_ID")}
    assert ids, "no FN_ID found in prometei.functions"
    assert sorted(fn_id for fn_id in ids if f"| `{fn_id}` |" not in table) == []


def test_readme_function_table_lists_every_trigger_event() -> None:
    table = _section("## Functions and events")
    events = {
        value
        for module in _function_modules()
        for name, value in vars(module).items()
        if name.endswith("_EVENT") and isinstance(value, str) and "/" in value
    }
    assert {"amocrm/lead.status", "amocrm/lead.sync", "amocrm/webhook"} <= events
    assert sorted(event for event in events if f"`{event}`" not in table) == []


def _doctor_rows() -> list[str]:
    rows = ["environment"]
    for step in STEPS:
        rows.extend(step.row_names(None))
    rows.extend(amocrm_writeback.ROWS)  # all of them only with AMOCRM_ERP_ID_FIELD set
    return list(dict.fromkeys(rows))


def test_readme_doctor_table_lists_every_row() -> None:
    table = _section("### `doctor`: is everything configured and reachable?")
    assert sorted(row for row in _doctor_rows() if f"| `{row}`" not in table) == []


def test_doctor_help_lists_every_row() -> None:
    result = CliRunner().invoke(doctor, ["--help"])
    assert result.exit_code == 0
    assert sorted(row for row in _doctor_rows() if row not in result.output) == []


# ---- README: make targets and layout -------------------------------------------------------


def test_readme_make_commands_are_makefile_targets_and_every_target_is_documented() -> None:
    phony = set(re.search(r"^\.PHONY:(.*)$", MAKEFILE, flags=re.M)[1].split())  # type: ignore[index]
    rules = set(re.findall(r"^([a-z][a-z0-9-]*):", MAKEFILE, flags=re.M))
    assert phony <= rules
    # `make x` in prose, or a command line in a code block (after VAR=value prefixes).
    used = set(re.findall(r"(?:`|^(?:[A-Z_0-9]+=\S+ +)*)make ([a-z][a-z0-9-]*)", README, re.M))
    assert sorted(used - rules) == []
    assert sorted(phony - used) == []


def test_readme_layout_lists_every_folder_and_nothing_that_is_gone() -> None:
    layout = _section("## Layout")
    listed = set(re.findall(r"^(\S+/)", layout, flags=re.M)) | set(
        re.findall(r"^(\S+\.py)\b", layout, flags=re.M)
    )
    assert sorted(path for path in listed if not (ROOT / path).exists()) == []
    folders = {"api/", "public/", "bench/", "docs/", "tests/"}
    for parent in ("prometei", "tests"):
        folders |= {
            f"{parent}/{p.name}/"
            for p in (ROOT / parent).iterdir()
            if p.is_dir() and (p / "__init__.py").exists()
        }
    assert sorted(folders - listed) == []
