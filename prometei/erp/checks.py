"""Would an ERP write work, and would it keep every value? The ERP half of `doctor`.

`diagnose(...)` looks at the configured entity the way `RecordWriter` will, without writing:

    erp entity       ERP_ENTITY_ID exists (get_entity_fields); servers before 3.4 cannot say
    erp field map    every ERP_FIELD_MAP key is a writable field of the entity, of a type its
                     source fits; dropdown choices are readable (and amoCRM's stage names are
                     among them when status_name/pipeline_name fill a dropdown); every field
                     the entity requires is filled
    erp one record   ERP_LEAD_ID_FIELD is a text field of the entity, or else where lead ->
                     record ids are remembered (and a failure on Vercel without KV)

Each row is a `Finding` (ok / warn / fail / skip, a detail and a fix); `prometei.doctor` turns
them into rows of its table. A fail means a write would fail or lose data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prometei.amocrm.models import source_of
from prometei.erp.plan import target_problem
from prometei.erp.records import check_lookup_field
from prometei.erp.schema import Choice, EntitySchema, ErpField, FieldKind, SchemaCache
from prometei.erp.values import SourceValue, compatibility
from prometei.errors import ConfigError, PrometeiError

if TYPE_CHECKING:
    from prometei.config import Settings
    from prometei.store.base import StateStore

Level = Literal["ok", "warn", "fail", "skip"]
StageNames = Callable[[str], list[str]]
FIELDS_COMMAND = "python -m prometei erp fields"
ROWS = ("erp entity", "erp field map", "erp one record")


@dataclass(frozen=True)
class Finding:
    name: str
    level: Level
    detail: str
    fix: str = ""


def diagnose(
    settings: Settings,
    schemas: SchemaCache,
    state: Callable[[], StateStore],
    stage_names: StageNames | None = None,
) -> list[Finding]:
    """The three rows, in order. `stage_names(source)` gives amoCRM's names for `status_name`
    or `pipeline_name` (compared with a dropdown they fill); None skips that comparison."""
    entity_id = settings.erp_entity_id
    try:
        schema = schemas.get(entity_id)
    except PrometeiError as exc:
        fail = Finding(
            "erp entity",
            "fail",
            exc.message,
            "set ERP_ENTITY_ID to the id of the receiving entity (Rukovoditel: "
            "Configuration -> Entities), then run doctor again",
        )
        return [fail, *(_skipped(name, "the entity is unknown (see above)") for name in ROWS[1:])]
    if schema is None:
        warn = Finding(
            "erp entity",
            "warn",
            f"Rukovoditel cannot describe entity {entity_id} (no get_entity_fields: Extension "
            "before 3.4), so writes are not checked against its fields",
            "update the Rukovoditel Extension to 3.4 or later",
        )
        return [warn, *(_skipped(name, "needs get_entity_fields") for name in ROWS[1:2]),
                one_record(settings, None, state)]  # fmt: skip
    return [
        entity_row(schema),
        field_map_row(settings, schema, schemas, stage_names),
        one_record(settings, schema, state),
    ]


def entity_row(schema: EntitySchema) -> Finding:
    writable = [f for f in schema.fields.values() if f.writable]
    heading = schema.heading()
    named = f", heading {heading.describe()}" if heading else ""
    return Finding(
        "erp entity",
        "ok",
        f"entity {schema.entity_id}: {len(schema.fields)} fields, {len(writable)} writable{named}",
    )


def field_map_row(
    settings: Settings,
    schema: EntitySchema,
    schemas: SchemaCache,
    stage_names: StageNames | None,
) -> Finding:
    problems: list[str] = []
    warnings: list[str] = []
    for key, source_name in settings.erp_field_map.items():
        source = source_of(source_name)
        if source is None:
            continue
        value = SourceValue(key, f"{key} <- {source_name}", source.kind, None)
        target, problem = target_problem(schema, value)
        if problem is not None or target is None:
            problems.append(f"{value.label}: {problem}")
            continue
        _, warning = compatibility(target, source.kind)
        if warning:
            warnings.append(f"{value.label}: {warning}")
        if target.kind == FieldKind.CHOICE:
            warnings += _choice_warnings(schema, schemas, target, source_name, stage_names)
    lookup = f"field_{settings.erp_lead_id_field}" if settings.erp_lead_id_field else None
    for required in schema.required():
        if required.key not in settings.erp_field_map and required.key != lookup:
            problems.append(f"{required.describe()} is required and ERP_FIELD_MAP does not fill it")
    mapped = len(settings.erp_field_map)
    if problems:
        return Finding(
            "erp field map",
            "fail",
            "; ".join(problems),
            f"correct ERP_FIELD_MAP (`{FIELDS_COMMAND}` lists entity "
            f"{schema.entity_id}'s fields, types and choices)",
        )
    if warnings:
        return Finding(
            "erp field map",
            "warn",
            "; ".join(warnings),
            f"map names (status_name, pipeline_name) to dropdowns, add the missing choices, "
            f"or give the API user administrator rights (`{FIELDS_COMMAND}`)",
        )
    return Finding(
        "erp field map",
        "ok",
        f"{mapped} field(s) of entity {schema.entity_id}, each writable and fit for its source",
    )


def _choice_warnings(
    schema: EntitySchema,
    schemas: SchemaCache,
    target: ErpField,
    source_name: str,
    stage_names: StageNames | None,
) -> list[str]:
    try:
        choices = schemas.choices(schema, target.id)
    except PrometeiError as exc:
        return [f"{target.key}: its choices could not be read ({exc.message})"]
    if choices is None:
        return [
            f"{target.key}: this API user may not read its choices (administrators only), so "
            "choice ids go unchecked and labels cannot be translated"
        ]
    if not choices:
        return [f"{target.describe()} has no active choices: every value would be refused"]
    if source_name not in ("status_name", "pipeline_name") or stage_names is None:
        return []
    return _stage_name_warnings(target, choices, source_name, stage_names)


def _stage_name_warnings(
    target: ErpField, choices: tuple[Choice, ...], source_name: str, stage_names: StageNames
) -> list[str]:
    """amoCRM names (stages or pipelines) that no choice of the dropdown carries."""
    try:
        names = stage_names(source_name)
    except PrometeiError as exc:
        return [f"{target.key}: amoCRM's stage names could not be read ({exc.message})"]
    known = {" ".join(c.name.split()).casefold() for c in choices}
    missing = sorted({n for n in names if " ".join(n.split()).casefold() not in known})
    if not missing:
        return []
    shown = ", ".join(repr(n) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
    return [f"{target.key}: amoCRM names with no choice of that label: {shown}"]


def one_record(
    settings: Settings, schema: EntitySchema | None, state: Callable[[], StateStore]
) -> Finding:
    name = "erp one record"
    field_id = settings.erp_lead_id_field
    if field_id is not None:
        if schema is None:
            return Finding(name, "ok", f"lookup by field {field_id} (its type cannot be checked)")
        try:
            found = check_lookup_field(schema, field_id)
        except ConfigError as exc:
            return Finding(
                name,
                "fail",
                exc.message,
                f"create a text (input) field for the amoCRM lead id in entity "
                f"{schema.entity_id} and set ERP_LEAD_ID_FIELD to its id",
            )
        return Finding(name, "ok", f"lookup by {found.describe()}: one record per lead, always")
    fix = (
        f"create a text (input) field for the amoCRM lead id in entity {settings.erp_entity_id} "
        "and set ERP_LEAD_ID_FIELD to its id"
    )
    try:
        store = state()
    except ConfigError as exc:
        return Finding(
            name,
            "fail",
            f"ERP_LEAD_ID_FIELD is not set and {exc.message}: leads would be refused",
            fix + ", or connect a KV store",
        )
    return Finding(
        name,
        "warn",
        f"ERP_LEAD_ID_FIELD is not set: lead -> record ids are remembered in {store.describe()}; "
        "a retry after a lost insert answer can still create a second record",
        fix,
    )


def _skipped(name: str, why: str) -> Finding:
    return Finding(name, "skip", f"not run: {why}")
