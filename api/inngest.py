"""Vercel entrypoint for /api/inngest (Inngest serve endpoint; amoCRM form POSTs too)."""

from prometei.web.apps import create_inngest_app

app = create_inngest_app()
