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


class _RuntimeHandler(logging.Handler):
    """Stands in for a handler a runtime installs on the root logger before our code runs
    (Vercel's forwards `record.getMessage()` and the level to its log view)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.levelname, record.getMessage()))


@pytest.fixture
def runtime_first():
    """A root logger as a runtime leaves it: its own handler only, ours not installed yet."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    runtime = _RuntimeHandler()
    root.handlers = [runtime]
    root.setLevel(logging.INFO)
    yield runtime
    root.handlers = saved_handlers
    root.setLevel(saved_level)


def test_a_root_handler_installed_first_is_replaced_so_each_record_is_one_line(
    runtime_first, capsys
) -> None:
    configure_logging(level="INFO", fmt="json", secrets=["hunter2-SECRET"])
    logging.getLogger("prometei.test").warning("refused token hunter2-SECRET")
    logging.getLogger("inngest").error("unauthorized: no signature")

    assert runtime_first.seen == []  # nothing reaches the runtime's own handler any more
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [(line["level"], line["message"]) for line in lines] == [
        ("warning", "refused token [REDACTED]")
    ]


def test_handlers_added_after_ours_are_kept_and_still_see_no_probe_error(
    runtime_first, capsys
) -> None:
    configure_logging(level="INFO", fmt="json")
    later = _RuntimeHandler()
    logging.getLogger().addHandler(later)
    configure_logging(level="INFO", fmt="json")  # a warm re-import configures again

    logging.getLogger("prometei.test").info("kept")
    logging.getLogger("inngest").error("unauthorized: signature expired")

    assert later.seen == [("INFO", "kept")]
    out = capsys.readouterr().out
    assert out.count('"kept"') == 1
    assert "unauthorized" not in out


def test_probe_lines_show_at_debug_level_only(runtime_first, capsys) -> None:
    configure_logging(level="DEBUG", fmt="json")
    logging.getLogger("inngest").error("unauthorized: signature missing")
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert (line["level"], line["logger"]) == ("debug", "inngest")
