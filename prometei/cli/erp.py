"""`erp fields`: an entity's fields as Rukovoditel describes them, to write ERP_FIELD_MAP.

One `get_entity_fields` request, plus one `get_field_choices` per dropdown/radio field (the
choices are readable by administrators only; for other API users the column says so).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from prometei.cli._ops import EXIT_FAILED, EXIT_OK, EXIT_USAGE, exit_with, load_services
from prometei.errors import ConfigError, PrometeiError
from prometei.redaction import mask_values

NOTES = {
    "system": "filled by Rukovoditel",
    "other": "not written by prometei",
}


@click.group()
def erp() -> None:
    """Look at the ERP (Rukovoditel) the way prometei writes to it.

    \b
    Examples:
      python -m prometei erp fields
      python -m prometei erp fields --entity 25 --json
    """


@erp.command("fields")
@click.option(
    "--entity",
    "entity_id",
    type=click.IntRange(min=1),
    default=None,
    help="Entity id (default: ERP_ENTITY_ID).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the fields as JSON.")
def fields_command(entity_id: int | None, as_json: bool) -> None:
    """List an entity's fields: id, type, name, required, choices, and what fills them.

    Use the ids to write ERP_FIELD_MAP ({"field_<id>": "<lead source>"}) and
    ERP_LEAD_ID_FIELD (the id of a plain `input` field) without opening Rukovoditel's
    settings. The last column shows the ERP_FIELD_MAP source (<- name) and the lead id field.
    Exit code 0, 1 when the ERP refused or could not answer, 2 on a configuration error.

    \b
    Examples:
      python -m prometei erp fields
      python -m prometei erp fields --entity 25 --json
    """
    services = load_services()
    settings = services.settings
    secrets = settings.secret_values()
    entity = entity_id or settings.erp_entity_id
    try:
        described = describe(services, entity)
    except ConfigError as exc:
        exit_with(EXIT_USAGE, mask_values(f"configuration error: {exc.message}", secrets))
    except PrometeiError as exc:
        exit_with(EXIT_FAILED, mask_values(exc.message, secrets))
    if described is None:
        exit_with(
            EXIT_FAILED,
            "this Rukovoditel cannot describe its entities (no get_entity_fields: Extension "
            "before 3.4); read the field ids in Rukovoditel: Configuration -> Entities -> Fields",
        )
    if as_json:
        click.echo(mask_values(json.dumps(described, ensure_ascii=False, indent=2), secrets))
    else:
        for line in table(described):
            click.echo(mask_values(line, secrets))
    sys.exit(EXIT_OK)


def describe(services: Any, entity_id: int) -> dict[str, Any] | None:
    """The entity's fields as plain data (None: the server cannot say)."""
    from prometei.erp.schema import FieldKind

    schemas = services.erp_schemas
    schema = schemas.get(entity_id)
    if schema is None:
        return None
    settings = services.settings
    is_main = entity_id == settings.erp_entity_id
    sources = dict(settings.erp_field_map) if is_main else {}
    lookup = f"field_{settings.erp_lead_id_field}" if is_main and settings.erp_lead_id_field else ""
    rows = []
    for field in sorted(schema.fields.values(), key=lambda f: f.id):
        choices: list[dict[str, str]] | None = None
        if field.kind == FieldKind.CHOICE:
            found = schemas.choices(schema, field.id)
            choices = None if found is None else [{"id": c.id, "name": c.name} for c in found]
        filled_by = sources.get(field.key) or (
            "the lead id (lookup)" if field.key == lookup else ""
        )
        rows.append(
            {
                "id": field.id,
                "key": field.key,
                "type": field.short_type,
                "name": field.name,
                "required": field.required,
                "heading": field.heading,
                "writable": field.writable,
                "kind": field.kind.value,
                "choices": choices,
                "filled_by": filled_by,
            }
        )
    return {"entity_id": entity_id, "erp_entity_id": is_main, "fields": rows}


def table(described: dict[str, Any]) -> list[str]:
    entity = described["entity_id"]
    main = " (ERP_ENTITY_ID)" if described["erp_entity_id"] else ""
    lines = [f"Entity {entity}{main}: {len(described['fields'])} fields", ""]
    header = f"{'ID':<6} {'TYPE':<22} {'REQ':<4} {'NAME':<28} NOTES"
    lines += [header, "-" * len(header)]
    for row in described["fields"]:
        name = row["name"] + (" *" if row["heading"] else "")
        lines.append(
            f"{row['id']:<6} {row['type']:<22} {'yes' if row['required'] else '-':<4} "
            f"{name[:28]:<28} {_notes(row)}".rstrip()
        )
    lines += [
        "",
        "* heading field. Write a field as field_<ID> in ERP_FIELD_MAP; ERP_LEAD_ID_FIELD takes "
        "the ID of an `input` field.",
    ]
    return lines


def _notes(row: dict[str, Any]) -> str:
    parts = []
    if row["filled_by"]:
        parts.append(f"<- {row['filled_by']}")
    if row["kind"] in NOTES:
        parts.append(f"({NOTES[row['kind']]})")
    if row["kind"] == "choice":
        choices = row["choices"]
        if choices is None:
            parts.append("choices: administrators only")
        else:
            parts.append(
                "choices: " + (", ".join(f"{c['id']} {c['name']}" for c in choices) or "none")
            )
    return "  ".join(parts)
