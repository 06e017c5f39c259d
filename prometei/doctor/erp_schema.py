"""Would an ERP write work, and would it keep every value? The ERP schema rows of `doctor`.

`check_erp_schema(...)` looks at the configured entity the way `RecordWriter` will, without
writing:

    erp entity       ERP_ENTITY_ID exists (get_entity_fields); servers before 3.4 cannot say
    erp field map    every ERP_FIELD_MAP key is a writable field of the entity, of a type its
                     source fits; dropdown choices are readable (and amoCRM's stage names are
                     among them when status_name/pipeline_name fill a dropdown); every field
                     the entity requires is filled
    erp one record   ERP_LEAD_ID_FIELD is a text field of the entity, or else where lead ->
                     record ids are remembered (and a failure on Vercel without KV)

A failing row means a write would fail or lose data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometei.amocrm.models import source_of
from prometei.doctor.check import Check, fail, ok, passed, skip, warn
from prometei.erp.plan import target_problem
from prometei.erp.records import check_lookup_field
from prometei.erp.schema import Choice, EntitySchema, ErpField, FieldKind, SchemaCache
from prometei.erp.values import SourceValue, compatibility
from prometei.errors import ConfigError, PrometeiError
from prometei.services import Services

if TYPE_CHECKING:
    from prometei.config import Settings

StageNames = Callable[[str], list[str]]
FIELDS_COMMAND = "python -m prometei erp fields"
ROWS = ("erp entity", "erp field map", "erp one record")


def check_erp_schema(services: Services, *, login: Check | None) -> list[Check]:
    """The three rows, in order; skipped when the login row did not pass."""
    if not passed(login):
        return [skip(name, "not run: the ERP login did not pass (see above)") for name in ROWS]
    settings = services.settings
    schemas = services.erp_schemas
    stage_names = _stage_names(services) if settings.amocrm_subdomain else None
    entity_id = settings.erp_entity_id
    try:
        schema = schemas.get(entity_id)
    except PrometeiError as exc:
        failed = fail(
            "erp entity",
            exc.message,
            "set ERP_ENTITY_ID to the id of the receiving entity (Rukovoditel: "
            "Configuration -> Entities), then run doctor again",
        )
        return [failed, *(_skipped(name, "the entity is unknown (see above)") for name in ROWS[1:])]
    if schema is None:
        unknown = warn(
            "erp entity",
            f"Rukovoditel cannot describe entity {entity_id} (no get_entity_fields: Extension "
            "before 3.4), so writes are not checked against its fields",
            "update the Rukovoditel Extension to 3.4 or later",
        )
        return [unknown, _skipped(ROWS[1], "needs get_entity_fields"), one_record(services, None)]
    return [
        entity_row(schema),
        field_map_row(settings, schema, schemas, stage_names),
        one_record(services, schema),
    ]


def _stage_names(services: Services) -> StageNames:
    """amoCRM's names a dropdown filled by status_name / pipeline_name must offer: the trigger
    stages when AMOCRM_TRIGGER_STATUSES is set, else every pipeline's."""

    def names(source: str) -> list[str]:
        pipelines, statuses = services.pipelines.listing()
        if source == "pipeline_name":
            return list(pipelines.values())
        wanted = services.settings.amocrm_trigger_statuses
        return [name for pair, name in statuses.items() if not wanted or pair in wanted]

    return names


def entity_row(schema: EntitySchema) -> Check:
    writable = [f for f in schema.fields.values() if f.writable]
    heading = schema.heading()
    named = f", heading {heading.describe()}" if heading else ""
    return ok(
        "erp entity",
        f"entity {schema.entity_id}: {len(schema.fields)} fields, {len(writable)} writable{named}",
    )


def field_map_row(
    settings: Settings,
    schema: EntitySchema,
    schemas: SchemaCache,
    stage_names: StageNames | None,
) -> Check:
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
        return fail(
            "erp field map",
            "; ".join(problems),
            f"correct ERP_FIELD_MAP (`{FIELDS_COMMAND}` lists entity "
            f"{schema.entity_id}'s fields, types and choices)",
        )
    if warnings:
        return warn(
            "erp field map",
            "; ".join(warnings),
            f"map names (status_name, pipeline_name) to dropdowns, add the missing choices, "
            f"or give the API user administrator rights (`{FIELDS_COMMAND}`)",
        )
    return ok(
        "erp field map",
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
    known = {_label_key(c.name) for c in choices}
    missing = sorted({n for n in names if _label_key(n) not in known})
    if not missing:
        return []
    shown = ", ".join(repr(n) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
    return [f"{target.key}: amoCRM names with no choice of that label: {shown}"]


def _label_key(label: str) -> str:
    """A label compared the way a person reads it: case and runs of spaces do not count."""
    return " ".join(label.split()).casefold()


def one_record(services: Services, schema: EntitySchema | None) -> Check:
    name = "erp one record"
    settings = services.settings
    field_id = settings.erp_lead_id_field
    # schemas.get(settings.erp_entity_id) gave `schema`, so its entity id is the same.
    fix = (
        f"create a text (input) field for the amoCRM lead id in entity {settings.erp_entity_id} "
        "and set ERP_LEAD_ID_FIELD to its id"
    )
    if field_id is not None:
        if schema is None:
            return ok(name, f"lookup by field {field_id} (its type cannot be checked)")
        try:
            found = check_lookup_field(schema, field_id)
        except ConfigError as exc:
            return fail(name, exc.message, fix)
        return ok(name, f"lookup by {found.describe()}: one record per lead, always")
    try:
        store = services.state
    except ConfigError as exc:
        return fail(
            name,
            f"ERP_LEAD_ID_FIELD is not set and {exc.message}: leads would be refused",
            fix + ", or connect a KV store",
        )
    return warn(
        name,
        f"ERP_LEAD_ID_FIELD is not set: lead -> record ids are remembered in {store.describe()}; "
        "a retry after a lost insert answer can still create a second record",
        fix,
    )


def _skipped(name: str, why: str) -> Check:
    return skip(name, f"not run: {why}")
