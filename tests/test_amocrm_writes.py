"""AmoCRMClient's write-backs and the reads doctor makes for them, against `responses` mocks.

Request shapes follow the official PHP SDK (reference amocrm.md §3.3): notes are a JSON list
posted to /api/v4/leads/notes, a field value is a PATCH of `custom_fields_values`.
"""

from __future__ import annotations

import json

import pytest
import responses

from prometei.amocrm.ratelimit import SlidingWindowLimiter
from prometei.errors import UpstreamAuthError, UpstreamRejected, UpstreamUnavailable
from tests.conftest import AMO_BASE
from tests.test_amocrm_client import TOKEN, FakeTokens, make_client

NOTES_URL = f"{AMO_BASE}/api/v4/leads/notes"
LEAD_URL = f"{AMO_BASE}/api/v4/leads/4242"


@responses.activate
def test_a_note_is_one_common_note_with_the_text_and_its_id_comes_back() -> None:
    responses.post(
        NOTES_URL,
        json={"_total_items": 1, "_embedded": {"notes": [{"id": 77, "entity_id": 4242}]}},
    )

    note_id = make_client().add_lead_note(4242, "Запись ERP №812 создана")

    assert note_id == 77
    request = responses.calls[0].request
    assert json.loads(request.body) == [
        {"entity_id": 4242, "note_type": "common", "params": {"text": "Запись ERP №812 создана"}}
    ]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


@responses.activate
def test_a_field_value_is_a_patch_of_that_field_only() -> None:
    responses.patch(LEAD_URL, json={"id": 4242, "updated_at": 1712057400})

    assert make_client().set_lead_field(4242, 977001, "812") == 1712057400

    assert json.loads(responses.calls[0].request.body) == {
        "custom_fields_values": [{"field_id": 977001, "values": [{"value": "812"}]}]
    }


@responses.activate
def test_the_list_shaped_patch_answer_is_read_too() -> None:
    responses.patch(
        LEAD_URL, json={"_embedded": {"leads": [{"id": 4242, "updated_at": 1712057401}]}}
    )
    assert make_client().set_lead_field(4242, 977001, "812") == 1712057401


@responses.activate
@pytest.mark.parametrize("status", [200, 202, 204])
def test_an_accepted_write_without_a_body_is_done_not_retried(status: int) -> None:
    responses.post(NOTES_URL, status=status, body="")
    responses.patch(LEAD_URL, status=status, body="")
    client = make_client()
    assert client.add_lead_note(4242, "x") is None
    assert client.set_lead_field(4242, 977001, "812") is None
    assert len(responses.calls) == 2


@responses.activate
def test_a_validation_error_names_what_amocrm_refused() -> None:
    responses.patch(
        LEAD_URL,
        status=400,
        json={
            "title": "Bad Request",
            "status": 400,
            "detail": "Request validation failed",
            "validation-errors": [
                {
                    "request_id": "0",
                    "errors": [
                        {"code": "NotSupportedChoice", "path": "custom_fields_values.0.field_id"}
                    ],
                }
            ],
        },
    )
    with pytest.raises(UpstreamRejected) as caught:
        make_client().set_lead_field(4242, 1, "812")
    assert not caught.value.retryable
    assert "NotSupportedChoice at custom_fields_values.0.field_id" in caught.value.message


@responses.activate
def test_a_missing_lead_is_a_permanent_refusal() -> None:
    responses.patch(LEAD_URL, status=404, json={"title": "Not Found", "status": 404})
    responses.post(NOTES_URL, status=404, json={"title": "Not Found", "status": 404})
    client = make_client()
    with pytest.raises(UpstreamRejected, match="no lead 4242"):
        client.set_lead_field(4242, 1, "812")
    with pytest.raises(UpstreamRejected, match="no lead 4242"):
        client.add_lead_note(4242, "x")


@responses.activate
def test_no_rights_is_permanent_and_a_429_is_retryable() -> None:
    responses.post(NOTES_URL, status=403, json={"title": "Forbidden", "status": 403})
    with pytest.raises(UpstreamAuthError) as refused:
        make_client().add_lead_note(4242, "x")
    assert not refused.value.retryable
    responses.replace(responses.POST, NOTES_URL, status=429, body="<html>429</html>")
    with pytest.raises(UpstreamUnavailable) as limited:
        make_client().add_lead_note(4242, "x")
    assert limited.value.retryable


@responses.activate
def test_a_refused_token_is_refreshed_once_for_a_write_too() -> None:
    fresh = "amo-access-token-SECRET-cccc"
    responses.post(NOTES_URL, status=401, json={"title": "Unauthorized", "status": 401})
    responses.post(NOTES_URL, json={"_embedded": {"notes": [{"id": 5}]}})

    assert make_client(FakeTokens(fresh=fresh)).add_lead_note(4242, "x") == 5

    auth = [call.request.headers["Authorization"] for call in responses.calls]
    assert auth == [f"Bearer {TOKEN}", f"Bearer {fresh}"]


@responses.activate
def test_writes_wait_for_the_same_limiter_as_reads() -> None:
    from prometei.amocrm.client import AmoCRMClient

    responses.get(LEAD_URL, json={"id": 4242})
    responses.post(NOTES_URL, json={"_embedded": {"notes": [{"id": 5}]}})
    responses.patch(LEAD_URL, json={"id": 4242, "updated_at": 1})
    limiter = SlidingWindowLimiter(6)
    client = AmoCRMClient(FakeTokens(), limiter=limiter, expected_subdomain="example")
    client.get_lead(4242)
    client.add_lead_note(4242, "x")
    client.set_lead_field(4242, 977001, "1")
    assert (limiter.granted, limiter.in_flight()) == (3, 0)


@responses.activate
def test_the_reads_doctor_makes() -> None:
    responses.get(f"{AMO_BASE}/api/v4/account", json={"id": 1, "current_user_id": 938348})
    responses.get(f"{AMO_BASE}/api/v4/users/938348", json={"id": 938348, "rights": {}})
    responses.get(f"{AMO_BASE}/api/v4/leads/custom_fields/977001", status=204)
    client = make_client()
    assert client.current_user_id() == 938348
    assert client.user(938348) == {"id": 938348, "rights": {}}
    assert client.lead_custom_field(977001) is None
