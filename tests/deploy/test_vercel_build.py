"""What `vercel build` publishes and bundles, with a dummy .env, .prometei/ and .venv present."""

from __future__ import annotations

import json
import re

from tests.deploy.vercel_build import MARKER, PLANTED, ROOT, BuildResult, upload_list

# The three entrypoints of DESIGN.md plus the old project's intake URL (issue 15); nothing else
# may become a function.
FUNCTIONS = {"api/inngest", "api/webhook", "api/oauth/callback", "api/amocrm-webhook"}
# Inside a bundle, besides the vendored packages: our entrypoints and the package they import.
BUNDLE_SOURCE = re.compile(r"^(api/[\w/-]+\.py|prometei/[\w/]+\.py)$")
# Packages the builder adds to every bundle on its own (not from requirements.txt).
BUILDER_PACKAGES = {"vercel-runtime", "pip"}
NEVER_BUNDLED = re.compile(
    r"(^|/)(\.env[^/]*|\.prometei|\.venv[^/]*|tests|bench|docs|\.ci|node_modules|\.git)(/|$)"
    r"|\.md$|^requirements[^/]*$|^(Makefile|pyproject\.toml|uv\.lock|vercel\.json|notes\.txt)$"
)


def _vercel_json() -> dict:
    return json.loads((ROOT / "vercel.json").read_text(encoding="utf-8"))


def _own_files(build: BuildResult, route: str) -> list[str]:
    return [path for path in build.functions[route].file_map if not path.startswith("_vendor/")]


def test_exactly_the_four_functions(build: BuildResult) -> None:
    assert set(build.functions) == FUNCTIONS


def test_each_function_runs_python_312_with_the_duration_from_vercel_json(
    build: BuildResult,
) -> None:
    durations = {
        key.removesuffix(".py"): value["maxDuration"]
        for key, value in _vercel_json()["functions"].items()
    }
    assert set(durations) == FUNCTIONS
    for route, function in build.functions.items():
        assert function.config["runtime"] == "python3.12", route
        assert function.config["maxDuration"] == durations[route], route


def test_the_static_output_is_the_public_folder_and_nothing_else(build: BuildResult) -> None:
    public = {
        path.relative_to(build.project / "public").as_posix()
        for path in (build.project / "public").rglob("*")
        if path.is_file()
    }
    assert public  # an intentional static folder exists (robots.txt); without one Vercel
    # publishes the whole repository root
    assert build.static_files == public


def test_bundles_hold_only_our_entrypoints_our_package_and_vendored_packages(
    build: BuildResult,
) -> None:
    for route in FUNCTIONS:
        own = _own_files(build, route)
        assert f"{route}.py" in own
        assert "prometei/config.py" in own
        assert [path for path in own if not BUNDLE_SOURCE.match(path)] == [], route
        assert [path for path in own if NEVER_BUNDLED.search(path)] == [], route
        extra = {
            path.name
            for path in build.functions[route].directory.iterdir()
            if path.name not in (".vc-config.json", "vc__handler__python.py")
        }
        assert extra == set(), route


def test_no_planted_file_or_value_reaches_the_output(build: BuildResult) -> None:
    assert all((build.project / relative).is_file() for relative in PLANTED)  # still there
    sources = {
        source for function in build.functions.values() for source in function.file_map.values()
    }
    for relative in PLANTED:
        assert relative not in sources
    leaked = [
        path
        for path in [
            *(p for p in build.output.rglob("*") if p.is_file()),
            *(build.project / source for source in sources),
        ]
        if MARKER.encode() in path.read_bytes()
    ]
    assert leaked == []


def test_vercel_deploy_would_upload_only_what_the_build_needs(build: BuildResult) -> None:
    uploaded = upload_list(build.project)
    assert "api/inngest.py" in uploaded
    assert "prometei/config.py" in uploaded
    assert "requirements.txt" in uploaded
    needed = re.compile(
        r"^(api/|prometei/|public/|requirements\.txt$|\.python-version$|vercel\.json$)"
    )
    assert [path for path in uploaded if not needed.match(path)] == []
    assert set(uploaded) & set(PLANTED) == set()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith((" ", "#")):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_vendored_packages_are_exactly_the_pinned_set(build: BuildResult) -> None:
    pins = _pins()
    for route, function in build.functions.items():
        vendored = {}
        for path in function.file_map:
            match = re.match(r"^_vendor/([^/]+)-([^/-]+)\.dist-info/METADATA$", path)
            if match:
                vendored[match.group(1).lower().replace("_", "-")] = match.group(2)
        ours = {name: version for name, version in vendored.items() if name not in BUILDER_PACKAGES}
        assert ours == pins, route
        assert "vercel-runtime" in vendored, route


def test_readme_names_what_the_build_produces(build: BuildResult) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    deploy = readme[readme.index("## Deploy to Vercel") :]
    deploy = deploy[: deploy.index("\n## ", 1)]
    for route in build.functions:
        assert f"`{route}.py`" in deploy
    for static in build.static_files:
        assert f"public/{static}" in deploy
