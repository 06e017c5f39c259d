"""The HTTP fakes (tests/fakes/) behave like the reference and like real servers: routes,
faults, the request log, a closed port, and the project's own clients talking to them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import requests

from prometei.amocrm.client import AmoCRMClient
from prometei.erp.client import ERPClient
from prometei.errors import UpstreamError, UpstreamUnavailable
from tests.fakes.amocrm import FakeAmoCRM, rate_limited
from tests.fakes.rukovoditel_http import HTML_500, RukovoditelHTTP, error_500_json
from tests.fakes.web import FakeRequest, FakeService, Reply
from tests.support.amo_listing import Tokens
from tests.support.fake_amo_oauth import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI
from tests.support.loopback import LoopbackServer

TOKEN = "fake-amo-token-SECRET"


class Echo(FakeService):
    def __init__(self) -> None:
        super().__init__()
        self.routes.add("GET|PUT", r"/things/(?P<thing>\w+)", self._thing)

    def _thing(self, request: FakeRequest, thing: str) -> Reply:
        return Reply.json({"thing": thing, "q": request.arg("q")})


def test_routes_answer_404_and_405_like_a_web_server() -> None:
    echo = Echo()

    found = echo.handle(FakeRequest("PUT", "/things/a", {"q": ["1"]}))
    wrong_method = echo.handle(FakeRequest("POST", "/things/a"))
    missing = echo.handle(FakeRequest("GET", "/nothing"))

    assert (found.status, found.text()) == (200, '{"thing": "a", "q": "1"}')
    assert (wrong_method.status, missing.status) == (405, 404)


def test_faults_are_taken_in_order_by_matching_requests_and_everything_is_logged() -> None:
    echo = Echo()
    echo.fail_next(Reply.empty(503), match=lambda r: r.path == "/things/b")
    echo.fail_next(Reply.empty(502))

    statuses = [echo.handle(FakeRequest("GET", p)).status for p in ("/things/a", "/things/b")]
    statuses.append(echo.handle(FakeRequest("GET", "/things/b")).status)

    # /things/a took the unmatched 502; the 503 waited for /things/b.
    assert statuses == [502, 503, 200]
    assert [(e.path, e.status) for e in echo.log] == [
        ("/things/a", 502),
        ("/things/b", 503),
        ("/things/b", 200),
    ]


def test_peak_rate_counts_requests_in_sliding_windows() -> None:
    echo = Echo()
    for at in (0.0, 0.35, 0.9, 1.2, 1.25, 1.3, 3.0, 4.0, 5.0):
        echo.handle(FakeRequest("GET", "/things/a", at=at))

    assert echo.peak_rate(1.0) == 5  # 0.35 .. 1.3; windows are [t, t + 1 s)
    assert echo.peak_rate(0.15) == 3  # 1.2, 1.25, 1.3
    assert echo.peak_rate(1.0, where=lambda e: e.at >= 3.0) == 1  # exactly 1 s apart


def test_a_closed_port_refuses_connections_and_reopens_at_the_same_address() -> None:
    server = LoopbackServer(Echo().wsgi, "echo").start()
    url = f"{server.url}/things/x"
    try:
        assert requests.get(url, timeout=2).status_code == 200
        server.close_port()
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=2)
        server.reopen_port()
        assert requests.get(url, timeout=2).json()["thing"] == "x"
    finally:
        server.stop()


# ---- amoCRM --------------------------------------------------------------------------------
@pytest.fixture
def amo() -> Iterator[tuple[FakeAmoCRM, str]]:
    fake = FakeAmoCRM(access_tokens=(TOKEN,))
    server = LoopbackServer(fake.wsgi, "fake-amocrm").start()
    try:
        yield fake, server.url
    finally:
        server.stop()


def amo_client(url: str) -> AmoCRMClient:
    return AmoCRMClient(Tokens(TOKEN), expected_subdomain="example", api_base_url=url)


def test_amocrm_fake_serves_leads_to_the_project_client(amo) -> None:
    fake, url = amo
    fake.add_lead(4242, name="Поставка", price=150000, contacts=[11, 12])

    lead = amo_client(url).get_lead(4242)
    missing = amo_client(url).get_lead(4243)

    assert lead is not None
    assert (lead.name, lead.price, lead.contact_ids, lead.main_contact_id) == (
        "Поставка",
        150000.0,
        [11, 12],
        11,
    )
    assert missing is None  # amoCRM answers 204 for a missing lead
    assert [e.status for e in fake.requests("GET")] == [200, 204]
    assert fake.requests("GET")[0].query == {"with": ["contacts"]}


def test_amocrm_fake_refuses_other_tokens(amo) -> None:
    _, url = amo

    answer = requests.get(
        f"{url}/api/v4/account", headers={"Authorization": "Bearer nope"}, timeout=2
    )

    assert answer.status_code == 401
    assert answer.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("reply", "header", "asked_wait_s"),
    [(rate_limited(), None, 10.0), (rate_limited(retry_after_s=2), "2", 2.0)],
    ids=["as-documented", "retry-after-asked-for"],
)
def test_amocrm_fake_429_is_an_html_page_with_retry_after_only_when_asked(
    amo, reply, header, asked_wait_s
) -> None:
    fake, url = amo
    fake.add_lead(1)
    fake.fail_next(reply)

    with pytest.raises(UpstreamUnavailable) as limited:
        amo_client(url).get_lead(1)

    assert reply.headers.get("Retry-After") == header
    assert reply.headers["Content-Type"].startswith("text/html")
    assert limited.value.status == 429 and limited.value.retry_after_seconds == asked_wait_s


def amo_get(
    fake: FakeAmoCRM, path: str, at: float = 0.0, query: dict[str, str] | None = None
) -> Reply:
    """`GET path?query` straight to the fake (no transport), arriving at `at`."""
    return fake.handle(
        FakeRequest(
            "GET",
            path,
            {name: [value] for name, value in (query or {}).items()},
            {"authorization": f"Bearer {TOKEN}"},
            at=at,
        )
    )


def test_amocrm_fake_enforces_amocrms_limit_only_when_asked() -> None:
    fake = FakeAmoCRM(access_tokens=(TOKEN,))
    burst = [100.0 + n * 0.1 for n in range(8)]  # 8 requests within 0.7 s

    free = [amo_get(fake, "/api/v4/account", at).status for at in burst]
    fake.reset()
    fake.enforce_rate_limit = 7
    enforced = [amo_get(fake, "/api/v4/account", at) for at in burst]
    next_second = amo_get(fake, "/api/v4/account", at=101.75)  # only itself in (100.75, 101.75]

    assert free == [200] * 8
    assert [reply.status for reply in enforced] == [200] * 7 + [429]
    assert "Retry-After" not in enforced[-1].headers
    assert enforced[-1].headers["Content-Type"].startswith("text/html")
    assert next_second.status == 200


def test_amocrm_fake_lists_deleted_leads_only_with_only_deleted() -> None:
    fake = FakeAmoCRM(access_tokens=(TOKEN,))
    for lead_id in (1, 2, 3):
        fake.add_lead(lead_id)
    fake.delete_lead(2)

    listed = json.loads(amo_get(fake, "/api/v4/leads").text())["_embedded"]["leads"]
    deleted = json.loads(amo_get(fake, "/api/v4/leads", query={"with": "only_deleted"}).text())

    assert [lead["id"] for lead in listed] == [1, 3]
    [only] = deleted["_embedded"]["leads"]
    assert (only["id"], only["is_deleted"]) == (2, True)
    assert set(only) == {"id", "updated_at", "is_deleted", "_links"}


@pytest.mark.parametrize(("answer", "status"), [(204, 204), (404, 404), ("lead", 200)])
def test_amocrm_fake_answers_a_deleted_lead_by_id_in_each_reading(amo, answer, status) -> None:
    fake, url = amo
    fake.add_lead(7)
    fake.delete_lead(7)
    fake.deleted_lead_answer = answer

    lead = amo_client(url).get_lead(7)

    assert fake.log[-1].status == status
    assert (lead is not None and lead.is_deleted) if answer == "lead" else lead is None


def test_amocrm_fake_rotates_refresh_tokens_and_accepts_the_new_access_token(amo) -> None:
    fake, url = amo
    fake.oauth.live_refresh.add("seed-SECRET")
    body = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "grant_type": "refresh_token",
        "refresh_token": "seed-SECRET",
        "redirect_uri": REDIRECT_URI,
    }

    first = requests.post(f"{url}/oauth2/access_token", json=body, timeout=2)
    again = requests.post(f"{url}/oauth2/access_token", json=body, timeout=2)
    access = first.json()["access_token"]
    account = requests.get(
        f"{url}/api/v4/account", headers={"Authorization": f"Bearer {access}"}, timeout=2
    )

    assert (first.status_code, again.status_code) == (200, 401)  # single use
    assert account.json()["subdomain"] == "example"


# ---- Rukovoditel ---------------------------------------------------------------------------
@pytest.fixture
def ruko() -> Iterator[tuple[RukovoditelHTTP, ERPClient]]:
    fake = RukovoditelHTTP()
    server = LoopbackServer(fake.wsgi, "fake-rukovoditel").start()
    try:
        yield fake, ERPClient(server.url + fake.path, fake.model.key, "api", fake.model.password)
    finally:
        server.stop()


def test_rukovoditel_over_http_answers_like_the_model(ruko) -> None:
    fake, erp = ruko

    inserted = erp.insert(70, {"field_1039": "A", "field_1041": "7"})
    found = erp.select(70, filters={"1041": "7"}, select_fields=[1041], limit=2)
    updated = erp.update(70, by={"id": int(inserted.ids[0])}, data={"field_1039": "B"})

    assert inserted.ids == ["801"]
    assert [row["id"] for row in found] == ["801"]
    assert updated == ["801"]
    (row,) = fake.rows(70)
    assert (row["id"], row["field_1039"], row["field_1041"]) == ("801", "B", "7")


def test_rukovoditel_faults_by_action_never_reach_the_model(ruko) -> None:
    fake, erp = ruko
    fake.fail("insert", HTML_500)
    fake.fail("insert", error_500_json("field_1040 not exist in entity 70"))

    with pytest.raises(UpstreamError) as transient:  # the web server's page
        erp.insert(70, {"field_1039": "A"})
    assert transient.value.retryable
    with pytest.raises(Exception, match="ERP_FIELD_MAP"):
        erp.insert(70, {"field_1039": "A"})
    erp.insert(70, {"field_1039": "A"})

    assert len(fake.actions("insert")) == 1
    assert [e.status for e in fake.requests("POST")] == [500, 500, 200]


def test_rukovoditel_counts_writes_in_flight(ruko) -> None:
    fake, erp = ruko
    fake.write_latency_s = 0.3
    threads = [
        threading.Thread(target=erp.insert, args=(70, {"field_1039": str(i)})) for i in range(3)
    ]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert fake.peak_writes == 3
    assert fake.in_flight_writes == 0
    assert len(fake.rows(70)) == 3
