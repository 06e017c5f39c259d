"""The browser tier: Debian chromium driven by Playwright, the app in its own process, a fake
amoCRM on loopback. `make browser` installs chromium (apt) and axe-core (npm) first.

Chromium is launched with the binary the system has (`executable_path`, never `playwright
install`), a fresh profile per test, and the flags that keep it off the network; every request
that is not for loopback or amoCRM's authorize page is aborted and fails the test.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.fake_amocrm import CLIENT_ID, CLIENT_SECRET, FakeAmoCRM
from tests.support.loopback import serving

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY_TIMEOUT_S = 30.0
SETUP_HINT = "run `make browser`: it installs chromium (apt) and axe-core (npm) first"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    for candidate in (os.environ.get("CHROMIUM_PATH"), "/usr/lib/chromium/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(f"no chromium on this machine; {SETUP_HINT}")
    return found


@pytest.fixture(scope="session")
def axe_source() -> str:
    path = Path(os.environ.get("AXE_CORE_JS", ROOT / ".venv/axe/node_modules/axe-core/axe.min.js"))
    if not path.is_file():
        pytest.fail(f"axe-core is not installed at {path}; {SETUP_HINT}")
    return path.read_text()


@pytest.fixture
def fake_amo() -> Iterator[FakeAmoCRM]:
    fake = FakeAmoCRM()
    with serving(fake, "fake-amocrm") as url:
        # The browser reaches it as "localhost": another site than the app's 127.0.0.1, so
        # the return from amoCRM is a cross-site navigation, as in real life (SameSite=Lax).
        fake.url = url.replace("127.0.0.1", "localhost")
        fake.loopback_url = url
        yield fake


@dataclass
class AppServer:
    base: str
    process: subprocess.Popen[str]
    state_dir: Path
    output: list[str] = field(default_factory=list)

    @property
    def connect_page(self) -> str:
        return f"{self.base}/api/oauth/callback"

    def tokens_stored(self) -> bool:
        return any(self.state_dir.glob("*token*"))


@pytest.fixture
def app(fake_amo: FakeAmoCRM, tmp_path: Path) -> Iterator[AppServer]:
    state_dir = tmp_path / "state"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "AMOCRM_SUBDOMAIN": "example",
        "AMOCRM_CLIENT_ID": CLIENT_ID,
        "AMOCRM_CLIENT_SECRET": CLIENT_SECRET,
        "AMOCRM_WEBHOOK_SECRET": "browser-webhook-secret-SECRET",
        "INNGEST_DEV": "1",
        "PROMETEI_STATE_DIR": str(state_dir),
        "PROMETEI_LOG_FORMAT": "text",
    }
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tests.browser.app_server", fake_amo.loopback_url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=pump, name="app-output", daemon=True).start()
    base = _wait_for_ready(process, lines, output)
    fake_amo.redirect_uri = f"{base}/api/oauth/callback"
    server = AppServer(base, process, state_dir, output)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_for_ready(
    process: subprocess.Popen[str], lines: queue.Queue[str], output: list[str]
) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line.startswith("READY "):
            return line.split()[1]
    process.kill()
    pytest.fail("the app did not start:\n" + "".join(output))


@dataclass
class Browser:
    """One browser profile (a persistent Chromium context) and what it saw."""

    context: Any
    console_errors: list[tuple[str, str]] = field(default_factory=list)  # (url, text)
    outside_requests: list[str] = field(default_factory=list)
    refused_documents: set[str] = field(default_factory=set)

    def new_page(self) -> Any:
        page = self.context.pages[0] if self.context.pages else self.context.new_page()

        def on_console(message: Any) -> None:
            if message.type == "error":
                self.console_errors.append((message.location.get("url", ""), message.text))

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.console_errors.append(("", str(error))))
        return page

    def refused(self, url: str) -> None:
        """This document was meant to answer 4xx: Chromium's own "Failed to load resource"
        line for it is expected; any other console error is not."""
        self.refused_documents.add(url)

    def unexpected_console_errors(self) -> list[tuple[str, str]]:
        return [
            (url, text)
            for url, text in self.console_errors
            if not (
                url in self.refused_documents
                and text.startswith("Failed to load resource: the server responded with a status")
            )
        ]


VIEWPORTS = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "mobile-360": {
        "viewport": {"width": 360, "height": 740},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 2,
    },
    "mobile-390": {
        "viewport": {"width": 390, "height": 844},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 3,
    },
}


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def launch(playwright_driver: Any, chromium_path: str, fake_amo: FakeAmoCRM, tmp_path: Path):
    """`launch(viewport="desktop", locale="ru-RU")` -> a Browser with a fresh profile."""
    opened: list[Any] = []
    fake_origin = fake_amo.url

    def start(viewport: str = "desktop", locale: str = "ru-RU") -> Browser:
        profile = tmp_path / f"profile-{len(opened)}"
        context = playwright_driver.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium_path,
            args=CHROMIUM_FLAGS,
            headless=True,
            locale=locale,
            **VIEWPORTS[viewport],
        )
        opened.append(context)
        browser = Browser(context)

        def route(route: Any) -> None:
            url = route.request.url
            host = urlsplit(url).hostname
            if host in ("127.0.0.1", "localhost"):
                route.continue_()
            elif url.startswith("https://www.amocrm.ru/oauth"):
                # amoCRM's consent page is the fake's; the query (client_id, state) is kept.
                location = f"{fake_origin}/oauth?{urlsplit(url).query}"
                route.fulfill(status=302, headers={"Location": location})
            else:
                browser.outside_requests.append(url)
                route.abort()

        context.route("**/*", route)
        return browser

    yield start
    for context in opened:
        context.close()
