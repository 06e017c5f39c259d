"""The harness itself: with no dev server to be had, the tier fails and says how to get one."""

from __future__ import annotations

import pytest

from tests.e2e.harness import DEV_SERVER_HELP, HarnessError, dev_server_command


def test_no_dev_server_anywhere_is_a_failure_that_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)

    with pytest.raises(HarnessError) as failure:
        dev_server_command({"PATH": ""})

    assert str(failure.value) == DEV_SERVER_HELP
    assert "INNGEST_CLI" in DEV_SERVER_HELP and "npx" in DEV_SERVER_HELP


def test_inngest_cli_may_be_a_whole_command_line() -> None:
    argv, _ = dev_server_command({"INNGEST_CLI": "npx --yes inngest-cli@1.2.3"})

    assert argv == ["npx", "--yes", "inngest-cli@1.2.3"]
