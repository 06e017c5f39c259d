"""Vercel entrypoint for /api/amocrm-webhook: the TypeScript version's intake URL.

Same intake as /api/webhook; without ?token= it is refused (naming the URL to use instead)
unless AMOCRM_WEBHOOK_ALLOW_LEGACY_URL=1. The file name is the URL: Vercel serves
api/amocrm-webhook.py at /api/amocrm-webhook and loads it by path, so the hyphen is fine.
"""

from prometei.web.apps import create_webhook_app

app = create_webhook_app()
