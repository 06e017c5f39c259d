"""Inngest functions (one module each) and the list every serve endpoint registers."""

from __future__ import annotations

from typing import Any

import inngest


def all_functions() -> list[inngest.Function[Any]]:
    from prometei.functions.lead_sync import amocrm_webhook_handler

    return [amocrm_webhook_handler]
