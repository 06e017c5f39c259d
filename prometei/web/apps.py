"""Flask app factories: one per Vercel entrypoint, plus the local all-in-one app.

Each factory is cheap and safe to call at import time. A configuration problem does not crash
the import (on Vercel that would answer every request with an opaque 500): the app answers 503
with a JSON message naming the variable to fix, and logs it once.
"""

from __future__ import annotations

import logging

import flask

from prometei.config import get_settings
from prometei.errors import ConfigError
from prometei.logs import configure_logging
from prometei.web.executor import INNGEST_PATH as EXECUTOR_PATH
from prometei.web.responses import json_error

log = logging.getLogger(__name__)

# The other paths belong to their blueprints: intake.WEBHOOK_PATH, oauth_page.CALLBACK_PATH.
INNGEST_PATH = EXECUTOR_PATH


def _setup_logging() -> ConfigError | None:
    try:
        settings = get_settings()
    except ConfigError as exc:
        configure_logging()
        log.error("configuration error: %s", exc.message)
        return exc
    configure_logging(
        level=settings.log_level, fmt=settings.log_format, secrets=settings.secret_values()
    )
    return None


def _broken(app: flask.Flask, path: str, methods: list[str], problem: ConfigError) -> None:
    def answer() -> flask.Response:
        return json_error(503, f"server misconfigured: {problem.message}")

    app.add_url_rule(path, endpoint=f"broken:{path}", view_func=answer, methods=methods)


def _new_app() -> flask.Flask:
    app = flask.Flask("prometei")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    return app


def _mount_inngest(app: flask.Flask) -> None:
    import inngest.flask

    from prometei.functions import all_functions
    from prometei.functions.client import build_client
    from prometei.web.executor import guard_executor_request, is_amocrm_form_post

    served: list[bool] = []  # set once the SDK serves the path; a broken setup answers 503

    @app.before_request
    def guard_inngest_path() -> flask.Response | None:
        request = flask.request
        if request.path != INNGEST_PATH:
            return None
        if is_amocrm_form_post(request):
            # Imported here: most /api/inngest instances only ever see executor calls.
            from prometei.web.intake import handle_webhook

            response: flask.Response = handle_webhook()
            return response
        return guard_executor_request(get_settings()) if served else None

    try:
        settings = get_settings()
        client = build_client(settings)
        origin = settings.serve_origin
        inngest.flask.serve(
            app,
            client,
            all_functions(settings),
            serve_path=INNGEST_PATH,
            # Never the request's Host header (see prometei.web.executor).
            serve_origin=origin[0] if origin else None,
            # Cloud mode: a sync must be signed (dev mode always allows it).
            enable_unauthed_sync=settings.is_dev,
        )
        served.append(True)
    except ConfigError as exc:
        _broken(app, INNGEST_PATH, ["GET", "POST", "PUT"], exc)
    except Exception as exc:  # the SDK's errors are not exported; SigningKeyMissingError here
        message = (
            "INNGEST_SIGNING_KEY is not set: copy it from the Inngest dashboard (or install "
            "Inngest's Vercel integration), or set INNGEST_DEV=1 for local development"
            if "signingkey" in type(exc).__name__.lower() or "signing key" in str(exc).lower()
            else f"Inngest setup failed ({type(exc).__name__}); see the function logs"
        )
        log.error("inngest serve failed: %s", message)
        _broken(app, INNGEST_PATH, ["GET", "POST", "PUT"], ConfigError(message))


def _mount_webhook(app: flask.Flask) -> None:
    from prometei.web.intake import intake_blueprint

    app.register_blueprint(intake_blueprint)


def _mount_oauth(app: flask.Flask) -> None:
    from prometei.web.oauth_page import oauth_blueprint

    app.register_blueprint(oauth_blueprint)


def create_inngest_app() -> flask.Flask:
    """`/api/inngest`: the Inngest serve endpoint (plus amoCRM form POSTs, see DESIGN 3.2)."""
    app = _new_app()
    problem = _setup_logging()
    if problem:
        _broken(app, INNGEST_PATH, ["GET", "POST", "PUT"], problem)
        return app
    _mount_inngest(app)
    return app


def create_webhook_app() -> flask.Flask:
    """`/api/webhook`: amoCRM webhook intake and its GET readiness report."""
    app = _new_app()
    _setup_logging()
    _mount_webhook(app)
    return app


def create_oauth_app() -> flask.Flask:
    """`/api/oauth/callback`: the connect page and the OAuth code exchange."""
    app = _new_app()
    _setup_logging()
    _mount_oauth(app)
    return app


def create_local_app() -> flask.Flask:
    """Every endpoint in one app, for `python -m prometei serve`."""
    app = _new_app()
    problem = _setup_logging()
    _mount_webhook(app)
    _mount_oauth(app)
    if problem:
        _broken(app, INNGEST_PATH, ["GET", "POST", "PUT"], problem)
    else:
        _mount_inngest(app)
    return app
