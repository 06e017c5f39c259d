"""Shared fixtures: a clean, known environment for every test, and no network, ever."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses

from tests.support.executor import TEST_SIGNING_KEY

# Every variable the project reads; the test environment starts from none of them.
PROJECT_ENV_PREFIXES = (
    "INNGEST_",
    "AMOCRM_",
    "CRM_API_",
    "ERP_",
    "KV_",
    "UPSTASH_",
    "PROMETEI_",
    "VERCEL",
    "PUBLIC_URL",
    "CRM_PUBLIC_URL",
)

TEST_SECRETS = {
    "INNGEST_SIGNING_KEY": TEST_SIGNING_KEY,
    "INNGEST_EVENT_KEY": "test-event-key-0123456789",
    "AMOCRM_ACCESS_TOKEN": "amo-long-lived-token-SECRET-1111",
    "AMOCRM_WEBHOOK_SECRET": "webhook-secret-SECRET-2222",
    "CRM_API_KEY": "erp-api-key-SECRET-3333",
    "CRM_API_PASSWORD": "erp-password-SECRET-4444",
}

BASE_ENV = {
    **TEST_SECRETS,
    "AMOCRM_SUBDOMAIN": "example",
    "AMOCRM_ACCOUNT_ID": "29085955",
    "CRM_API_URL": "https://erp.example.test/api/rest.php",
    "CRM_API_USERNAME": "api",
    "PROMETEI_LOG_FORMAT": "json",
}

ERP_URL = BASE_ENV["CRM_API_URL"]
AMO_BASE = "https://example.amocrm.ru"
EVENT_API = "https://inn.gs/e/" + TEST_SECRETS["INNGEST_EVENT_KEY"]


def pytest_configure(config: pytest.Config) -> None:
    """Configure our logging before pytest adds its capture handlers to the root logger.

    The first `configure_logging` removes the root handlers that were there before it (a
    runtime's); handlers added later stay, so `caplog` keeps working in every test.
    """
    del config
    from prometei.logs import configure_logging

    configure_logging()


@pytest.fixture(autouse=True)
def project_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Start each test from BASE_ENV only; returns the dict so tests can read values."""
    for key in list(os.environ):
        if key.startswith(PROJECT_ENV_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    env = dict(BASE_ENV, PROMETEI_STATE_DIR=str(tmp_path / "state"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from prometei.amocrm import budget
    from prometei.services import reset_services

    reset_services()
    budget.reset_for_tests()  # a 429 in one test must not pause the next one's requests
    yield env
    reset_services()


@pytest.fixture
def set_env(monkeypatch: pytest.MonkeyPatch):
    """Change variables for one test: set_env(NAME="value", OTHER=None) (None unsets)."""
    from prometei.services import reset_services

    def apply(**values: str | None) -> None:
        for key, value in values.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        reset_services()

    return apply


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse any real outbound connection except to loopback (test servers we start)."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address, *args, **kwargs):  # type: ignore[no-untyped-def]
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")):
            return real_connect(self, address, *args, **kwargs)
        if self.family == socket.AF_UNIX:
            return real_connect(self, address, *args, **kwargs)
        raise AssertionError(f"test tried to reach the network: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    """`responses` for every outside HTTP call; requests nobody registered fail the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def amo_account(mock):
    """A stateful fake amoCRM account at AMO_BASE (tests.fakes.amocrm) answering `mock`'s
    requests; it accepts the test long-lived token. Leads are added by the test."""
    from tests.fakes.amocrm import FakeAmoCRM

    fake = FakeAmoCRM(access_tokens=(TEST_SECRETS["AMOCRM_ACCESS_TOKEN"],))
    fake.install(mock, AMO_BASE)
    return fake


@pytest.fixture
def erp(mock):
    """A stateful fake Rukovoditel at ERP_URL (tests.fakes.rukovoditel)."""
    from tests.fakes.rukovoditel import FakeRukovoditel

    return FakeRukovoditel(ERP_URL).install(mock)


@pytest.fixture
def app_client():
    """A test client of the /api/inngest app, built from the current test environment."""
    from prometei.web.apps import create_inngest_app

    return create_inngest_app().test_client()
