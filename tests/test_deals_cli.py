"""`python -m prometei deals ...` with click's CliRunner; the event API is a `responses` mock."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import responses
from click.testing import CliRunner

from prometei.cli.deals import deals
from tests.conftest import EVENT_API, TEST_SECRETS

EN = "\u2013"


@pytest.fixture
def event_api(mock):
    def accept(request):
        events = json.loads(request.body)
        return 200, {}, json.dumps({"ids": [f"01X{i}" for i in range(len(events))], "status": 200})

    mock.add_callback(responses.POST, EVENT_API, callback=accept)
    return mock


def posted(mock) -> list[list[dict]]:
    return [json.loads(call.request.body) for call in mock.calls]


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(deals, list(args), input=input)


def test_send_dry_run_validates_and_sends_nothing(event_api) -> None:
    result = invoke("send", "--name", "Order #1042", "--amount", "15000", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would send 1 event(s)" in result.stdout
    assert "crm/create-deal  id=prometei-deal-" in result.stdout
    assert "nothing was sent" in result.stdout
    assert len(event_api.calls) == 0


FULL_SEND = (
    "send",
    "--name",
    " Order #1042 ",
    "--amount",
    "15 000,50",
    "--entity-id",
    "25",
    "--external-id",
    "shop-1042",
    "--field",
    "field_1041=Website",
)


def test_send_posts_one_event_and_exits_0(event_api) -> None:
    result = invoke(*FULL_SEND)
    assert result.exit_code == 0, result.output
    ((event,),) = posted(event_api)
    assert event["name"] == "crm/create-deal"
    assert event["data"] == {
        "dealName": "Order #1042",
        "amount": "15000.5",
        "entityId": 25,
        "fields": {"field_1041": "Website"},
        "externalId": "shop-1042",
    }
    assert event["id"] in result.stdout
    # the same command again produces the same id, so Inngest drops the repeat
    assert invoke(*FULL_SEND).exit_code == 0
    assert posted(event_api)[1][0]["id"] == event["id"]


def test_send_with_task_event_and_key(event_api) -> None:
    result = invoke("send", "--name", "A", "--event", "erp/task.create", "--key", "op-7")
    assert result.exit_code == 0, result.output
    ((event,),) = posted(event_api)
    assert (event["name"], event["id"]) == ("erp/task.create", "prometei-deal-op-7-0")


def test_invalid_input_exits_2_with_every_problem(event_api) -> None:
    result = invoke(
        "send", "--name", "  ", "--amount", "-1", "--entity-id", "x", "--field", "colour"
    )
    assert result.exit_code == 2
    assert "invalid input, nothing was sent" in result.stderr
    for expected in (
        "--field 'colour': write it as field_1041=value",
        f"dealName: must be 1{EN}255 characters after trimming",
        "amount: must not be negative (got '-1')",
        "entityId: must be a positive integer (got 'x')",
    ):
        assert expected in result.stderr
    assert len(event_api.calls) == 0


def test_send_failure_exits_1_without_leaking_the_event_key(mock) -> None:
    mock.post(EVENT_API, status=502, body="Bad Gateway")
    result = invoke("send", "--name", "A")
    assert result.exit_code == 1
    assert "sending failed" in result.stderr
    assert "running the same command again is safe" in result.stderr
    assert TEST_SECRETS["INNGEST_EVENT_KEY"] not in result.output


def test_missing_event_key_exits_2(set_env, mock) -> None:
    set_env(INNGEST_EVENT_KEY=None)
    result = invoke("send", "--name", "A")
    assert result.exit_code == 2
    assert "INNGEST_EVENT_KEY" in result.stderr
    assert len(mock.calls) == 0


def test_batch_file_is_sent_as_one_batch_event(event_api, tmp_path: Path) -> None:
    path = tmp_path / "deals.json"
    path.write_text(
        json.dumps({"deals": [{"dealName": "A", "amount": 1}, {"dealName": "B"}]}),
        encoding="utf-8",
    )
    result = invoke("batch", str(path), "--key", "import-1")
    assert result.exit_code == 0, result.output
    ((event,),) = posted(event_api)
    assert event == {
        "name": "crm/batch-create-deals",
        "id": "prometei-batch-import-1",
        "data": {"deals": [{"dealName": "A", "amount": "1"}, {"dealName": "B"}]},
    }


def test_batch_from_stdin_dry_run_as_json(event_api) -> None:
    result = invoke("batch", "-", "--dry-run", "--json", input='[{"dealName": "A"}]')
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "validated"
    assert report["planned_event_ids"][0].startswith("prometei-batch-")
    assert len(event_api.calls) == 0


def test_batch_with_an_invalid_item_exits_2(event_api, tmp_path: Path) -> None:
    path = tmp_path / "deals.json"
    path.write_text(json.dumps([{"dealName": "A"}, {"dealName": "B", "amount": "lots"}]))
    result = invoke("batch", str(path))
    assert result.exit_code == 2
    assert "deals[1].amount: must be a non-negative number" in result.stderr
    assert len(event_api.calls) == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('{"items": []}', 'expected a JSON list of deals or {"deals": [...]}'),
        ("[]", "deals: must hold at least one deal"),
    ],
)
def test_batch_file_problems_exit_2(event_api, tmp_path: Path, content, expected) -> None:
    path = tmp_path / "deals.json"
    path.write_text(content)
    result = invoke("batch", str(path))
    assert result.exit_code == 2
    assert expected in result.stderr
    assert len(event_api.calls) == 0


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = invoke("batch", str(tmp_path / "nope.json"))
    assert result.exit_code == 2
    assert "cannot read it" in result.stderr


def test_help_shows_examples() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "deals send --name" in result.stdout
    assert "Exit codes: 0 sent" in result.stdout
    assert "Example file" in invoke("batch", "--help").stdout


def test_registered_in_the_main_cli(monkeypatch, capsys) -> None:
    from prometei.cli import main

    monkeypatch.setattr(sys, "argv", ["prometei", "deals", "send", "--name", "A", "--dry-run"])
    with pytest.raises(SystemExit) as caught:
        main()
    assert caught.value.code == 0
    assert "would send 1 event(s)" in capsys.readouterr().out
