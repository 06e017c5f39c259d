"""AmoCRMClient against mocked amoCRM answers (`responses`); never the network."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from prometei.amocrm.client import (
    RATE_LIMITED_BACKOFF_SECONDS,
    AmoCRMClient,
    LeadPage,
    LeadQuery,
)
from prometei.amocrm.ratelimit import SlidingWindowLimiter
from prometei.config import get_settings
from prometei.errors import (
    ConfigError,
    InputError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from tests.conftest import AMO_BASE

TOKEN = "amo-access-token-SECRET-aaaa"
FRESH = "amo-access-token-SECRET-bbbb"
LEAD_URL = f"{AMO_BASE}/api/v4/leads/4242"
LEADS_URL = f"{AMO_BASE}/api/v4/leads"


class FakeTokens:
    def __init__(
        self, token: str = TOKEN, fresh: str | None = None, host: str = "example.amocrm.ru"
    ) -> None:
        self.token = token
        self.fresh = fresh
        self.host = host
        self.rejected: list[str] = []

    def access_token(self) -> str:
        return self.token

    def after_unauthorized(self, rejected: str) -> str | None:
        self.rejected.append(rejected)
        return self.fresh

    def account_host(self) -> str:
        return self.host


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make_client(tokens: FakeTokens | None = None) -> AmoCRMClient:
    clock = FakeClock()
    return AmoCRMClient(
        tokens or FakeTokens(),
        limiter=SlidingWindowLimiter(6, clock=clock, sleep=clock.sleep),
        expected_subdomain="example",
    )


LEAD_BODY: dict[str, Any] = {
    "id": 4242,
    "name": "Поставка труб",
    "price": 150000,
    "responsible_user_id": 11,
    "status_id": 142,
    "pipeline_id": 7012345,
    "created_by": 11,
    "updated_by": 12,
    "created_at": 1700000000,
    "updated_at": 1700000500,
    "closed_at": None,
    "account_id": 29085955,
    "is_deleted": False,
    "custom_fields_values": [
        {
            "field_id": 555,
            "field_name": "Город",
            "field_code": None,
            "field_type": "text",
            "values": [{"value": "Казань"}],
        },
        {
            "field_id": 556,
            "field_name": "Тип",
            "field_code": None,
            "field_type": "multiselect",
            "values": [{"value": "A", "enum_id": 1}, {"value": "B", "enum_id": 2}],
        },
    ],
    "_links": {"self": {"href": f"{LEAD_URL}?with=contacts"}},
    "_embedded": {
        "tags": [],
        "companies": [],
        "contacts": [
            {"id": 901, "is_main": False, "_links": {}},
            {"id": 902, "is_main": True, "_links": {}},
        ],
    },
}

HTML_429 = "<html><head><title>429 Too Many Requests</title></head><body>nginx</body></html>"
HTML_403 = "<html><body><h1>Доступ запрещён</h1>Account is blocked</body></html>"


def assert_no_token(exc: BaseException, caplog: pytest.LogCaptureFixture, *tokens: str) -> None:
    texts = [str(exc), repr(exc.args), caplog.text]
    if isinstance(exc, UpstreamError):
        texts.append(exc.body_excerpt)
    for token in tokens or (TOKEN, FRESH):
        for text in texts:
            assert token not in text


# ---- get_lead -----------------------------------------------------------------------------
@responses.activate
def test_get_lead_maps_contacts_and_custom_fields() -> None:
    responses.get(
        LEAD_URL,
        json=LEAD_BODY,
        match=[
            matchers.query_param_matcher({"with": "contacts"}),
            matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"}),
        ],
    )
    lead = make_client().get_lead(4242)
    assert lead is not None
    assert (lead.id, lead.name, lead.price) == (4242, "Поставка труб", 150000.0)
    assert (lead.pipeline_id, lead.status_id, lead.updated_at) == (7012345, 142, 1700000500)
    assert lead.contact_ids == [901, 902]
    assert lead.main_contact_id == 902
    assert lead.custom_fields == {"555": ["Казань"], "556": ["A", "B"]}
    assert len(responses.calls) == 1


@responses.activate
@pytest.mark.parametrize("status", [204, 404])
def test_missing_lead_is_none(status: int) -> None:
    body = (
        ""
        if status == 204
        else '{"title":"Not Found","type":"https://httpstatus.es/404","status":404}'
    )
    responses.get(LEAD_URL, status=status, body=body)
    assert make_client().get_lead(4242) is None
    assert len(responses.calls) == 1


@responses.activate
def test_401_then_fresh_token_retries_once_and_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses.get(
        LEAD_URL,
        status=401,
        json={"title": "Unauthorized", "status": 401},
        match=[matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})],
    )
    responses.get(
        LEAD_URL,
        json=LEAD_BODY,
        match=[matchers.header_matcher({"Authorization": f"Bearer {FRESH}"})],
    )
    tokens = FakeTokens(fresh=FRESH)
    lead = make_client(tokens).get_lead(4242)
    assert lead is not None and lead.id == 4242
    assert tokens.rejected == [TOKEN]
    assert len(responses.calls) == 2
    assert TOKEN not in caplog.text and FRESH not in caplog.text


@responses.activate
def test_401_twice_is_auth_error_after_one_retry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses.get(LEAD_URL, status=401, json={"title": "Unauthorized", "status": 401})
    tokens = FakeTokens(fresh=FRESH)
    with pytest.raises(UpstreamAuthError) as info:
        make_client(tokens).get_lead(4242)
    assert len(responses.calls) == 2
    assert tokens.rejected == [TOKEN]  # asked once, not in a loop
    assert info.value.retryable is False
    assert "/api/oauth/callback" in str(info.value)
    assert "AMOCRM_ACCESS_TOKEN" in str(info.value)
    assert_no_token(info.value, caplog)


@responses.activate
def test_401_without_replacement_token_stops_at_once() -> None:
    responses.get(LEAD_URL, status=401, json={"title": "Unauthorized", "status": 401})
    tokens = FakeTokens(fresh=None)  # long-lived token: nothing to refresh
    with pytest.raises(UpstreamAuthError) as info:
        make_client(tokens).get_lead(4242)
    assert len(responses.calls) == 1
    assert tokens.rejected == [TOKEN]
    assert info.value.status == 401


@responses.activate
def test_402_unpaid_account_is_permanent() -> None:
    responses.get(
        LEAD_URL, status=402, json={"title": "Payment Required", "detail": "Account is not paid"}
    )
    with pytest.raises(UpstreamAuthError) as info:
        make_client().get_lead(4242)
    assert info.value.retryable is False
    assert info.value.status == 402
    assert "not paid" in str(info.value)
    assert len(responses.calls) == 1


@responses.activate
def test_403_html_block_is_permanent_and_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses.get(LEAD_URL, status=403, body=HTML_403, content_type="text/html")
    tokens = FakeTokens(fresh=FRESH)
    with pytest.raises(UpstreamAuthError) as info:
        make_client(tokens).get_lead(4242)
    assert info.value.retryable is False
    assert info.value.status == 403
    assert "blocked" in str(info.value) and "whitelist" in str(info.value)
    assert "Account is blocked" in info.value.body_excerpt
    assert len(responses.calls) == 1
    assert tokens.rejected == []  # a 403 never triggers a token refresh
    assert_no_token(info.value, caplog)


@responses.activate
def test_429_html_without_retry_after_is_retryable_with_backoff() -> None:
    responses.get(LEAD_URL, status=429, body=HTML_429, content_type="text/html")
    with pytest.raises(UpstreamUnavailable) as info:
        make_client().get_lead(4242)
    exc = info.value
    assert exc.retryable is True
    assert exc.status == 429
    assert exc.retry_after_seconds == RATE_LIMITED_BACKOFF_SECONDS
    assert exc.retry_after_seconds >= 3
    assert len(responses.calls) == 1  # the client never retry-loops on its own


@responses.activate
def test_429_honours_retry_after_header() -> None:
    responses.get(LEAD_URL, status=429, body=HTML_429, headers={"Retry-After": "17"})
    with pytest.raises(UpstreamUnavailable) as info:
        make_client().get_lead(4242)
    assert info.value.retry_after_seconds == 17.0


@responses.activate
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retryable(status: int) -> None:
    responses.get(LEAD_URL, status=status, body="<html>Bad Gateway</html>")
    with pytest.raises(UpstreamUnavailable) as info:
        make_client().get_lead(4242)
    assert info.value.retryable is True
    assert info.value.status == status


@responses.activate
def test_timeout_is_retryable(caplog: pytest.LogCaptureFixture) -> None:
    responses.get(LEAD_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(UpstreamUnavailable) as info:
        make_client().get_lead(4242)
    assert info.value.retryable is True
    assert "timeout" in str(info.value)
    assert_no_token(info.value, caplog)


@responses.activate
def test_redirect_is_a_config_error_and_not_followed() -> None:
    other = "https://example.kommo.com/api/v4/leads/4242"
    responses.get(LEAD_URL, status=301, headers={"Location": other})
    responses.get(other, json=LEAD_BODY)
    with pytest.raises(ConfigError) as info:
        make_client().get_lead(4242)
    assert info.value.retryable is False
    assert "AMOCRM_SUBDOMAIN" in str(info.value)
    assert "example.kommo.com" in str(info.value)
    assert [str(call.request.url).split("?")[0] for call in responses.calls] == [LEAD_URL]


@responses.activate
def test_200_with_html_is_retryable_protocol_error() -> None:
    responses.get(LEAD_URL, status=200, body="<html>maintenance</html>", content_type="text/html")
    with pytest.raises(UpstreamProtocolError) as info:
        make_client().get_lead(4242)
    assert info.value.retryable is True
    assert "without JSON" in str(info.value)


@responses.activate
def test_200_json_without_lead_id_is_protocol_error() -> None:
    responses.get(LEAD_URL, json={"name": "no id"})
    with pytest.raises(UpstreamProtocolError):
        make_client().get_lead(4242)


@responses.activate
def test_400_is_rejected_with_detail() -> None:
    responses.get(
        LEAD_URL,
        status=400,
        json={"title": "Bad Request", "status": 400, "detail": "Invalid with parameter"},
    )
    with pytest.raises(UpstreamRejected) as info:
        make_client().get_lead(4242)
    assert info.value.retryable is False
    assert "Invalid with parameter" in str(info.value)


@responses.activate
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, f"invalid token Bearer {TOKEN}"),
        (403, f"<html>blocked request with token {TOKEN}</html>"),
        (429, f"<html>slow down {TOKEN}</html>"),
        (500, f'{{"detail": "failed for {TOKEN}"}}'),
        (400, f'{{"detail": "bad header {TOKEN}"}}'),
    ],
)
def test_token_echoed_by_amocrm_never_reaches_errors_or_logs(
    status: int, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    responses.get(LEAD_URL, status=status, body=body)
    with pytest.raises(UpstreamError) as info:
        try:
            make_client().get_lead(4242)
        except UpstreamError as exc:
            logging.getLogger("test").exception("failed: %s (%s)", exc, exc.body_excerpt)
            raise
    assert_no_token(info.value, caplog)


@responses.activate
def test_foreign_host_is_refused_before_sending_the_token() -> None:
    for host in ("evil.example.com", "www.amocrm.ru", "example.amocrm.ru.evil.com"):
        with pytest.raises(ConfigError):
            make_client(FakeTokens(host=host)).get_lead(1)
    with pytest.raises(ConfigError, match="AMOCRM_SUBDOMAIN"):
        make_client(FakeTokens(host="other.amocrm.ru")).get_lead(1)
    assert len(responses.calls) == 0


@responses.activate
def test_from_settings_uses_configured_account() -> None:
    responses.get(LEAD_URL, json=LEAD_BODY)
    client = AmoCRMClient.from_settings(get_settings(), FakeTokens())
    assert client.get_lead(4242) is not None
    with pytest.raises(ConfigError):
        AmoCRMClient.from_settings(get_settings(), FakeTokens(host="other.kommo.com")).get_lead(1)


@responses.activate
def test_requests_go_through_the_limiter() -> None:
    clock = FakeClock()
    stamps: list[float] = []

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        stamps.append(clock())
        return 204, {}, ""

    responses.add_callback(responses.GET, LEAD_URL, callback=callback)
    limiter = SlidingWindowLimiter(6, clock=clock, sleep=clock.sleep)
    client = AmoCRMClient(FakeTokens(), limiter=limiter)
    for _ in range(7):
        client.get_lead(4242)
    assert len(stamps) == 7
    # The 7th waits until the 1st has been answered a whole second ago.
    assert stamps[-1] - stamps[0] >= 1.0
    assert limiter.in_flight() == 0


# ---- list_leads ---------------------------------------------------------------------------
def leads_page(ids: list[int], *, more: bool) -> dict[str, Any]:
    links: dict[str, Any] = {"self": {"href": "..."}}
    if more:
        links["next"] = {"href": "..."}
    return {
        "_page": 1,
        "_links": links,
        "_embedded": {
            "leads": [{"id": i, "name": f"lead {i}", "updated_at": 100 + i} for i in ids]
        },
    }


@responses.activate
def test_list_leads_sends_v4_filters_and_follows_next_link() -> None:
    responses.get(
        LEADS_URL,
        json=leads_page([1, 2], more=True),
        match=[
            matchers.query_param_matcher(
                {
                    "filter[statuses][0][pipeline_id]": "77",
                    "filter[statuses][0][status_id]": "142",
                    "filter[statuses][1][pipeline_id]": "77",
                    "filter[statuses][1][status_id]": "143",
                    "filter[updated_at][from]": "1700000000",
                    "page": "3",
                    "limit": "250",
                    "order[updated_at]": "asc",
                }
            )
        ],
    )
    query = LeadQuery(pipeline_id=77, status_ids=(142, 143), updated_from=1700000000)
    page = make_client().list_leads(query, page=3)
    assert [lead.id for lead in page.leads] == [1, 2]
    assert page.next_page == 4
    assert page.full


@responses.activate
def test_list_leads_last_page_and_pipeline_only_filter() -> None:
    responses.get(
        LEADS_URL,
        json=leads_page([5], more=False),
        match=[
            matchers.query_param_matcher(
                {
                    "filter[pipeline_id]": "77",
                    "filter[updated_at][to]": "1700000009",
                    "page": "1",
                    "limit": "50",
                    "order[id]": "desc",
                }
            )
        ],
    )
    query = LeadQuery(pipeline_id=77, updated_to=1700000009, order=("id", "desc"))
    page = make_client().list_leads(query, page=1, limit=50)
    assert [lead.id for lead in page.leads] == [5]
    assert page.next_page is None
    assert not page.full


@responses.activate
def test_list_leads_204_is_an_empty_final_page() -> None:
    responses.get(LEADS_URL, status=204)
    page = make_client().list_leads(LeadQuery(), page=9)
    assert page == LeadPage(leads=[], next_page=None, full=False)


@responses.activate
def test_list_leads_without_embedded_is_protocol_error() -> None:
    responses.get(LEADS_URL, json={"_links": {}})
    with pytest.raises(UpstreamProtocolError):
        make_client().list_leads(LeadQuery())


def test_list_leads_validates_arguments() -> None:
    client = make_client()
    with pytest.raises(InputError, match="pipeline_id"):
        client.list_leads(LeadQuery(status_ids=(142,)))
    with pytest.raises(InputError, match="limit"):
        client.list_leads(LeadQuery(), limit=500)
    with pytest.raises(InputError, match="page"):
        client.list_leads(LeadQuery(), page=0)
    with pytest.raises(InputError, match="sorts lists by"):
        client.list_leads(LeadQuery(order=("name", "asc")))


# ---- account ------------------------------------------------------------------------------
@responses.activate
def test_account_returns_id_subdomain_name() -> None:
    responses.get(
        f"{AMO_BASE}/api/v4/account",
        json={"id": 29085955, "name": "Прометей", "subdomain": "example", "currency": "RUB"},
    )
    assert make_client().account() == {
        "id": 29085955,
        "subdomain": "example",
        "name": "Прометей",
    }
