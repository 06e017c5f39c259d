"""`serve`: every endpoint in one local process, wired to the Inngest dev server."""

from __future__ import annotations

import os

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run /api/inngest, /api/webhook and /api/oauth/callback on one local server.

    The old version's intake URL, /api/amocrm-webhook, is served too (same rules as
    /api/webhook).

    INNGEST_DEV defaults to 1 here, so no Inngest keys are needed. Pair it with the dev server:

      npx inngest-cli@latest dev -u http://127.0.0.1:3000/api/inngest

    \b
    Examples:
      python -m prometei serve
      python -m prometei serve --port 3001
      python -m prometei --env-file .env.local serve --host 0.0.0.0
    """
    from prometei.services import reset_services
    from prometei.web.apps import create_local_app

    # Local runs are development runs unless the operator says otherwise.
    os.environ.setdefault("INNGEST_DEV", "1")
    reset_services()
    app = create_local_app()
    click.echo(f"prometei listening on http://{host}:{port}")
    for path in ("/api/inngest", "/api/webhook", "/api/oauth/callback", "/api/amocrm-webhook"):
        click.echo(f"  http://{host}:{port}{path}")
    app.run(host=host, port=port, debug=False, use_reloader=False, threaded=True)
