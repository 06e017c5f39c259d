"""What the TypeScript version sent, and helpers to compare it with what the intake sends.

Shapes of `amocrm/webhook` event data, as the old project built them (facts from the public
`tbp/prometei-ingest` history, rewritten here): the old intake's `{originalData, parsedData,
...}`, an Inngest-hosted webhook's `{"data": {"<bracket key>": ["<value>"]}, ...}`, and the first
intake's bracket keys spread into the data next to metadata.
"""

from __future__ import annotations

import json
from typing import Any

import responses

from prometei.amocrm.webhook import parse_form
from tests.conftest import EVENT_API, TEST_SECRETS
from tests.fixtures.amocrm_bodies import encode, lines

SECRET = TEST_SECRETS["AMOCRM_WEBHOOK_SECRET"]
FORM = "application/x-www-form-urlencoded"


def old_intake_data(body: str) -> dict[str, Any]:
    """The old /api/amocrm-webhook's event data: Next.js's flat parse of the form, and more."""
    form = dict(lines(body))
    return {
        "originalData": form,
        "entity": "leads",
        "action": "status_change",
        "parsedData": {
            "leadId": int(form["leads[status][0][id]"]),
            "statusId": int(form["leads[status][0][status_id]"]),
            "pipelineId": int(form["leads[status][0][pipeline_id]"]),
            "accountId": int(form["account[id]"]),
            "subdomain": form["account[subdomain]"],
            "statusChanged": True,
            "pipelineChanged": False,
        },
        "receivedAt": "2025-08-29T18:00:00.000Z",
        "userAgent": "amoCRM-WebHook-client/1.0",
        "ip": "203.0.113.7",
        "changes": {"statusChanged": True, "pipelineChanged": False},
    }


def old_intake_nested_data(body: str) -> dict[str, Any]:
    """An earlier old intake: `originalData` nested, item lists as JSON arrays."""

    def listed(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if node and all(key.isdigit() for key in node):
            return [listed(node[key]) for key in sorted(node, key=int)]
        return {key: listed(value) for key, value in node.items()}

    data = old_intake_data(body)
    data["originalData"] = listed(parse_form(encode(body)))
    return data


def hosted_webhook_data(body: str) -> dict[str, Any]:
    """An Inngest-hosted webhook's event data: form values as lists of strings."""
    return {
        "data": {key: [value] for key, value in lines(body)},
        "id": "01K3V7Q0QYTEM0DMCF9P1SWYTB",
        "name": "webhook/request.received",
        "ts": 1756481946366,
        "v": None,
    }


def spread_form_data(body: str) -> dict[str, Any]:
    """The first old intake: the form's keys straight in the data, plus metadata."""
    return {**dict(lines(body)), "receivedAt": "2025-08-29T18:00:00.000Z", "ip": "203.0.113.7"}


LEGACY_SHAPES = {
    "old-intake": old_intake_data,
    "old-intake-nested": old_intake_nested_data,
    "inngest-hosted-webhook": hosted_webhook_data,
    "spread-form": spread_form_data,
}


def accept_events(mock: responses.RequestsMock) -> None:
    mock.post(EVENT_API, json={"ids": ["01ACCEPTED"], "status": 200})


def sent_batches(mock: responses.RequestsMock) -> list[list[dict[str, Any]]]:
    """Every batch of events POSTed to the event API so far, in order."""
    return [json.loads(call.request.body) for call in mock.calls if call.request.url == EVENT_API]


def intake_events(
    mock: responses.RequestsMock, body: str, url: str = f"/api/webhook?token={SECRET}"
) -> list[dict[str, Any]]:
    """The events the intake sends for `body` (the event API must be accepting on `mock`)."""
    from prometei.web.apps import create_webhook_app

    before = len(sent_batches(mock))
    response = create_webhook_app().test_client().post(url, data=encode(body), content_type=FORM)
    assert response.status_code == 200, response.get_json()
    batches = sent_batches(mock)[before:]
    assert len(batches) == 1
    return batches[0]
