"""Vercel entrypoint for /api/oauth/callback (connect page and OAuth code exchange)."""

from prometei.web.apps import create_oauth_app

app = create_oauth_app()
