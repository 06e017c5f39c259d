"""Cold start of each api/*.py against the floor (a fresh interpreter importing only the deps).

Every sample is a new `python` process. Subjects run in a rotating order inside each round, so
a noisy moment hits the floor and the subjects alike. Wall time is measured by the parent from
spawn to exit (interpreter start included, identical for all); peak RSS is the child's own
`ru_maxrss` as reported by `os.wait4` (per child, so samples never mix). The child imports an
api file the way Vercel's trampoline does: `spec_from_file_location("api.webhook", path)` with
the repository root first on `sys.path`, in cloud mode with dummy keys (so `serve()` runs).

Two bytecode situations are measured: `.pyc` available (as with `VERCEL_PYTHON_COMPILEALL=1`
or any warm disk), and no `.pyc` for third-party and project code (Vercel's default: the
runtime sets PYTHONDONTWRITEBYTECODE and ships no `__pycache__`; reference vercel-kv.md A2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import time
from collections import defaultdict
from dataclasses import dataclass

from bench import PYTHON, ROOT, Section, Table, clean_env, median, ratio, verdict

FLOOR = ("floor", "flask, requests, pydantic, inngest, inngest.flask")
LEAN_FLOOR = ("floor-lean", "flask, requests, pydantic")
SUBJECTS = [
    ("api/webhook.py", "api.webhook"),
    ("api/inngest.py", "api.inngest"),
    ("api/oauth/callback.py", "api.oauth.callback"),
]
TIME_TARGET = 1.15
MEMORY_TARGET = 1.10

# Runs inside the fresh interpreter. argv: kind ("modules" | "file"), what, nopyc ("0"/"1").
CHILD = r"""
import sys, time
kind, what, nopyc = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
root = sys.argv[4]
if nopyc:
    import importlib.machinery as m
    roots = tuple(p for p in sys.argv[5:] if p)
    class NoPycLoader(m.SourceFileLoader):
        def get_code(self, fullname):
            path = self.get_filename(fullname)
            return compile(self.get_data(path), path, "exec", dont_inherit=True)
    def hook(path):
        if path.startswith(roots):
            return m.FileFinder(
                path,
                (m.ExtensionFileLoader, m.EXTENSION_SUFFIXES),
                (NoPycLoader, m.SOURCE_SUFFIXES),
            )
        raise ImportError(path)
    sys.path_hooks.insert(0, hook)
    sys.path_importer_cache.clear()
sys.path.insert(0, root)
t0 = time.perf_counter()
if kind == "modules":
    import importlib
    for name in what.split(","):
        importlib.import_module(name.strip())
    broken = []
else:
    import importlib.util
    name, path = what.split("=", 1)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    app = getattr(module, "app")
    broken = [r.endpoint for r in app.url_map.iter_rules() if r.endpoint.startswith("broken:")]
elapsed = time.perf_counter() - t0
import json
print(json.dumps({
    "import_s": elapsed,
    "modules": len(sys.modules),
    "inngest": "inngest" in sys.modules,
    "broken": broken,
}))
"""


@dataclass
class Sample:
    wall_s: float
    import_s: float
    rss_kb: int
    modules: int
    inngest: bool
    broken: list[str]


def _argv(subject: str, nopyc: bool) -> list[str]:
    if subject in (FLOOR[0], LEAN_FLOOR[0]):
        what = FLOOR[1] if subject == FLOOR[0] else LEAN_FLOOR[1]
        kind = "modules"
    else:
        name = dict(SUBJECTS)[subject]
        kind, what = "file", f"{name}={ROOT / subject}"
    roots = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(ROOT)]
    return [PYTHON, "-c", CHILD, kind, what, "1" if nopyc else "0", str(ROOT), *roots]


def sample(subject: str, *, nopyc: bool = False) -> Sample:
    env = clean_env(PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)  # the child puts the root first itself, like the trampoline
    start = time.perf_counter()
    proc = subprocess.Popen(
        _argv(subject, nopyc), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
    )
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise RuntimeError(f"cold start of {subject} failed:\n{err.decode(errors='replace')}")
    data = json.loads(out.decode().strip().splitlines()[-1])
    return Sample(
        wall, data["import_s"], usage.ru_maxrss, data["modules"], data["inngest"], data["broken"]
    )


def import_profile(subject: str, top: int = 8) -> list[tuple[str, float]]:
    """Self import time by top-level package (`python -X importtime`), biggest first."""
    env = clean_env(PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [PYTHON, "-X", "importtime", *_argv(subject, False)[1:]],
        capture_output=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    per_package: dict[str, float] = defaultdict(float)
    for line in proc.stderr.decode().splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line.split(":", 1)[1].split("|")
        per_package[name.strip().split(".")[0]] += int(self_us) / 1e6
    return sorted(per_package.items(), key=lambda kv: kv[1], reverse=True)[:top]


CLIENT_COST = r"""
import time, inngest, inngest.flask
t0 = time.perf_counter()
inngest.Inngest(app_id="bench-a", is_production=False)
t1 = time.perf_counter()
inngest.Inngest(app_id="bench-b", is_production=True, signing_key="signkey-test-00")
t2 = time.perf_counter()
print((t1 - t0) * 1000, (t2 - t1) * 1000)
"""


def client_cost_ms(rounds: int = 3) -> float:
    """Median cost of constructing one `inngest.Inngest` client in a fresh interpreter."""
    env = clean_env()
    samples = []
    for _ in range(rounds):
        out = subprocess.run(
            [PYTHON, "-c", CLIENT_COST], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
        samples += [float(v) for v in out]
    return median(samples)


def run(quick: bool = False) -> Section:
    started = time.perf_counter()
    rounds_pyc = 5 if quick else 15
    rounds_nopyc = 3 if quick else 7
    subjects = [FLOOR[0], LEAN_FLOOR[0], *(path for path, _ in SUBJECTS)]
    # Warm the page cache (and check that every subject loads) before measuring.
    for subject in subjects:
        sample(subject)

    tables = []
    notes: list[str] = []
    inngest_loaded: dict[str, bool] = {}
    modules: dict[str, int] = {}
    for nopyc, rounds in ((False, rounds_pyc), (True, rounds_nopyc)):
        results: dict[str, list[Sample]] = defaultdict(list)
        for n in range(rounds):
            shift = n % len(subjects)
            for subject in subjects[shift:] + subjects[:shift]:
                results[subject].append(sample(subject, nopyc=nopyc))
        floor_wall = median(s.wall_s for s in results[FLOOR[0]])
        floor_rss = median(s.rss_kb for s in results[FLOOR[0]])
        lean_wall = median(s.wall_s for s in results[LEAN_FLOOR[0]])
        lean_rss = median(s.rss_kb for s in results[LEAN_FLOOR[0]])
        table = Table(
            [
                "subject",
                "wall ms (median)",
                "import ms",
                "peak RSS MiB",
                "time vs floor",
                "memory vs floor",
                f"≤{TIME_TARGET}x time",
                f"≤{MEMORY_TARGET}x memory",
                "modules",
                "inngest imported",
            ],
            caption=(
                f"**{'No .pyc (Vercel default)' if nopyc else 'With .pyc'}** — "
                f"median of {rounds} runs per subject"
            ),
        )
        for subject in subjects:
            samples = results[subject]
            wall = median(s.wall_s for s in samples)
            rss = median(s.rss_kb for s in samples)
            is_subject = subject not in (FLOOR[0], LEAN_FLOOR[0])
            broken = sorted({b for s in samples for b in s.broken})
            if broken:
                notes.append(f"{subject}: endpoints answered by the 503 fallback: {broken}")
            label = subject if subject != FLOOR[0] else f"floor ({FLOOR[1]})"
            if subject == LEAN_FLOOR[0]:
                label = f"lean floor ({LEAN_FLOOR[1]}), reference only"
            table.add(
                label,
                wall * 1000,
                median(s.import_s for s in samples) * 1000,
                rss / 1024,
                ratio(wall, floor_wall),
                ratio(rss, floor_rss),
                verdict(wall / floor_wall <= TIME_TARGET) if is_subject else "-",
                verdict(rss / floor_rss <= MEMORY_TARGET) if is_subject else "-",
                samples[-1].modules,
                "yes" if samples[-1].inngest else "no",
            )
            inngest_loaded[subject] = samples[-1].inngest
            modules[subject] = samples[-1].modules
        tables.append(table)
        webhook = results["api/webhook.py"]
        notes.append(
            f"{'no .pyc' if nopyc else 'with .pyc'}: api/webhook.py against the lean floor "
            f"(what the intake really needs): time "
            f"{ratio(median(s.wall_s for s in webhook), lean_wall)}, memory "
            f"{ratio(median(s.rss_kb for s in webhook), lean_rss)}"
        )

    if not inngest_loaded.get("api/webhook.py", True):
        notes.insert(
            0,
            "The intake starts without the Inngest SDK: api/webhook.py never imports `inngest` "
            "(it sends events with `requests`), so it starts below the floor.",
        )
    notes.append(
        "api/inngest.py must build one configured `inngest.Inngest` client and call "
        f"`serve()` at import; the client alone costs {client_cost_ms():.0f} ms in a fresh "
        "interpreter (it builds httpx clients that load the CA bundle), which the floor "
        "(imports only) does not pay. Functions are declared without a second client "
        "(prometei/functions/client.py)."
    )
    profile = Table(
        ["entrypoint", "top packages by self import time (`python -X importtime`, with .pyc)"],
        caption="**Where the import time goes**",
    )
    for subject, _ in SUBJECTS:
        top = import_profile(subject)
        profile.add(subject, ", ".join(f"{name} {secs * 1000:.0f} ms" for name, secs in top))
    tables.append(profile)
    return Section(
        key="coldstart",
        title="1. Cold start",
        method=__doc__ or "",
        tables=tables,
        notes=notes,
        seconds=time.perf_counter() - started,
    )


if __name__ == "__main__":
    section = run(quick=True)
    print(section.text())
