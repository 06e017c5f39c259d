"""Vercel entrypoint for /api/webhook (amoCRM webhook intake)."""

from prometei.web.apps import create_webhook_app

app = create_webhook_app()
