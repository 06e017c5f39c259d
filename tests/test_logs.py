"""JSON log lines, redaction on every logger, demoted Inngest probe noise."""

from __future__ import annotations

import json
import logging

import pytest

from prometei.logs import configure_logging, log_context
from prometei.redaction import mask_values, redact, register_secrets


@pytest.fixture
def json_logs(capsys):
    configure_logging(level="DEBUG", fmt="json", secrets=["hunter2-SECRET"])
    yield lambda: [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    configure_logging(level="INFO", fmt="json")


def test_one_json_object_per_line_with_context(json_logs) -> None:
    with log_context(lead_id=25399013, event_id="amo-1", run_id="01RUN"):
        logging.getLogger("prometei.test").info("synced %s", "lead")
    (line,) = [entry for entry in json_logs() if entry["logger"] == "prometei.test"]
    assert line["level"] == "info"
    assert line["message"] == "synced lead"
    assert (line["lead_id"], line["event_id"], line["run_id"]) == (25399013, "amo-1", "01RUN")


def test_configured_secrets_are_scrubbed_from_every_logger(json_logs) -> None:
    logging.getLogger("inngest").warning("key is hunter2-SECRET")
    logging.getLogger("urllib3.connectionpool").info("GET /?token=hunter2-SECRET")
    try:
        raise RuntimeError("failed with hunter2-SECRET")
    except RuntimeError:
        logging.getLogger("prometei.x").exception("boom")
    out = json.dumps(json_logs())
    assert "hunter2-SECRET" not in out
    assert out.count("[REDACTED]") >= 3


def test_sdk_unauthorized_probe_lines_are_demoted(capsys) -> None:
    configure_logging(level="INFO", fmt="json")
    logging.getLogger("inngest").error("unauthorized: signature missing")
    logging.getLogger("inngest").error("real problem")
    out = capsys.readouterr().out
    assert "unauthorized" not in out
    assert "real problem" in out


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        '{"password":"p4ssw0rd!"}',
        "key=abcd1234&username=api",
        "refresh_token=def50200aaaa",
        "signkey-prod-0123456789abcdef",
    ],
)
def test_secret_shapes_are_redacted_even_when_unregistered(text: str) -> None:
    cleaned = redact(text)
    assert "[REDACTED]" in cleaned
    for fragment in (
        "eyJzdWIiOiIxIn0",
        "p4ssw0rd!",
        "abcd1234",
        "def50200aaaa",
        "0123456789abcdef",
    ):
        assert fragment not in cleaned


def test_error_codes_are_not_mistaken_for_secrets() -> None:
    register_secrets([])
    assert redact('{"error_code":"login_fail"}') == '{"error_code":"login_fail"}'


def test_redact_masks_extra_values_of_any_length_longest_first() -> None:
    # Registered secrets need 4+ characters; `extra` ones (a client's own password) do not.
    assert redact("login pw9 refused", extra=("pw9",)) == "login [REDACTED] refused"
    assert redact("abc abcdef", extra=("abc", "abcdef", "")) == "[REDACTED] [REDACTED]"
    assert redact("key=abcd1234", extra=("zzzz",)) == "key=[REDACTED]"  # patterns still apply


def test_mask_values_masks_exact_values_only() -> None:
    hint = "add ?token=<it> to the webhook URL"
    assert mask_values(hint, []) == hint  # a pattern would have eaten "<it>"
    assert mask_values("pw 0123 and 01234", ["0123", "01234", ""]) == (
        "pw [REDACTED] and [REDACTED]"
    )
