"""The amoCRM budget's settings and its arithmetic, `webhook register|status`, the intake's
dev-mode 503, and `--env-file`: the operator-facing side of issues 13 and 16."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import responses
from click.testing import CliRunner, Result

from prometei.amocrm import budget
from prometei.cli import cli, main
from prometei.config import settings_from_mapping
from prometei.errors import ConfigError
from tests.conftest import TEST_SECRETS
from tests.fakes.amocrm import PROBLEM_JSON
from tests.fakes.web import Reply
from tests.support.amo_listing import WiredAmo, fake_amo

SECRET = TEST_SECRETS["AMOCRM_WEBHOOK_SECRET"]
PUBLIC = "https://prometei.example.com"
OURS = f"{PUBLIC}/api/webhook?token={SECRET}"


@pytest.fixture(autouse=True)
def _commands_registered(monkeypatch, capsys) -> None:
    """`main()` adds every command to the group (and then runs it: --help here)."""
    monkeypatch.setattr("sys.argv", ["prometei", "--help"])
    with pytest.raises(SystemExit):
        main()
    capsys.readouterr()


def command(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    for secret in TEST_SECRETS.values():
        assert secret not in result.output
    return result


# ---- the budget --------------------------------------------------------------------------------


def test_default_split_is_five_one_one_of_seven() -> None:
    settings = settings_from_mapping({})
    assert budget.describe(settings) == "runs 5 + backfill 1 + reconcile 1 = 7 of 7 requests/s"
    assert settings.reconcile_schedule == "*/10 * * * *"


@pytest.mark.parametrize(
    "env",
    [
        {"AMOCRM_BUDGET_RUNS": "6"},  # 6 + 1 + 1
        {"AMOCRM_BUDGET_BACKFILL": "3", "AMOCRM_BUDGET_RUNS": "4"},  # 4 + 3 + 1
        {"AMOCRM_BUDGET_RUNS": "8"},
    ],
)
def test_a_split_that_could_pass_amocrms_limit_is_refused_by_name(env) -> None:
    with pytest.raises(ConfigError, match="AMOCRM_BUDGET_") as caught:
        settings_from_mapping(env)
    assert "7" in caught.value.message


def test_a_share_of_nothing_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="AMOCRM_BUDGET_RECONCILE"):
        settings_from_mapping({"AMOCRM_BUDGET_RECONCILE": "0"})


def test_a_split_that_lends_the_backfill_more_loads() -> None:
    settings = settings_from_mapping({"AMOCRM_BUDGET_RUNS": "3", "AMOCRM_BUDGET_BACKFILL": "3"})
    assert budget.share(settings, "backfill") == 3


@pytest.mark.parametrize(
    ("value", "schedule"),
    [
        ("off", None),
        ("OFF", None),
        ("TZ=Europe/Moscow */5 * * * *", "TZ=Europe/Moscow */5 * * * *"),
    ],
)
def test_reconcile_cron_takes_a_schedule_or_off(value, schedule) -> None:
    assert settings_from_mapping({"AMOCRM_RECONCILE_CRON": value}).reconcile_schedule == schedule


@pytest.mark.parametrize("value", ["every 10 minutes", "* * * *", "*/10 * * * * *"])
def test_a_malformed_reconcile_cron_is_named(value) -> None:
    with pytest.raises(ConfigError, match="AMOCRM_RECONCILE_CRON"):
        settings_from_mapping({"AMOCRM_RECONCILE_CRON": value})


@pytest.mark.parametrize(
    ("env", "requests_per_run", "runs"),
    [
        ({}, 1, 5),
        ({}, 2, 2),  # a run with a write-back (or a contact read) counts twice
        ({"AMOCRM_BUDGET_RUNS": "4", "AMOCRM_BUDGET_BACKFILL": "2"}, 2, 2),
        ({"AMOCRM_BUDGET_RUNS": "1", "AMOCRM_BUDGET_RECONCILE": "5"}, 3, 1),
    ],
)
def test_the_handler_throttle_counts_every_request_of_a_run(env, requests_per_run, runs) -> None:
    assert budget.runs_per_second(settings_from_mapping(env), requests_per_run) == runs


def test_the_handler_is_throttled_by_its_share_with_no_burst(set_env) -> None:
    from prometei.config import get_settings
    from prometei.functions import lead_sync

    set_env(AMOCRM_BUDGET_RUNS="4", AMOCRM_BUDGET_BACKFILL="2")
    config = lead_sync.build(get_settings()).get_config("https://app.example.test/api/inngest")
    assert (config.main.throttle.limit, config.main.throttle.burst) == (4, 1)
    set_env(ERP_FIELD_MAP='{"field_1039": "name", "field_1043": "contact_phone"}')
    config = lead_sync.build(get_settings()).get_config("https://app.example.test/api/inngest")
    assert config.main.throttle.limit == 2


def test_one_limiter_per_lane_and_process_shared_by_every_client() -> None:
    settings = settings_from_mapping({})
    assert budget.limiter_for(settings, "runs") is budget.limiter_for(settings, "runs")
    assert budget.limiter_for(settings, "runs").limit == 5
    assert budget.limiter_for(settings, "reconcile").limit == 1
    assert budget.limiter_for(settings, "runs").brake is budget.process_brake()


# ---- webhook register / status --------------------------------------------------------------


@pytest.fixture
def amo(mock, set_env) -> Iterator[WiredAmo]:
    set_env(PUBLIC_URL=PUBLIC, AMOCRM_BUDGET_RECONCILE="5", AMOCRM_BUDGET_RUNS="1")
    with fake_amo(mock) as wired:
        yield wired


def test_status_lists_subscriptions_masked_and_finds_ours(amo) -> None:
    amo.amo.subscribe("https://other.example/hook?key=other-secret", ["add_contact"])
    amo.amo.subscribe(OURS, ["status_lead", "add_lead"])

    result = command("webhook", "status")

    assert result.exit_code == 0, result.output
    assert "other-secret" not in result.output
    assert "https://other.example/hook?key=[REDACTED]" in result.output
    assert "<- ours" in result.output and "ours: OK" in result.output


@pytest.mark.parametrize(
    ("setup", "state"),
    [
        (lambda amo: None, "MISSING"),
        (lambda amo: amo.subscribe(OURS, ["status_lead"], disabled=True), "DISABLED"),
        (
            lambda amo: amo.subscribe(f"{PUBLIC}/api/webhook?token=old-one", ["status_lead"]),
            "STALE TOKEN",
        ),
    ],
)
def test_status_exits_1_and_says_how_to_fix_when_ours_does_not_deliver(amo, setup, state) -> None:
    setup(amo.amo)
    result = command("webhook", "status")
    assert result.exit_code == 1
    assert f"ours: {state}" in result.output
    assert "python -m prometei webhook register" in result.output


@pytest.mark.parametrize("path", ["/api/inngest", "/api/amocrm-webhook"])
def test_status_counts_every_url_the_intake_accepts_with_the_secret_as_ours(amo, path) -> None:
    amo.amo.subscribe(f"{PUBLIC}{path}?token={SECRET}", ["status_lead"])
    result = command("webhook", "status")
    assert result.exit_code == 0, result.output
    assert "ours: OK" in result.output and "<- ours" in result.output


@pytest.mark.parametrize(
    ("destination", "env", "setting"),
    [
        (
            f"{PUBLIC}/api/amocrm-webhook",
            {"AMOCRM_WEBHOOK_ALLOW_LEGACY_URL": "1"},
            "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL",
        ),
        (
            f"{PUBLIC}/api/webhook?token=previous-secret-1",
            {"AMOCRM_WEBHOOK_SECRET_PREVIOUS": "previous-secret-1"},
            "AMOCRM_WEBHOOK_SECRET_PREVIOUS",
        ),
    ],
    ids=["old-url-opt-in", "previous-secret"],
)
def test_a_url_accepted_only_during_a_switch_over_is_temporary_and_register_adds_ours(
    amo, set_env, destination, env, setting
) -> None:
    set_env(**env)
    amo.amo.subscribe(destination, ["status_lead"])

    status = command("webhook", "status")

    assert status.exit_code == 0, status.output  # it delivers, for now
    assert "ours: TEMPORARY" in status.output and setting in status.output
    assert "previous-secret-1" not in status.output
    register = command("webhook", "register")
    assert register.exit_code == 0, register.output
    assert register.output.startswith("registered:") and "delete it in amoCRM" in register.output
    assert set(amo.amo.webhooks) == {destination, OURS}
    assert "ours: OK" in command("webhook", "status").output


def test_the_old_url_without_a_token_and_without_the_opt_in_is_refused(amo) -> None:
    amo.amo.subscribe(f"{PUBLIC}/api/amocrm-webhook", ["status_lead"])
    result = command("webhook", "status")
    assert result.exit_code == 1
    assert "ours: STALE TOKEN" in result.output
    assert "AMOCRM_WEBHOOK_ALLOW_LEGACY_URL" in result.output and "401" in result.output


def test_status_json_for_scripts(amo) -> None:
    amo.amo.subscribe(OURS, ["status_lead"])
    result = command("webhook", "status", "--json")
    document = json.loads(result.output)
    assert document["state"] == "ok"
    assert document["subscriptions"] == [
        {
            "destination": f"{PUBLIC}/api/webhook?token=[REDACTED]",
            "disabled": False,
            "settings": ["status_lead"],
        }
    ]


def test_register_subscribes_once_and_a_second_run_changes_nothing(amo) -> None:
    first = command("webhook", "register")
    assert first.exit_code == 0, first.output
    assert first.output.startswith("registered:")
    assert amo.amo.webhooks[OURS].settings == ["status_lead"]
    posts = len(amo.amo.requests("POST", "/api/v4/webhooks"))

    second = command("webhook", "register")

    assert second.exit_code == 0 and second.output.startswith("already registered")
    assert len(amo.amo.requests("POST", "/api/v4/webhooks")) == posts
    assert len(amo.amo.webhooks) == 1


@pytest.mark.parametrize("post_reenables", [True, False])
def test_register_enables_a_disabled_subscription_in_both_readings(amo, post_reenables) -> None:
    amo.amo.subscribe(OURS, ["status_lead", "update_lead"], disabled=True)
    amo.amo.post_reenables_webhook = post_reenables

    result = command("webhook", "register")

    assert result.exit_code == 0, result.output
    assert result.output.startswith("enabled again:")
    hook = amo.amo.webhooks[OURS]
    assert not hook.disabled and hook.settings == ["status_lead", "update_lead"]


@pytest.mark.parametrize("refusal", [404, 405])
def test_register_says_so_when_the_assumed_delete_is_not_there(amo, refusal) -> None:
    """DELETE /api/v4/webhooks is not in our reference: an account without it (and with a
    POST that refuses an existing destination) leaves ours disabled, and register says so."""
    amo.amo.subscribe(OURS, ["status_lead"], disabled=True)
    amo.amo.post_reenables_webhook = False
    amo.amo.fail_next(
        Reply.json({"title": "No such route", "status": refusal}, refusal, PROBLEM_JSON),
        match=lambda request: request.method == "DELETE",
    )

    result = command("webhook", "register")

    assert result.exit_code == 1
    assert "not registered: could not re-create the subscription" in result.output
    assert amo.amo.webhooks[OURS].disabled
    assert len(amo.amo.requests("DELETE", "/api/v4/webhooks")) == 1


def test_register_with_a_public_url_option_and_without_one(amo, set_env) -> None:
    set_env(PUBLIC_URL=None)
    missing = command("webhook", "register")
    assert missing.exit_code == 2 and "PUBLIC_URL" in missing.output
    given = command("webhook", "register", "--public-url", "https://other.example.com/")
    assert given.exit_code == 0, given.output
    assert f"https://other.example.com/api/webhook?token={SECRET}" in amo.amo.webhooks


def test_register_without_admin_rights_says_so(amo) -> None:
    amo.amo.webhooks_forbidden = True
    result = command("webhook", "register")
    assert result.exit_code == 1
    assert "administrator" in result.output


# ---- the intake's 503 in dev mode, --env-file ----------------------------------------------------


def test_dev_mode_503_names_the_dev_server_and_how_to_start_it(mock, set_env) -> None:
    from prometei.web.apps import create_local_app

    set_env(INNGEST_DEV="1", INNGEST_EVENT_KEY=None, INNGEST_SIGNING_KEY=None)
    refused = requests.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
    mock.add(responses.POST, "http://127.0.0.1:8288/e/NO_EVENT_KEY_SET", body=refused)
    client = create_local_app().test_client()
    response = client.post(
        f"/api/webhook?token={SECRET}",
        data="leads[status][0][id]=1&leads[status][0][status_id]=142&"
        "leads[status][0][pipeline_id]=7012345&account[subdomain]=example&account[id]=29085955",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 503
    message = response.get_json()["error"]
    assert "Inngest dev server at http://127.0.0.1:8288/" in message
    assert "connection to 127.0.0.1:8288 refused" in message
    assert "npx inngest-cli@latest dev -u http://localhost/api/inngest" in message
    assert "will retry" not in message


def test_a_named_env_file_that_does_not_exist_is_an_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = command("--env-file", ".env.prodution", "doctor", "--offline")
    assert result.exit_code == 2
    assert "'.env.prodution' does not exist" in result.output
    # The default .env may be absent: that is a normal local run.
    assert command("doctor", "--offline").exit_code in (0, 1)


def test_a_failed_replay_in_dev_mode_names_the_dev_server_and_promises_nothing(
    mock, set_env
) -> None:
    set_env(INNGEST_DEV="1", INNGEST_EVENT_KEY=None)
    refused = requests.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
    mock.add(responses.POST, "http://127.0.0.1:8288/e/NO_EVENT_KEY_SET", body=refused)
    result = command("replay", "25399013", "--key", "k1")
    assert result.exit_code == 1
    assert "connection to 127.0.0.1:8288 refused" in result.output
    assert "Inngest dev server runs at http://127.0.0.1:8288/" in result.output
    assert "npx inngest-cli@latest dev -u http://127.0.0.1:3000/api/inngest" in result.output
    assert "--key k1" in result.output and "will retry" not in result.output


def test_webhook_send_to_a_closed_local_port_says_how_to_start_the_intake(mock) -> None:
    refused = requests.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
    mock.add(responses.POST, "http://127.0.0.1:3000/api/webhook", body=refused)
    result = command("webhook", "send")
    assert result.exit_code == 1
    assert "connection to 127.0.0.1:3000 refused" in result.output
    assert "make serve" in result.output and "will retry" not in result.output
