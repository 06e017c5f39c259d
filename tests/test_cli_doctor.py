"""`python -m prometei doctor`: every check passing, then each one failing in turn.

KV, amoCRM and Rukovoditel are `responses` mocks; every captured byte of output is scanned
for every configured secret value.
"""

from __future__ import annotations

import json
import re

import pytest
import responses
from click.testing import CliRunner, Result

from prometei.cli.doctor import NAME_WIDTH, doctor
from prometei.config import settings_from_mapping
from prometei.doctor import (
    check_environment,
    check_inngest,
    check_webhook_secret,
    run_checks,
)
from tests.conftest import AMO_BASE, BASE_ENV, ERP_URL, TEST_SECRETS
from tests.fixtures import rukovoditel as ruko

KV_URL = "https://doctor-kv.upstash.io"
PUBLIC = "https://prometei.example.com"
OUR_HOOK = f"{PUBLIC}/api/webhook?token={TEST_SECRETS['AMOCRM_WEBHOOK_SECRET']}"
KV_TOKEN = "kv-rest-token-SECRET-5555"
ACCOUNT = {"id": 29085955, "subdomain": "example", "name": "Example LLC"}
ALL_SECRETS = [*TEST_SECRETS.values(), KV_TOKEN]


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in ALL_SECRETS:
            assert secret not in text


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(doctor, list(args))
    assert_no_secrets(result.output, result.stdout, result.stderr)
    return result


def rows(result: Result) -> dict[str, str]:
    """Check name -> status, read from the table."""
    found: dict[str, str] = {}
    for line in flat(result).splitlines():
        match = re.match(r"^(\S(?:.*?\S)?)\s+(OK|FAIL|SKIP|WARN)\s", line + " ")
        if match:
            found[match.group(1)] = match.group(2)
    return found


def flat(result: Result) -> str:
    """The output with wrapping undone (details wrap at 72 columns)."""
    indent = re.compile(r"\n\s{20,}(?!fix: )")
    return indent.sub(" ", result.stdout)


def fix_of(result: Result, name: str) -> str:
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
    for line in lines[start + 1 :]:
        if not line.startswith(" "):
            break
        if line.strip().startswith("fix: "):
            return line.strip()
    raise AssertionError(f"no fix line under {name}")


ERP_ANSWERS = {
    "login": ruko.LOGIN_OK,
    "get_entity_fields": ruko.ENTITY_FIELDS_70,
    "get_field_choices": ruko.CHOICES_1042,
}


def answer_erp(mock: responses.RequestsMock, **answers: str) -> None:
    """Rukovoditel answering each action with a recorded body (`answers` override them)."""
    bodies = {**ERP_ANSWERS, **answers}

    def answer(request):
        action = json.loads(request.body)["action"]
        return 200, {"Content-Type": ruko.HTML}, bodies[action]

    mock.add_callback(responses.POST, ERP_URL, callback=answer)


def hook(destination: str, *, disabled: bool = False, settings=("status_lead",)) -> dict:
    return {"id": 1, "destination": destination, "disabled": disabled, "settings": list(settings)}


def webhooks(*items: dict) -> dict:
    return {"_total_items": len(items), "_embedded": {"webhooks": list(items)}}


@pytest.fixture
def kv_env(set_env):
    set_env(KV_REST_API_URL=KV_URL, KV_REST_API_TOKEN=KV_TOKEN)


@pytest.fixture
def healthy(mock, kv_env, set_env):
    """Every outside system answers as it should; tests override one of them."""
    set_env(ERP_LEAD_ID_FIELD="1041", PUBLIC_URL=PUBLIC)
    kv_commands: list[list] = []

    def kv_answer(request):
        assert request.headers["Authorization"] == f"Bearer {KV_TOKEN}"
        command = json.loads(request.body)
        kv_commands.append(command)
        result = {"PING": "PONG", "SET": "OK"}[command[0]]
        return 200, {}, json.dumps({"result": result})

    mock.add_callback(responses.POST, KV_URL, callback=kv_answer)
    mock.get(f"{AMO_BASE}/api/v4/account", json=ACCOUNT)
    mock.get(f"{AMO_BASE}/api/v4/webhooks", json=webhooks(hook(OUR_HOOK)))
    answer_erp(mock)
    mock.kv_commands = kv_commands
    return mock


def test_everything_passing_exits_0_with_an_ok_row_per_check(healthy):
    result = invoke()
    assert result.exit_code == 0, result.output
    assert rows(result) == {
        "environment": "OK",
        "kv": "OK",
        "amocrm": "OK",
        "webhook subscription": "OK",
        "erp": "OK",
        "erp entity": "OK",
        "erp field map": "OK",
        "erp one record": "OK",
        "inngest": "OK",
        "webhook secret": "OK",
    }
    assert "0 failed: ready" in flat(result)
    assert "amoCRM budget runs 5 + backfill 1 + reconcile 1 = 7 of 7 requests/s" in flat(result)
    assert "account 29085955 'Example LLC'" in flat(result)
    assert "login accepted by erp.example.test as api" in flat(result)
    assert [c[0] for c in healthy.kv_commands] == ["PING", "SET"]
    # The amoCRM token went in a header, never into what was printed.
    amo_call = next(c for c in healthy.calls if "/api/v4/account" in c.request.url)
    assert amo_call.request.headers["Authorization"].endswith(TEST_SECRETS["AMOCRM_ACCESS_TOKEN"])


def test_json_output_lists_every_check(healthy):
    result = invoke("--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert [c["name"] for c in document["checks"]] == [
        "environment",
        "kv",
        "amocrm",
        "webhook subscription",
        "erp",
        "erp entity",
        "erp field map",
        "erp one record",
        "inngest",
        "webhook secret",
    ]


def test_offline_contacts_nothing(mock):
    result = invoke("--offline")
    assert result.exit_code == 0, result.output
    assert rows(result)["amocrm"] == "SKIP"
    assert rows(result)["erp"] == "SKIP"
    assert len(mock.calls) == 0


def test_missing_variable_fails_and_skips_what_needs_it(healthy, set_env):
    set_env(AMOCRM_SUBDOMAIN=None)
    result = invoke()
    assert result.exit_code == 1
    table = rows(result)
    assert table["AMOCRM_SUBDOMAIN"] == "FAIL"
    assert table["amocrm"] == "SKIP"
    assert "missing: not set" in flat(result)
    assert "fix: set AMOCRM_SUBDOMAIN" in fix_of(result, "AMOCRM_SUBDOMAIN")
    # The rest still ran.
    assert table["erp"] == "OK"


def test_malformed_variable_fails_with_the_rule_and_the_rest_still_runs(healthy, set_env):
    set_env(CRM_API_URL="erp.example.test/api/rest.php", ERP_FIELD_MAP="{not json")
    result = invoke()
    assert result.exit_code == 1
    table = rows(result)
    assert table["CRM_API_URL"] == "FAIL"
    assert table["ERP_FIELD_MAP"] == "FAIL"
    assert "malformed" in flat(result) and "must be an http(s) URL" in flat(result)
    assert "api/rest.php" in fix_of(result, "CRM_API_URL")
    assert table["erp"] == "SKIP"
    assert table["amocrm"] == "OK"


def test_no_amocrm_token_configuration_fails(healthy, set_env):
    set_env(AMOCRM_ACCESS_TOKEN=None)
    result = invoke()
    assert result.exit_code == 1
    assert rows(result)["amoCRM token"] == "FAIL"
    assert rows(result)["amocrm"] == "SKIP"


def test_kv_401_fails_with_a_token_fix(mock, kv_env):
    mock.post(KV_URL, status=401, json={"error": "WRONGPASS invalid or missing auth token"})
    mock.get(f"{AMO_BASE}/api/v4/account", json=ACCOUNT)
    mock.get(f"{AMO_BASE}/api/v4/webhooks", json=webhooks(hook(OUR_HOOK)))
    answer_erp(mock)
    result = invoke()
    assert result.exit_code == 1
    assert rows(result)["kv"] == "FAIL"
    assert "HTTP 401" in flat(result)
    assert "KV_REST_API_TOKEN" in fix_of(result, "kv")


def test_kv_read_only_token_fails_on_the_probe_write(mock, kv_env):
    def kv_answer(request):
        if json.loads(request.body)[0] == "PING":
            return 200, {}, json.dumps({"result": "PONG"})
        return 400, {}, json.dumps({"error": "NOPERM this user has no permissions to run 'set'"})

    mock.add_callback(responses.POST, KV_URL, callback=kv_answer)
    mock.get(f"{AMO_BASE}/api/v4/account", json=ACCOUNT)
    mock.get(f"{AMO_BASE}/api/v4/webhooks", json=webhooks(hook(OUR_HOOK)))
    answer_erp(mock)
    result = invoke()
    assert result.exit_code == 1
    assert "read-write" in fix_of(result, "kv")


def test_kv_half_configured_is_an_environment_failure(set_env):
    set_env(KV_REST_API_URL=KV_URL)
    result = invoke("--offline")
    assert result.exit_code == 1
    assert rows(result)["KV_REST_API_TOKEN"] == "FAIL"
    assert "half-configured" in flat(result)


def test_amocrm_401_fails_with_a_new_token_fix(healthy):
    healthy.replace(responses.GET, f"{AMO_BASE}/api/v4/account", status=401, json={})
    result = invoke()
    assert result.exit_code == 1
    assert rows(result)["amocrm"] == "FAIL"
    assert "(401)" in flat(result)
    assert "AMOCRM_ACCESS_TOKEN" in fix_of(result, "amocrm")
    assert rows(result)["erp"] == "OK"


@pytest.fixture
def oauth_env(set_env):
    set_env(
        AMOCRM_ACCESS_TOKEN=None,
        AMOCRM_CLIENT_ID="client-id-1234",
        AMOCRM_CLIENT_SECRET="client-secret-SECRET-8888",
        AMOCRM_REDIRECT_URI="https://prometei.example.test/api/oauth/callback",
    )


def test_oauth_without_stored_tokens_fails_with_the_connect_page(mock, oauth_env):
    answer_erp(mock)
    result = invoke()
    assert "client-secret-SECRET-8888" not in result.output
    assert result.exit_code == 1
    assert rows(result)["amocrm"] == "FAIL"
    assert rows(result)["kv"] == "SKIP"  # local file store, nothing to reach
    fix = fix_of(result, "amocrm")
    assert "https://prometei.example.test/api/oauth/callback" in fix
    assert not any("/api/v4/" in call.request.url for call in mock.calls)


def test_oauth_with_a_stored_pair_passes(mock, oauth_env, project_env):
    import time
    from pathlib import Path

    from pydantic import SecretStr

    from prometei.store.base import TokenRecord
    from prometei.store.file import FileTokenStore

    now = int(time.time())
    FileTokenStore(Path(project_env["PROMETEI_STATE_DIR"])).write(
        TokenRecord(
            access_token=SecretStr("oauth-access-SECRET-aaaa"),
            refresh_token=SecretStr("oauth-refresh-SECRET-rrrr"),
            expires_at=now + 86400,
            obtained_at=now - 60,
            host="example.amocrm.ru",
        )
    )
    mock.get(f"{AMO_BASE}/api/v4/account", json=ACCOUNT)
    mock.get(f"{AMO_BASE}/api/v4/webhooks", json=webhooks(hook(OUR_HOOK)))
    answer_erp(mock)
    result = invoke()
    assert result.exit_code == 0, result.output
    assert "OAuth accepted by example.amocrm.ru" in flat(result)
    assert "oauth-access-SECRET-aaaa" not in result.output
    assert mock.calls[0].request.headers["Authorization"] == "Bearer oauth-access-SECRET-aaaa"


def test_amocrm_403_says_blocked_or_whitelist(healthy):
    healthy.replace(
        responses.GET, f"{AMO_BASE}/api/v4/account", status=403, body="<html>blocked</html>"
    )
    result = invoke()
    assert result.exit_code == 1
    assert "support" in fix_of(result, "amocrm")


def test_amocrm_token_of_another_account_id_fails(healthy):
    healthy.replace(responses.GET, f"{AMO_BASE}/api/v4/account", json={**ACCOUNT, "id": 11111111})
    result = invoke()
    assert result.exit_code == 1
    assert "AMOCRM_ACCOUNT_ID is 29085955" in flat(result)
    assert "AMOCRM_ACCOUNT_ID=11111111" in fix_of(result, "amocrm")


def test_erp_500_empty_body_is_a_login_failure(healthy):
    healthy.replace(responses.POST, ERP_URL, status=500, body="", content_type=ruko.HTML)
    result = invoke()
    assert result.exit_code == 1
    assert rows(result)["erp"] == "FAIL"
    assert "login_fail" in flat(result)
    assert "CRM_API_USERNAME and CRM_API_PASSWORD" in fix_of(result, "erp")
    login = json.loads(healthy.calls[-1].request.body)
    assert login["action"] == "login"


def test_erp_key_mismatch_points_at_the_api_key(healthy):
    healthy.replace(
        responses.POST, ERP_URL, status=500, body=ruko.ERROR_KEY_MISMATCH, content_type=ruko.HTML
    )
    result = invoke()
    assert result.exit_code == 1
    assert "CRM_API_KEY" in fix_of(result, "erp")


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("INNGEST_SIGNING_KEY", "sk-prod-0123456789abcdef", "signkey-<env>-<hex>"),
        ("INNGEST_SIGNING_KEY", "signkey-prod-XYZ" + "0" * 40, "signkey-<env>-<hex>"),
        ("INNGEST_SIGNING_KEY", "signkey-prod-abc123", "expected 64"),
        ("INNGEST_SIGNING_KEY", None, "INNGEST_SIGNING_KEY is not set"),
        ("INNGEST_EVENT_KEY", "signkey-prod-" + "ab" * 32, "is a signing key"),
        ("INNGEST_EVENT_KEY", "has spaces in it, sadly", "16 or more letters"),
        ("INNGEST_EVENT_KEY", None, "INNGEST_EVENT_KEY is not set"),
    ],
)
def test_inngest_key_of_the_wrong_form_fails(healthy, set_env, variable, value, problem):
    set_env(**{variable: value})
    result = invoke()
    assert result.exit_code == 1
    assert rows(result)["inngest"] == "FAIL"
    assert problem in flat(result)
    assert "Inngest dashboard" in fix_of(result, "inngest")
    if value:
        assert value not in result.output


def test_webhook_secret_unset_fails_in_cloud_mode(healthy, set_env):
    set_env(AMOCRM_WEBHOOK_SECRET=None)
    result = invoke()
    assert result.exit_code == 1
    assert rows(result)["webhook secret"] == "FAIL"
    assert "secrets.token_urlsafe(32)" in fix_of(result, "webhook secret")


def test_dev_mode_needs_no_keys_and_only_warns_about_the_webhook_secret(healthy, set_env):
    set_env(
        INNGEST_DEV="1",
        INNGEST_SIGNING_KEY=None,
        INNGEST_EVENT_KEY=None,
        AMOCRM_WEBHOOK_SECRET=None,
    )
    healthy.get("http://127.0.0.1:8288/dev", json={"functions": []})
    result = invoke()
    assert result.exit_code == 0, result.output
    assert rows(result)["inngest"] == "OK"
    assert rows(result)["inngest dev server"] == "OK"
    assert rows(result)["webhook secret"] == "WARN"
    assert rows(result)["webhook subscription"] == "SKIP"  # no secret: ours is unknown
    assert "1 warning(s), 0 failed" in flat(result)


def test_dev_mode_probes_the_dev_server_and_says_how_to_start_it(healthy, set_env):
    set_env(INNGEST_DEV="1", INNGEST_SIGNING_KEY=None, INNGEST_EVENT_KEY=None)
    result = invoke()  # nothing answers at http://127.0.0.1:8288 (the mock refuses)
    assert result.exit_code == 1
    assert rows(result)["inngest dev server"] == "FAIL"
    assert "no dev server at http://127.0.0.1:8288/" in flat(result)
    fix = fix_of(result, "inngest dev server")
    assert "npx inngest-cli@latest dev -u http://127.0.0.1:3000/api/inngest" in fix


@pytest.mark.parametrize(
    ("answer", "status", "expected"),
    [
        (webhooks(hook(OUR_HOOK, disabled=True)), "FAIL", "has disabled our webhook"),
        (webhooks(hook("https://elsewhere.example/hook?key=zzz")), "FAIL", "none of them to"),
        (webhooks(hook(OUR_HOOK, settings=("add_lead",))), "FAIL", "not subscribed to lead status"),
        (None, "FAIL", "none of them to"),  # amoCRM's 204: no webhooks at all
    ],
)
def test_webhook_subscription_row_fails_when_ours_does_not_deliver(
    healthy, answer, status, expected
):
    healthy.replace(
        responses.GET,
        f"{AMO_BASE}/api/v4/webhooks",
        **({"json": answer} if answer is not None else {"status": 204}),
    )
    result = invoke()
    assert result.exit_code == 1
    assert rows(result)["webhook subscription"] == status
    assert expected in flat(result)
    assert "python -m prometei webhook register" in fix_of(result, "webhook subscription")


def test_webhook_subscription_row_warns_during_a_switch_over(healthy, set_env):
    set_env(AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="1")
    old_url = f"{PUBLIC}/api/amocrm-webhook"
    healthy.replace(responses.GET, f"{AMO_BASE}/api/v4/webhooks", json=webhooks(hook(old_url)))
    result = invoke()
    assert rows(result)["webhook subscription"] == "WARN"
    assert "only while AMOCRM_WEBHOOK_ALLOW_LEGACY_URL=1" in flat(result)
    assert "unset AMOCRM_WEBHOOK_ALLOW_LEGACY_URL" in fix_of(result, "webhook subscription")


def test_webhook_subscription_row_warns_when_the_token_may_not_list_webhooks(healthy):
    healthy.replace(
        responses.GET, f"{AMO_BASE}/api/v4/webhooks", status=403, json={"title": "Forbidden"}
    )
    result = invoke()
    assert result.exit_code == 0, result.output
    assert rows(result)["webhook subscription"] == "WARN"
    assert "administrator" in fix_of(result, "webhook subscription")


# ---- the checks as plain functions ------------------------------------------------------------


def test_environment_rows_never_quote_a_malformed_secret_value():
    environ = dict(BASE_ENV, CRM_API_URL="ftp://user:hunter2-SECRET@erp.test/")
    found, settings = check_environment(environ)
    assert [c.name for c in found if not c.ok] == ["CRM_API_URL"]
    assert "hunter2" not in found[0].detail
    assert settings is not None and settings.crm_api_url is None


def test_erp_url_with_credentials_fails_without_quoting_them():
    environ = dict(BASE_ENV, CRM_API_URL="https://api:hunter2-SECRET@erp.test/api/rest.php")
    found, _ = check_environment(environ)
    assert [c.name for c in found if not c.ok] == ["CRM_API_URL"]
    assert "CRM_API_PASSWORD" in found[0].detail
    assert "hunter2" not in found[0].detail + found[0].fix


def test_plain_http_erp_url_is_a_warning_not_a_failure(set_env):
    environ = dict(BASE_ENV, CRM_API_URL="http://erp.example.test/api/rest.php")
    found, settings = check_environment(environ)
    assert settings is not None
    assert [(c.name, c.status) for c in found] == [("environment", "OK"), ("CRM_API_URL", "WARN")]
    assert "erp.example.test" in found[1].detail and "unencrypted" in found[1].detail
    assert "https://" in found[1].fix

    set_env(CRM_API_URL="http://erp.example.test/api/rest.php")
    result = invoke("--offline")
    assert result.exit_code == 0, result.output
    assert rows(result)["CRM_API_URL"] == "WARN"
    assert "https://" in fix_of(result, "CRM_API_URL")


def test_inngest_fallback_key_equal_to_the_primary_fails():
    settings = settings_from_mapping(
        dict(BASE_ENV, INNGEST_SIGNING_KEY_FALLBACK=TEST_SECRETS["INNGEST_SIGNING_KEY"])
    )
    check = check_inngest(settings)
    assert not check.ok
    assert "equals INNGEST_SIGNING_KEY" in check.detail


def test_short_webhook_secret_is_a_warning():
    settings = settings_from_mapping(dict(BASE_ENV, AMOCRM_WEBHOOK_SECRET="abc123"))
    check = check_webhook_secret(settings)
    assert check.ok and check.status == "WARN"
    assert "6 chars" in check.detail
    assert "abc123" not in check.detail + check.fix


def test_run_checks_reports_rows_as_they_finish():
    seen: list[str] = []
    results = run_checks(BASE_ENV, offline=True, on_check=lambda c: seen.append(c.name))
    assert seen == [c.name for c in results]
    assert seen[-2:] == ["inngest", "webhook secret"]


# ---- registration -----------------------------------------------------------------------------


def test_main_registers_every_operator_command_with_examples(monkeypatch, capsys):
    from prometei.cli import cli, main

    monkeypatch.setattr("sys.argv", ["prometei", "--help"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    listed = capsys.readouterr().out
    for name in ("doctor", "webhook", "replay", "backfill", "tokens", "erp"):
        assert f"  {name} " in listed
    for path in (
        ["doctor"],
        ["webhook"],
        ["webhook", "send"],
        ["webhook", "register"],
        ["webhook", "status"],
        ["serve"],
        ["tokens"],
        ["erp"],
        ["replay"],
        ["backfill"],
        ["tokens", "status"],
        ["erp", "fields"],
    ):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0
        assert "Example" in result.output, path


def test_a_row_named_after_a_long_variable_keeps_the_columns_aligned(set_env):
    set_env(AMOCRM_WEBHOOK_ALLOW_LEGACY_URL="1")
    result = invoke("--offline")
    lines = result.stdout.splitlines()
    at = lines.index("AMOCRM_WEBHOOK_ALLOW_LEGACY_URL")  # the name alone on its line
    assert lines[at + 1].startswith(" " * NAME_WIDTH + "WARN")
    header_status = lines[0].index("STATUS")
    for line in lines[1:]:
        match = re.match(r"^(\S.*?)\s+(OK|FAIL|SKIP|WARN)\s", line + " ")
        if match:
            assert line.index(match.group(2), len(match.group(1))) == header_status, line


def test_offline_rows_have_the_names_they_have_online(set_env):
    set_env(AMOCRM_SYNC_NOTE="1", AMOCRM_ERP_ID_FIELD="1120001")
    table = rows(invoke("--offline"))
    for name in ("erp entity", "erp field map", "erp one record", "amocrm erp id field"):
        assert table[name] == "SKIP", table
    assert "erp schema" not in table
