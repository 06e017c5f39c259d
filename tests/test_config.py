"""Settings: every malformed or missing variable is reported by name."""

from __future__ import annotations

import pytest

from prometei.config import settings_from_mapping
from prometei.errors import ConfigError


def test_defaults_match_the_design_card() -> None:
    settings = settings_from_mapping({})
    assert settings.erp_entity_id == 70
    assert settings.erp_field_map == {"field_1039": "name", "field_1040": "price"}
    assert settings.amocrm_base_domain == "amocrm.ru"
    assert settings.mode == "cloud"
    assert settings.store_kind == "file"
    assert settings.event_api_origin == "https://inn.gs/"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ERP_ENTITY_ID": "seventy"}, "ERP_ENTITY_ID"),
        ({"ERP_ENTITY_ID": "0"}, "ERP_ENTITY_ID"),
        ({"ERP_FIELD_MAP": "{not json"}, "ERP_FIELD_MAP"),
        ({"ERP_FIELD_MAP": '{"name": "field_1039"}'}, "ERP_FIELD_MAP"),
        ({"ERP_FIELD_MAP": '{"field_1039": "colour"}'}, "ERP_FIELD_MAP"),
        ({"AMOCRM_TRIGGER_STATUSES": "142"}, "AMOCRM_TRIGGER_STATUSES"),
        ({"AMOCRM_BASE_DOMAIN": "example.com"}, "AMOCRM_BASE_DOMAIN"),
        ({"AMOCRM_SUBDOMAIN": "not a subdomain!"}, "AMOCRM_SUBDOMAIN"),
        ({"AMOCRM_SUBDOMAIN": "abc-"}, "AMOCRM_SUBDOMAIN"),
        ({"AMOCRM_SUBDOMAIN": "www"}, "AMOCRM_SUBDOMAIN"),
        ({"CRM_API_URL": "erp.example.com/api/rest.php"}, "CRM_API_URL"),
        ({"ERP_LEAD_ID_FIELD": "field_1041"}, "ERP_LEAD_ID_FIELD"),
        ({"ERP_REQUEST_FORMAT": "xml"}, "ERP_REQUEST_FORMAT"),
        ({"ERP_SCHEMA_TTL": "-1"}, "ERP_SCHEMA_TTL"),
        ({"ERP_TIMEZONE": "Mars/Olympus"}, "ERP_TIMEZONE"),
        ({"ERP_TIMEZONE": "+25:00"}, "ERP_TIMEZONE"),
    ],
)
def test_malformed_variable_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        settings_from_mapping(env)


@pytest.mark.parametrize(
    ("value", "offset_hours"),
    [("+03:00", 3), ("-0530", -5.5), ("UTC", 0), ("Europe/Moscow", 3)],
)
def test_erp_timezone_takes_an_offset_or_a_zone_name(value: str, offset_hours: float) -> None:
    from datetime import datetime, timedelta

    tz = settings_from_mapping({"ERP_TIMEZONE": value}).erp_tzinfo
    assert datetime(2026, 11, 30, tzinfo=tz).utcoffset() == timedelta(hours=offset_hours)


def test_erp_schema_defaults() -> None:
    settings = settings_from_mapping({})
    assert (settings.erp_schema_ttl, settings.erp_timezone) == (600, "+03:00")


def test_half_configured_kv_names_both_families() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"KV_REST_API_URL": "https://kv.example.test"})
    assert "KV_REST_API_TOKEN" in str(caught.value)
    assert "UPSTASH_REDIS_REST_TOKEN" in str(caught.value)


def test_upstash_names_are_accepted_for_kv() -> None:
    settings = settings_from_mapping(
        {"UPSTASH_REDIS_REST_URL": "https://kv.example.test", "UPSTASH_REDIS_REST_TOKEN": "t0k3n"}
    )
    assert settings.store_kind == "kv"
    assert settings.kv_rest_api_url == "https://kv.example.test"


def test_erp_api_aliases_from_the_typescript_project() -> None:
    settings = settings_from_mapping({"ERP_API_URL": "https://erp.test/api/rest.php"})
    assert settings.crm_api_url == "https://erp.test/api/rest.php"


def test_trigger_statuses_and_subdomain_are_normalised() -> None:
    settings = settings_from_mapping(
        {
            "AMOCRM_TRIGGER_STATUSES": " 7012345:142, 7012345:143 ,",
            "AMOCRM_SUBDOMAIN": "OOOPrometei.amocrm.ru",
        }
    )
    assert settings.amocrm_trigger_statuses == ((7012345, 142), (7012345, 143))
    assert settings.amocrm_host == "oooprometei.amocrm.ru"


def test_dev_mode_reads_a_dev_server_url() -> None:
    settings = settings_from_mapping({"INNGEST_DEV": "http://127.0.0.1:9999"})
    assert settings.is_dev
    assert settings.event_api_origin == "http://127.0.0.1:9999/"
    assert not settings_from_mapping({"INNGEST_DEV": "0"}).is_dev


def test_empty_values_count_as_unset() -> None:
    settings = settings_from_mapping({"ERP_ENTITY_ID": "", "AMOCRM_ACCESS_TOKEN": "  "})
    assert settings.erp_entity_id == 70
    assert settings.amocrm_access_token is None


def test_require_names_every_missing_erp_variable() -> None:
    settings = settings_from_mapping({"CRM_API_URL": "https://erp.test/api/rest.php"})
    with pytest.raises(ConfigError) as caught:
        settings.require_erp()
    message = str(caught.value)
    assert "CRM_API_KEY" in message and "CRM_API_PASSWORD" in message
    assert "CRM_API_URL" not in message


def test_secrets_never_show_in_repr_or_errors() -> None:
    settings = settings_from_mapping({"CRM_API_PASSWORD": "pw-SECRET-value", "ERP_ENTITY_ID": "70"})
    assert "pw-SECRET-value" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"CRM_API_PASSWORD": "pw-SECRET-value", "ERP_ENTITY_ID": "x"})
    assert "pw-SECRET-value" not in str(caught.value)
    assert "pw-SECRET-value" in settings.secret_values()


def test_env_example_documents_every_variable() -> None:
    import re
    from pathlib import Path

    from prometei.config import ENV_NAMES

    text = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M))
    # Aliases and Vercel's own variables need no line of their own.
    expected = {
        name for name in ENV_NAMES if not name.startswith(("ERP_API_", "UPSTASH_", "VERCEL"))
    }
    assert expected <= documented, sorted(expected - documented)


def test_dev_mode_is_refused_on_vercel() -> None:
    with pytest.raises(ConfigError, match="INNGEST_DEV is set on Vercel"):
        settings_from_mapping({"VERCEL": "1", "INNGEST_DEV": "1"})
    assert settings_from_mapping({"VERCEL": "1"}).mode == "cloud"
    allowed = settings_from_mapping(
        {"VERCEL": "1", "INNGEST_DEV": "1", "PROMETEI_ALLOW_DEV_ON_VERCEL": "1"}
    )
    assert allowed.is_dev


def test_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"CRM_API_URL": "https://api:hunter2-SECRET@erp.test/api/rest.php"})
    message = str(caught.value)
    assert "CRM_API_URL" in message and "CRM_API_USERNAME and CRM_API_PASSWORD" in message
    assert "hunter2" not in message
    # An "@" after the host is not user info.
    url = "https://erp.test/api/rest.php?contact=a@b.test"
    assert settings_from_mapping({"CRM_API_URL": url}).crm_api_url == url


def test_secret_env_values_reads_secrets_even_from_a_config_that_does_not_load() -> None:
    from prometei.config import ENV_NAMES, secret_env_values

    assert ENV_NAMES["ERP_API_PASSWORD"] == ENV_NAMES["CRM_API_PASSWORD"] == "crm_api_password"
    environ = {
        "CRM_API_PASSWORD": " pw-SECRET ",
        "KV_REST_API_TOKEN": "kv-token",
        "CRM_API_USERNAME": "api",
        "ERP_ENTITY_ID": "not a number",
    }
    assert sorted(secret_env_values(environ)) == ["kv-token", "pw-SECRET"]
