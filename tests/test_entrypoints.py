"""The bundle as Vercel sees it: files under api/ loaded by path, vercel.json, manifests."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import flask
import pytest

from tests.conftest import TEST_SECRETS

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINTS = {
    "/api/inngest": ROOT / "api" / "inngest.py",
    "/api/webhook": ROOT / "api" / "webhook.py",
    "/api/amocrm-webhook": ROOT / "api" / "amocrm-webhook.py",
    "/api/oauth/callback": ROOT / "api" / "oauth" / "callback.py",
}


def load_like_vercel(path: Path) -> ModuleType:
    """Import one api/ file the way Vercel's Python runtime does: by file path, under a dotted
    module name, with the bundle root first on sys.path."""
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec.loader.exec_module(module)
    return module


def test_every_function_file_is_listed() -> None:
    # Vercel makes a function of every api/**/*.py whose path has no "/_" segment.
    found = {
        p for p in (ROOT / "api").rglob("*.py") if not any(part.startswith("_") for part in p.parts)
    }
    assert found == set(ENTRYPOINTS.values())


@pytest.mark.parametrize("public_path", sorted(ENTRYPOINTS))
def test_entrypoint_exposes_a_module_level_flask_app(public_path: str) -> None:
    module = load_like_vercel(ENTRYPOINTS[public_path])
    assert isinstance(module.app, flask.Flask)
    routes = {rule.rule for rule in module.app.url_map.iter_rules()}
    # Flask sees the full request path on Vercel, so the app must route it, not "/".
    assert public_path in routes


def test_webhook_entrypoint_answers_on_its_full_path() -> None:
    app = load_like_vercel(ENTRYPOINTS["/api/webhook"]).app
    response = app.test_client().post("/api/webhook", data=b"x", content_type="text/plain")
    assert response.status_code == 415
    assert "error" in response.get_json()
    assert app.test_client().post("/api/webhook/extra").status_code == 404


def test_inngest_entrypoint_refuses_unsigned_requests_in_cloud_mode() -> None:
    app = load_like_vercel(ENTRYPOINTS["/api/inngest"]).app
    client = app.test_client()
    assert client.get("/api/inngest").status_code == 401
    response = client.post(
        "/api/inngest?fnId=prometei-ingest-amocrm-webhook-handler&stepId=step",
        json={"event": {}},
    )
    assert response.status_code == 401


def test_inngest_entrypoint_without_signing_key_answers_503_naming_it(set_env) -> None:
    set_env(INNGEST_SIGNING_KEY=None)
    app = load_like_vercel(ENTRYPOINTS["/api/inngest"]).app
    response = app.test_client().get("/api/inngest")
    assert response.status_code == 503
    assert "INNGEST_SIGNING_KEY" in response.get_json()["error"]


def test_oauth_entrypoint_serves_the_connect_page() -> None:
    app = load_like_vercel(ENTRYPOINTS["/api/oauth/callback"]).app
    response = app.test_client().get("/api/oauth/callback")
    assert response.status_code in (200, 503)
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    for secret in TEST_SECRETS.values():
        assert secret not in body


def test_vercel_json_keeps_framework_null_and_covers_every_function() -> None:
    config = json.loads((ROOT / "vercel.json").read_text())
    # Without this, Flask in requirements.txt switches Vercel to its Flask preset, which
    # ignores api/*.py and serves a single app instead.
    assert "framework" in config and config["framework"] is None
    functions = config["functions"]
    assert set(functions) == {str(p.relative_to(ROOT)) for p in ENTRYPOINTS.values()}
    for options in functions.values():
        assert 1 <= options["maxDuration"] <= 800
        # Allow-list: bundles hold api/ and prometei/ only (make deploy-check builds and looks).
        assert options["excludeFiles"] == "{!(api|prometei)/**,!(api|prometei)}"
    # Without files in public/, Vercel would publish the whole repository root as static pages.
    assert config["outputDirectory"] == "public"
    assert any(path.is_file() for path in (ROOT / "public").rglob("*"))


def test_python_version_and_no_competing_manifest() -> None:
    assert (ROOT / ".python-version").read_text().strip() == "3.12"
    # Vercel reads pyproject.toml before requirements.txt; one here would replace our pins.
    assert not (ROOT / "pyproject.toml").exists()
    assert not (ROOT / "api" / "requirements.txt").exists()
