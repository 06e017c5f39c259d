"""Wiring: builds each outside-API client once per process from the settings.

Functions and web handlers call `get_services()`; tests call `reset_services()` after changing
the environment, or `use_services(...)` to inject fakes. Imports are lazy so an entrypoint
pays only for the clients it touches (the webhook intake never loads the ERP client).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from prometei.config import Settings, get_settings, reset_settings

if TYPE_CHECKING:
    from prometei.amocrm.client import AmoCRMClient
    from prometei.amocrm.enrich import PipelineNames
    from prometei.erp.client import ERPClient
    from prometei.erp.records import RecordWriter
    from prometei.erp.schema import SchemaCache
    from prometei.events import EventSender
    from prometei.store.base import StateStore, TokenStore
    from prometei.tokens import ManagedTokenSource


T = TypeVar("T")


class _built_once(Generic[T]):
    """Like `cached_property`, but thread-safe: on a warm Vercel instance requests run on
    several threads, and two token providers in one process would each hold their own cache."""

    def __init__(self, factory: Callable[[Any], T]) -> None:
        self.factory = factory
        self.name = factory.__name__
        self.__doc__ = factory.__doc__

    @overload
    def __get__(self, instance: None, owner: type) -> _built_once[T]: ...
    @overload
    def __get__(self, instance: Services, owner: type) -> T: ...
    def __get__(self, instance: Services | None, owner: type) -> T | _built_once[T]:
        if instance is None:
            return self
        with instance._build_lock:
            if self.name not in instance.__dict__:
                instance.__dict__[self.name] = self.factory(instance)
            value: T = instance.__dict__[self.name]
            return value


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._build_lock = threading.RLock()

    @_built_once
    def store(self) -> TokenStore:
        from prometei.store import build_store

        return build_store(self.settings)

    @_built_once
    def state(self) -> StateStore:
        from prometei.store import build_state_store

        return build_state_store(self.settings)

    @_built_once
    def connect_state(self) -> StateStore:
        """The same state store for the OAuth connect page's nonces, with the short per-command
        deadline the callback's time budget counts on (docs/token-rotation.md)."""
        from prometei.store import build_state_store
        from prometei.store.kv import CONNECT_STATE_TIMEOUT

        return build_state_store(self.settings, timeout=CONNECT_STATE_TIMEOUT)

    @_built_once
    def tokens(self) -> ManagedTokenSource:
        from prometei.tokens import build_token_source

        return build_token_source(self.settings, lambda: self.store)

    @_built_once
    def amocrm(self) -> AmoCRMClient:
        """The client of the handler's runs (the `runs` lane of the amoCRM budget)."""
        from prometei.amocrm.client import AmoCRMClient

        return AmoCRMClient.from_settings(self.settings, self.tokens)

    @_built_once
    def amocrm_housekeeping(self) -> AmoCRMClient:
        """The client of the reconcile cron and the operator's one-off commands (doctor,
        webhook register/status): the `reconcile` lane of the amoCRM budget."""
        from prometei.amocrm.client import AmoCRMClient

        return AmoCRMClient.from_settings(self.settings, self.tokens, lane="reconcile")

    @_built_once
    def erp(self) -> ERPClient:
        from prometei.erp.client import ERPClient

        return ERPClient.from_settings(self.settings)

    @_built_once
    def erp_schemas(self) -> SchemaCache:
        """Entity fields and choices, kept ERP_SCHEMA_TTL seconds on this instance."""
        from prometei.erp.schema import SchemaCache

        return SchemaCache(self.erp, self.settings.erp_schema_ttl)

    @_built_once
    def erp_records(self) -> RecordWriter:
        """Checked, typed writes of one ERP record per lead (or deal externalId)."""
        from prometei.erp.records import RecordWriter

        return RecordWriter(
            self.erp,
            self.erp_schemas,
            memory=lambda: self.state,
            tz=self.settings.erp_tzinfo,
        )

    @_built_once
    def pipelines(self) -> PipelineNames:
        """amoCRM pipeline and status names, cached on this instance."""
        from prometei.amocrm.enrich import PipelineNames

        return PipelineNames(self.amocrm)

    @_built_once
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
