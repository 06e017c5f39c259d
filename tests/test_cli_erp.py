"""`python -m prometei erp fields`: the entity's fields, for writing ERP_FIELD_MAP."""

from __future__ import annotations

import json

from click.testing import CliRunner, Result

from prometei.cli.erp import erp
from tests.conftest import TEST_SECRETS


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(erp, ["fields", *args])
    for secret in TEST_SECRETS.values():
        assert secret not in result.output
    return result


def test_fields_of_erp_entity_id_with_types_choices_and_map_sources(erp, set_env) -> None:
    set_env(ERP_LEAD_ID_FIELD="1041")
    result = invoke()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Entity 70 (ERP_ENTITY_ID): 10 fields"
    by_id = {line.split()[0]: line for line in lines if line[:4].isdigit()}
    assert "input_numeric" in by_id["1040"] and "<- price" in by_id["1040"]
    assert "Название *" in by_id["1039"] and "<- name" in by_id["1039"]
    assert "<- the lead id (lookup)" in by_id["1041"]
    assert "choices: 68 Новая, 69 В работе" in by_id["1042"]  # noqa: RUF001
    assert "(filled by Rukovoditel)" in by_id["1030"]
    assert [c["action"] for c in erp.calls] == ["get_entity_fields", "get_field_choices"]


def test_another_entity_as_json(erp) -> None:
    erp.entities[25].fields[214].required = True
    result = invoke("--entity", "25", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["entity_id"] == 25 and document["erp_entity_id"] is False
    amount = next(f for f in document["fields"] if f["id"] == 214)
    assert amount == {
        "id": 214,
        "key": "field_214",
        "type": "input_numeric",
        "name": "Сумма",
        "required": True,
        "heading": False,
        "writable": True,
        "kind": "numeric",
        "choices": None,
        "filled_by": "",  # ERP_FIELD_MAP belongs to entity 70
    }


def test_choices_readable_by_administrators_only_are_flagged(erp) -> None:
    erp.admin = False
    result = invoke()
    assert result.exit_code == 0
    assert "choices: administrators only" in result.output


def test_an_unknown_entity_exits_1_naming_it(erp) -> None:
    result = invoke("--entity", "9999")
    assert result.exit_code == 1
    assert "Entity #9999 does not exist" in result.output


def test_an_old_server_exits_1_with_where_to_look(erp) -> None:
    erp.legacy = True
    result = invoke()
    assert result.exit_code == 1
    assert "Configuration -> Entities" in result.output


def test_missing_erp_settings_exit_2(set_env) -> None:
    set_env(CRM_API_URL=None)
    result = invoke()
    assert result.exit_code == 2
    assert "CRM_API_URL" in result.output
