"""The connect flow in a real headless Chromium, end to end, on desktop and phone widths.

Status page → "Подключить amoCRM" (the start URL: the state and the cookie, then a 303) →
amoCRM's consent page (the fake) → "Разрешить" → the callback with a code → the code exchange at
the fake → 303 → the status page. Every page on the way is checked: no console errors, axe-core
finds no violations, the layout holds (no sideways scrolling; a value that fits its box is not
broken mid-word), nothing secret on screen.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.browser.conftest import AppServer, Browser
from tests.browser.fake_amocrm import FakeAmoCRM

# Layout facts, measured in the page.
_LAYOUT_JS = """
() => {
  const sideways = document.scrollingElement.scrollWidth - window.innerWidth;
  const broken = [];
  for (const dd of document.querySelectorAll('dd')) {
    const text = dd.textContent.trim();
    if (/\\s/.test(text)) continue;  // single tokens (hosts, ids) that fit a line of the list
    const probe = document.createElement('span');
    probe.style.whiteSpace = 'nowrap';
    probe.textContent = text;
    dd.appendChild(probe);
    const fits = probe.getBoundingClientRect().width <= dd.parentElement.clientWidth;
    probe.remove();
    const range = document.createRange();
    range.selectNodeContents(dd);
    const lines = new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
    if (fits && lines > 1) broken.push(text);
  }
  const wrap = (selector) => [...document.querySelectorAll(selector)]
    .map(e => getComputedStyle(e).overflowWrap);
  return {sideways, broken, paragraphs: wrap('p'), values: wrap('dd')};
}
"""

_AXE_JS = """
async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)
  }));
}
"""


def check_page(page: Any, axe_source: str, fake: FakeAmoCRM) -> None:
    """axe-core clean, layout holding, no code or token in the text."""
    page.evaluate(axe_source)
    violations = page.evaluate(_AXE_JS)
    assert violations == [], f"{page.url}: {violations}"
    layout = page.evaluate(_LAYOUT_JS)
    assert layout["sideways"] <= 0, f"{page.url} scrolls sideways by {layout['sideways']} px"
    assert layout["broken"] == [], f"{page.url} breaks {layout['broken']} mid-word"
    assert "anywhere" not in layout["paragraphs"]  # prose breaks only an overlong word
    assert set(layout["values"]) <= {"anywhere"}
    text = page.inner_text("body")
    for secret in [*fake.issued, *fake.live_codes, "SECRET"]:
        assert secret not in text


def assert_clean(browser: Browser) -> None:
    assert browser.unexpected_console_errors() == []
    assert browser.outside_requests == []


def authorize_state(page: Any, fake: FakeAmoCRM) -> str:
    """Click Connect on the status page and take the state from amoCRM's consent page URL."""
    assert page.get_attribute("a.button", "href").endswith("/api/oauth/callback?start=1")
    page.click("text=Подключить amoCRM")
    page.wait_for_selector("#allow")
    assert page.url.startswith(fake.url + "/oauth?")
    return parse_qs(urlsplit(page.url).query)["state"][0]


def connect_cookies(browser: Browser) -> list[dict[str, Any]]:
    return [c for c in browser.context.cookies() if c["name"] == "prometei_connect"]


@pytest.mark.parametrize("viewport", ["desktop", "mobile-360", "mobile-390"])
def test_connect_end_to_end_and_a_reload_spends_nothing(
    launch, app: AppServer, fake_amo: FakeAmoCRM, axe_source: str, viewport: str
):
    browser = launch(viewport)
    page = browser.new_page()

    response = page.goto(app.connect_page)
    assert response.status == 200
    assert page.get_attribute("html", "lang") == "ru"
    assert "Не подключено" in page.inner_text("main")  # noqa: RUF001
    check_page(page, axe_source, fake_amo)
    assert connect_cookies(browser) == []  # a mere view issues nothing

    page.click("text=Подключить amoCRM")  # ?start=1: state + cookie, 303 to amoCRM
    page.wait_for_selector("#allow")  # amoCRM's consent page (the fake)
    assert page.url.startswith(fake_amo.url + "/oauth?")
    [cookie] = connect_cookies(browser)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/api/oauth/callback"

    with page.expect_navigation(url=app.connect_page) as landed:
        page.click("#allow")
    assert landed.value.status == 200
    assert page.url == app.connect_page  # the code is gone from the address bar
    assert "Подключено" in page.inner_text("main")
    assert fake_amo.successful_exchanges == 1
    assert app.tokens_stored()
    check_page(page, axe_source, fake_amo)

    # Reloading the page the person landed on exchanges nothing again.
    assert page.reload().status == 200
    assert "Подключено" in page.inner_text("main")
    # Even the old callback address itself (history, a copied link) spends nothing.
    [callback_with_code] = fake_amo.redirects
    browser.refused(callback_with_code)
    replay = page.goto(callback_with_code)
    assert replay.status == 400
    assert "уже использована" in page.inner_text("main")
    check_page(page, axe_source, fake_amo)
    assert len(fake_amo.exchanges) == 1
    assert_clean(browser)


def test_refusals_store_nothing(launch, app: AppServer, fake_amo: FakeAmoCRM, axe_source: str):
    browser = launch("mobile-360")
    page = browser.new_page()
    page.goto(app.connect_page)

    # The person declines on amoCRM's page.
    page.click("text=Подключить amoCRM")
    page.wait_for_selector("#deny")
    with page.expect_navigation() as declined:
        page.click("#deny")
    assert declined.value.status == 403
    browser.refused(page.url)
    assert "Доступ не предоставлен" in page.inner_text("main")
    check_page(page, axe_source, fake_amo)

    # A code and state from this browser's button, opened where the cookie is not.
    page.goto(app.connect_page)
    stolen = fake_amo.issue_code(authorize_state(page, fake_amo))
    browser.context.clear_cookies()
    browser.refused(stolen)
    response = page.goto(stolen)
    assert response.status == 400
    assert "другом браузере" in page.inner_text("main")
    check_page(page, axe_source, fake_amo)

    # amoCRM's widget-install redirect (no state) and a tampered state.
    page.goto(app.connect_page)
    state = authorize_state(page, fake_amo)
    widget_install = f"{app.connect_page}?" + urlencode(
        {"code": "def50200widget-SECRET", "referer": "example.amocrm.ru", "from_widget": "1"}
    )
    for url, phrase in (
        (widget_install, "from_widget"),
        (fake_amo.issue_code(state[:-2] + "zz"), "недействительна"),
    ):
        browser.refused(url)
        response = page.goto(url)
        assert response.status == 400, url
        assert phrase in page.inner_text("main")
        check_page(page, axe_source, fake_amo)

    assert fake_amo.exchanges == []
    assert not app.tokens_stored()
    page.goto(app.connect_page)
    assert "Не подключено" in page.inner_text("main")  # noqa: RUF001
    assert_clean(browser)


def test_english_on_request_and_the_switch_back(
    launch, app: AppServer, fake_amo: FakeAmoCRM, axe_source: str
):
    browser = launch("mobile-390", locale="en-US")
    page = browser.new_page()
    page.goto(app.connect_page)
    assert page.get_attribute("html", "lang") == "en"
    assert "Not connected" in page.inner_text("main")
    check_page(page, axe_source, fake_amo)

    with page.expect_navigation():
        page.click("footer >> text=Русский")
    assert page.get_attribute("html", "lang") == "ru"
    assert "Подключить amoCRM" in page.inner_text("main")
    check_page(page, axe_source, fake_amo)
    assert_clean(browser)
