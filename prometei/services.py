"""Wiring: builds each outside-API client once per process from the settings.

Functions and web handlers call `get_services()`; tests call `reset_services()` after changing
the environment, or `use_services(...)` to inject fakes. Imports are lazy so an entrypoint
pays only for the clients it touches (the webhook intake never loads the ERP client).
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING

from prometei.config import Settings, get_settings, reset_settings

if TYPE_CHECKING:
    from prometei.amocrm.client import AmoCRMClient
    from prometei.erp.client import ERPClient
    from prometei.events import EventSender
    from prometei.store.base import TokenStore
    from prometei.tokens import ManagedTokenSource


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def store(self) -> TokenStore:
        from prometei.store import build_store

        return build_store(self.settings)

    @cached_property
    def tokens(self) -> ManagedTokenSource:
        from prometei.tokens import build_token_source

        return build_token_source(self.settings, lambda: self.store)

    @cached_property
    def amocrm(self) -> AmoCRMClient:
        from prometei.amocrm.client import AmoCRMClient

        return AmoCRMClient.from_settings(self.settings, self.tokens)

    @cached_property
    def erp(self) -> ERPClient:
        from prometei.erp.client import ERPClient

        return ERPClient.from_settings(self.settings)

    @cached_property
    def events(self) -> EventSender:
        from prometei.events import EventSender

        return EventSender.from_settings(self.settings)


_lock = threading.Lock()
_services: Services | None = None


def get_services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = Services(get_settings())
        return _services


def use_services(services: Services | None) -> None:
    """Replace the process-wide services (tests); None rebuilds them on next use."""
    global _services
    with _lock:
        _services = services


def reset_services() -> None:
    """Forget cached settings and clients; the next `get_services()` re-reads the env."""
    reset_settings()
    use_services(None)
