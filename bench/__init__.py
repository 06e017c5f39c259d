"""`make bench`: measured side by side, reported as ratios next to the absolute numbers.

Run `python -m bench` from the repository root (`--quick` for fewer repetitions, `--only` to
pick sections). Every section returns a `Section`: a title, a method paragraph and tables;
`bench.__main__` prints them and writes BENCHMARKS.md. Shared helpers live here.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Every variable the project reads; a benchmark subprocess starts from none of them.
PROJECT_ENV_PREFIXES = ("INNGEST_", "AMOCRM_", "CRM_API_", "ERP_", "KV_", "UPSTASH_", "PROMETEI_")

# Dummy values only: nothing here is a real credential, and nothing leaves 127.0.0.1.
DUMMY_SIGNING_KEY = "signkey-test-" + "5d" * 32
DUMMY_EVENT_KEY = "bench-event-key-0000"
DUMMY_WEBHOOK_SECRET = "bench-webhook-secret-0000"
CLOUD_ENV = {
    "INNGEST_SIGNING_KEY": DUMMY_SIGNING_KEY,
    "INNGEST_EVENT_KEY": DUMMY_EVENT_KEY,
    "AMOCRM_SUBDOMAIN": "example",
    "AMOCRM_ACCOUNT_ID": "29085955",
    "AMOCRM_WEBHOOK_SECRET": DUMMY_WEBHOOK_SECRET,
    "AMOCRM_ACCESS_TOKEN": "bench-long-lived-token-0000",
    "CRM_API_URL": "http://127.0.0.1:9/api/rest.php",
    "CRM_API_KEY": "bench-erp-key",
    "CRM_API_USERNAME": "api",
    "CRM_API_PASSWORD": "bench-erp-password",
    "PROMETEI_LOG_FORMAT": "json",
    "PROMETEI_LOG_LEVEL": "WARNING",
}


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without project variables, plus CLOUD_ENV and `extra` (for subprocesses)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(PROJECT_ENV_PREFIXES) and key not in ("VERCEL", "VERCEL_ENV")
    }
    env.update(CLOUD_ENV)
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    return env


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def ratio(value: float, reference: float) -> str:
    if not reference or math.isnan(reference) or math.isnan(value):
        return "n/a"
    return f"{value / reference:.2f}x"


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "-"
    return "yes" if ok else "**NO**"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    caption: str = ""

    def add(self, *cells: Any) -> None:
        self.rows.append(list(cells))

    def markdown(self) -> str:
        lines = []
        if self.caption:
            lines += [self.caption, ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        return "\n".join(lines)

    def text(self) -> str:
        cells = [self.headers] + [[_cell(c).replace("**", "") for c in r] for r in self.rows]
        widths = [max(len(str(row[i])) for row in cells) for i in range(len(self.headers))]
        out = []
        if self.caption:
            out.append(self.caption)
        for n, row in enumerate(cells):
            out.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


@dataclass
class Section:
    key: str
    title: str
    method: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def markdown(self) -> str:
        parts = [f"## {self.title}", "", self.method.strip(), ""]
        for table in self.tables:
            parts += [table.markdown(), ""]
        for note in self.notes:
            parts += [f"- {note}"]
        if self.notes:
            parts.append("")
        parts.append(f"_Section time: {self.seconds:.1f} s._")
        return "\n".join(parts)

    def text(self) -> str:
        parts = [f"== {self.title} =="]
        for table in self.tables:
            parts += [table.text(), ""]
        parts += [f"* {note}" for note in self.notes]
        return "\n".join(parts)
