"""The Inngest client.

Functions are declared against `definitions`, which stands in for a client (only the app id is
used): an `inngest.Function` does not keep the client that made it, so the real, configured
client is built later by `build_client(settings)` when an entrypoint serves the functions.
Importing a function module therefore never reads the environment.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import inngest

from prometei.config import APP_ID, Settings


class _FunctionDefinitions:
    """Stands in for a client when declaring functions.

    `Inngest.create_function` reads nothing but `app_id`, while building a real client creates
    its HTTP clients (and loads the CA bundle): ~50 ms of every /api/inngest cold start for a
    client that would never send anything.
    """

    app_id = APP_ID

    def create_function(self, **options: Any) -> Any:
        return inngest.Inngest.create_function(cast(inngest.Inngest, self), **options)


definitions = cast(inngest.Inngest, _FunctionDefinitions())


def build_client(settings: Settings) -> inngest.Inngest:
    """The serving client: cloud mode unless INNGEST_DEV, keys from the settings."""
    signing_key = settings.inngest_signing_key
    event_key = settings.inngest_event_key
    return inngest.Inngest(
        app_id=APP_ID,
        is_production=not settings.is_dev,
        signing_key=signing_key.get_secret_value() if signing_key else None,
        event_key=event_key.get_secret_value() if event_key else None,
        event_api_base_url=settings.event_api_origin,
        api_base_url=settings.api_origin,
        # Named "inngest" so the probe-noise filter in prometei.logs recognises SDK lines.
        logger=logging.getLogger("inngest"),
    )
