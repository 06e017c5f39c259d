"""Would an ERP write work, and would it keep every value? The ERP schema rows of `doctor`.

`check_erp_schema(...)` looks at the configured entity the way `RecordWriter` will, without
writing:

    erp entity       ERP_ENTITY_ID exists (get_entity_fields); servers before 3.4 cannot say
    erp field map    every ERP_FIELD_MAP key is a writable field of the entity, of a type its
                     source fits (`prometei.doctor.erp_field_map`)
    erp one record   ERP_LEAD_ID_FIELD is a text field of the entity, or else where lead ->
                     record ids are remembered (and a failure on Vercel without KV)

A failing row means a write would fail or lose data.
"""

from __future__ import annotations

from prometei.doctor.check import Check, fail, ok, passed, skip, warn
from prometei.doctor.erp_field_map import field_map_row
from prometei.doctor.erp_sources import AmoSources
from prometei.erp.records import check_lookup_field
from prometei.erp.schema import EntitySchema
from prometei.errors import ConfigError, PrometeiError
from prometei.services import Services

ROWS = ("erp entity", "erp field map", "erp one record")


def check_erp_schema(services: Services, *, login: Check | None) -> list[Check]:
    """The three rows, in order; skipped when the login row did not pass."""
    if not passed(login):
        return [skip(name, "not run: the ERP login did not pass (see above)") for name in ROWS]
    settings = services.settings
    schemas = services.erp_schemas
    amo = AmoSources(services) if settings.amocrm_subdomain else None
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
        field_map_row(settings, schema, schemas, amo),
        one_record(services, schema),
    ]


def entity_row(schema: EntitySchema) -> Check:
    writable = [f for f in schema.fields.values() if f.writable]
    heading = schema.heading()
    named = f", heading {heading.describe()}" if heading else ""
    return ok(
        "erp entity",
        f"entity {schema.entity_id}: {len(schema.fields)} fields, {len(writable)} writable{named}",
    )


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
