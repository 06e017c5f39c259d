"""Lead events from webhooks (ids, trigger filter) and the event-API sender."""

from __future__ import annotations

import json
import random

import pytest
import requests
import responses

from prometei.amocrm.webhook import parse_webhook
from prometei.config import get_settings
from prometei.errors import (
    ConfigError,
    InputError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from prometei.events import EventSender, build_lead_events, sync_event
from tests.conftest import EVENT_API, TEST_SECRETS
from tests.fixtures.amocrm_bodies import (
    ACCOUNT_LINES,
    ADD_TWO_LEADS,
    CONTACT_AND_TASK,
    STATUS_LEAD,
    UPDATE_WITH_CUSTOM_FIELDS,
    encode,
    lines,
)

EVENT_KEY = TEST_SECRETS["INNGEST_EVENT_KEY"]


def events_of(body: str | bytes, trigger: tuple[tuple[int, int], ...] = ()) -> list[dict]:
    raw = encode(body) if isinstance(body, str) else body
    return build_lead_events(parse_webhook(raw), trigger_statuses=trigger).events


def ids_of(body: str | bytes) -> list[str]:
    return [event["id"] for event in events_of(body)]


def with_value(body: str, key: str, value: str) -> str:
    """The body with one field's value replaced."""
    return "\n".join(f"{k}={value if k == key else v}" for k, v in lines(body))


# ---- building ----------------------------------------------------------------------------


def test_status_event_shape() -> None:
    [event] = events_of(STATUS_LEAD)

    assert event["name"] == "amocrm/lead.status"
    data = event["data"]
    assert {k: v for k, v in data.items() if k != "fields"} == {
        "lead_id": 25399013,
        "account_id": 29085955,
        "subdomain": "example",
        "action": "status",
        "pipeline_id": 7012345,
        "status_id": 142,
        "old_pipeline_id": 7012345,
        "old_status_id": 32392156,
        "status_changed": True,
        "pipeline_changed": False,
    }
    assert data["fields"]["name"] == "Order #1042"
    assert data["fields"]["updated_at"] == "1712056800"
    json.dumps(event)  # plain JSON, ready for the event API


def test_one_event_per_item_and_no_status_block_for_other_actions() -> None:
    events = events_of(ADD_TWO_LEADS)

    assert [(e["name"], e["data"]["lead_id"]) for e in events] == [
        ("amocrm/lead.add", 25400001),
        ("amocrm/lead.add", 25400002),
    ]
    assert "status_changed" not in events[0]["data"]
    assert len({e["id"] for e in events}) == 2


def test_custom_fields_travel_in_the_event() -> None:
    [event] = events_of(UPDATE_WITH_CUSTOM_FIELDS)

    fields = event["data"]["fields"]
    assert fields["custom_fields"]["1"]["values"] == {"0": "1742067200"}
    assert fields["tags"]["0"]["name"] == "repeat customer"


@pytest.mark.parametrize(
    ("old_pipeline", "old_status", "status_changed", "pipeline_changed"),
    [
        ("7012345", "32392156", True, False),
        ("7000000", "142", False, True),
        ("", "", True, False),  # amoCRM left the old values out
    ],
)
def test_changed_flags(
    old_pipeline: str, old_status: str, status_changed: bool, pipeline_changed: bool
) -> None:
    body = with_value(STATUS_LEAD, "leads[status][0][old_pipeline_id]", old_pipeline)
    body = with_value(body, "leads[status][0][old_status_id]", old_status)

    data = events_of(body)[0]["data"]

    assert (data["status_changed"], data["pipeline_changed"]) == (
        status_changed,
        pipeline_changed,
    )


# ---- deterministic ids -------------------------------------------------------------------


@pytest.mark.parametrize("body", [STATUS_LEAD, ADD_TWO_LEADS, UPDATE_WITH_CUSTOM_FIELDS])
def test_redelivery_gives_the_same_ids(body: str) -> None:
    assert ids_of(body) == ids_of(body)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reordered_fields_give_the_same_ids(seed: int) -> None:
    pairs = lines(UPDATE_WITH_CUSTOM_FIELDS)
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    assert shuffled != pairs

    assert ids_of(encode(shuffled)) == ids_of(encode(pairs))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("leads[status][0][updated_at]", "1712056999"),
        ("leads[status][0][status_id]", "143"),
        ("leads[status][0][price]", "16000"),
        ("account[id]", "29085956"),
        ("account[subdomain]", "other"),
    ],
)
def test_a_real_change_gives_a_new_id(key: str, value: str) -> None:
    assert ids_of(with_value(STATUS_LEAD, key, value)) != ids_of(STATUS_LEAD)


def test_same_fields_under_another_action_give_another_id() -> None:
    as_update = STATUS_LEAD.replace("leads[status]", "leads[update]")

    assert ids_of(as_update) != ids_of(STATUS_LEAD)


def test_ids_name_the_lead_and_action() -> None:
    [event_id] = ids_of(STATUS_LEAD)

    assert event_id.startswith("amocrm-lead-25399013-status-")


# ---- trigger filter ------------------------------------------------------------------------


MIXED = f"""\
leads[status][0][id]=1
leads[status][0][pipeline_id]=7012345
leads[status][0][status_id]=142
leads[status][1][id]=2
leads[status][1][pipeline_id]=7012345
leads[status][1][status_id]=143
leads[status][2][id]=3
leads[update][0][id]=4
leads[update][0][pipeline_id]=1
leads[update][0][status_id]=1
contacts[add][0][id]=99
{ACCOUNT_LINES}"""


def test_trigger_filter_drops_other_stages_and_counts_them() -> None:
    batch = build_lead_events(parse_webhook(encode(MIXED)), trigger_statuses=((7012345, 142),))

    # lead 2 is in another stage, lead 3 has no stage at all; updates are not filtered.
    assert [e["data"]["lead_id"] for e in batch.events] == [1, 4]
    assert batch.ignored == 3  # leads 2 and 3, plus the contact


def test_empty_trigger_list_sends_every_status_change() -> None:
    batch = build_lead_events(parse_webhook(encode(MIXED)))

    assert [e["data"]["lead_id"] for e in batch.events] == [1, 2, 3, 4]
    assert batch.ignored == 1


def test_trigger_filter_from_settings(set_env) -> None:
    set_env(AMOCRM_TRIGGER_STATUSES="7012345:143, 1:1")
    trigger = get_settings().amocrm_trigger_statuses

    assert [e["data"]["lead_id"] for e in events_of(MIXED, trigger)] == [2, 4]


def test_non_lead_bodies_build_nothing() -> None:
    batch = build_lead_events(parse_webhook(encode(CONTACT_AND_TASK)))

    assert batch.events == []
    assert batch.ignored == 4


# ---- sync events -------------------------------------------------------------------------


def test_sync_event() -> None:
    assert sync_event(25399013) == {"name": "amocrm/lead.sync", "data": {"lead_id": 25399013}}
    assert sync_event(7, id="replay-7")["id"] == "replay-7"
    assert sync_event(7, force=True)["data"] == {"lead_id": 7, "force": True}


@pytest.mark.parametrize("bad", [0, -1, True, "12"])
def test_sync_event_needs_a_positive_int(bad: object) -> None:
    with pytest.raises(InputError):
        sync_event(bad)  # type: ignore[arg-type]


# ---- sending -------------------------------------------------------------------------------

EVENTS = [sync_event(1, id="a"), sync_event(2, id="b")]


def sender() -> EventSender:
    return EventSender.from_settings(get_settings())


@responses.activate
def test_send_posts_one_json_array_and_returns_ids() -> None:
    responses.post(EVENT_API, json={"ids": ["01H1", "01H2"], "status": 200})

    assert sender().send(EVENTS) == ["01H1", "01H2"]

    assert len(responses.calls) == 1
    request = responses.calls[0].request
    assert json.loads(request.body) == EVENTS
    assert request.headers["Content-Type"] == "application/json"


@responses.activate
def test_send_nothing_makes_no_call() -> None:
    assert sender().send([]) == []
    assert len(responses.calls) == 0


@responses.activate
def test_dev_mode_without_key_uses_the_placeholder(set_env) -> None:
    set_env(INNGEST_DEV="1", INNGEST_EVENT_KEY=None)
    responses.post("http://127.0.0.1:8288/e/NO_EVENT_KEY_SET", json={"ids": ["x"], "status": 200})

    assert sender().send(EVENTS[:1]) == ["x"]


@responses.activate
def test_event_api_base_url_is_honoured(set_env) -> None:
    set_env(INNGEST_EVENT_API_BASE_URL="https://events.example.test")
    responses.post(f"https://events.example.test/e/{EVENT_KEY}", json={"ids": ["y"]})

    assert sender().send(EVENTS[:1]) == ["y"]


@responses.activate
def test_cloud_mode_without_key_is_a_config_error(set_env) -> None:
    set_env(INNGEST_EVENT_KEY=None)

    with pytest.raises(ConfigError, match="INNGEST_EVENT_KEY"):
        sender().send(EVENTS)
    assert len(responses.calls) == 0


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (dict(status=500, body="oops"), UpstreamUnavailable),
        (dict(status=502, body=""), UpstreamUnavailable),
        (dict(status=429, json={"error": "slow down"}), UpstreamUnavailable),
        (dict(body=requests.ReadTimeout()), UpstreamUnavailable),
        (dict(body=requests.ConnectionError()), UpstreamUnavailable),
        (dict(status=401, json={"error": "bad key"}), UpstreamRejected),
        (dict(status=403, json={"error": "forbidden"}), UpstreamRejected),
        (dict(status=400, json={"error": "event name empty"}), UpstreamRejected),
        (dict(status=200, json={"ids": [], "status": 400, "error": "bad"}), UpstreamRejected),
        (dict(status=200, body="<html>proxy</html>"), UpstreamProtocolError),
        (dict(status=200, json={"status": 200}), UpstreamProtocolError),
    ],
)
@responses.activate
def test_send_failures(answer: dict, error: type[Exception]) -> None:
    responses.post(EVENT_API, **answer)

    with pytest.raises(error) as caught:
        sender().send(EVENTS)

    assert EVENT_KEY not in str(caught.value)
    assert caught.value.retryable is (error is UpstreamUnavailable)


@responses.activate
def test_401_says_which_variable_to_check() -> None:
    responses.post(EVENT_API, status=401, json={"error": "Event key not found"})

    with pytest.raises(UpstreamRejected, match="INNGEST_EVENT_KEY is probably wrong"):
        sender().send(EVENTS)


@responses.activate
def test_key_echoed_by_the_server_is_masked() -> None:
    echo = f"POST /e/{EVENT_KEY} failed"
    responses.post(EVENT_API, status=503, body=echo)

    with pytest.raises(UpstreamUnavailable) as caught:
        sender().send(EVENTS)

    assert EVENT_KEY not in caught.value.body_excerpt
    assert "failed" in caught.value.body_excerpt


def test_repr_hides_the_key() -> None:
    assert EVENT_KEY not in repr(sender())
