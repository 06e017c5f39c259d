"""The `erp field map` row of doctor: would each ERP_FIELD_MAP entry write, and keep its value?

It FAILs (exit 1) when a write would fail or store something wrong:

- the key is not a writable field of the entity, or its type does not fit the source (a text
  into a numeric field; an amoCRM id such as `status_id` into a dropdown, where it is refused
  or stored as the wrong choice);
- a `cf:<id>` source is not a lead field of the amoCRM account, or its amoCRM type does not
  fit the ERP field (read only for numeric, date and dropdown targets);
- a dropdown has no active choice, or a name source cannot be translated (the API user may
  not read the choices), or amoCRM names it will receive have no choice of that label: the
  stages that start a sync for `status_name`, their pipelines for `pipeline_name`, a list
  field's values for `cf:<id>`;
- a field the entity requires is not filled.

It WARNs when something could not be checked (choices or amoCRM facts unreadable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometei.amocrm.models import SourceKind, source_of
from prometei.doctor.check import Check, fail, ok, warn
from prometei.doctor.erp_sources import SINGLE_CHOICE_TYPES, AmoSources, CustomField
from prometei.erp.plan import target_problem
from prometei.erp.schema import Choice, EntitySchema, ErpField, FieldKind, SchemaCache
from prometei.erp.values import SourceValue, label_key
from prometei.errors import PrometeiError

if TYPE_CHECKING:
    from prometei.config import Settings

NAME = "erp field map"
FIELDS_COMMAND = "python -m prometei erp fields"
# ERP field kinds whose value amoCRM's custom field type decides (text takes anything).
TYPED_KINDS = (FieldKind.NUMERIC, FieldKind.DATE, FieldKind.DATETIME, FieldKind.CHOICE)
CHOICES_HINT = "or add the missing choices to the dropdown in Rukovoditel"
TRIGGERS_HINT = "or set AMOCRM_TRIGGER_STATUSES to the stages that should reach the ERP"
SHOWN = 5


@dataclass
class Findings:
    """`problems` fail the row, `warnings` only warn; `hints` are further fixes for a problem
    (a dict: ordered, no repeats)."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    hints: dict[str, None] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One ERP_FIELD_MAP entry, with what amoCRM said about a custom field source."""

    key: str
    source_name: str
    kind: SourceKind
    custom: CustomField | None = None

    @property
    def label(self) -> str:
        source = self.custom.describe() if self.custom else self.source_name
        return f"{self.key} <- {source}"


def field_map_row(
    settings: Settings,
    schema: EntitySchema,
    schemas: SchemaCache,
    amo: AmoSources | None,
) -> Check:
    found = Findings()
    for key, source_name in settings.erp_field_map.items():
        source = source_of(source_name)
        if source is None:
            continue
        entry = _with_custom_field(found, schema, amo, Entry(key, source_name, source.kind))
        if entry is not None:
            _check_entry(found, schema, schemas, amo, entry)
    lookup = f"field_{settings.erp_lead_id_field}" if settings.erp_lead_id_field else None
    for required in schema.required():
        if required.key not in settings.erp_field_map and required.key != lookup:
            found.problems.append(
                f"{required.describe()} is required and ERP_FIELD_MAP does not fill it"
            )
    if found.problems:
        first = (
            f"correct ERP_FIELD_MAP (`{FIELDS_COMMAND}` lists entity {schema.entity_id}'s "
            "fields, types and choices)"
        )
        return fail(NAME, "; ".join(found.problems), ", ".join([first, *found.hints]))
    if found.warnings:
        return warn(
            NAME,
            "; ".join(found.warnings),
            f"map names (status_name, pipeline_name) to dropdowns, add the missing choices, "
            f"or give the API user administrator rights (`{FIELDS_COMMAND}`)",
        )
    return ok(
        NAME,
        f"{len(settings.erp_field_map)} field(s) of entity {schema.entity_id}, each writable "
        "and fit for its source",
    )


def _with_custom_field(
    found: Findings, schema: EntitySchema, amo: AmoSources | None, entry: Entry
) -> Entry | None:
    """`entry` with its amoCRM custom field's type, when that type decides whether it fits;
    None (and a problem) when amoCRM has no such field."""
    target = schema.field_for(entry.key)
    if amo is None or not entry.source_name.startswith("cf:"):
        return entry
    if target is None or target.kind not in TYPED_KINDS:
        return entry  # a missing target fails anyway; a text field takes any value
    field_id = int(entry.source_name[3:])
    try:
        custom = amo.custom_field(field_id)
    except PrometeiError as exc:
        found.warnings.append(
            f"{entry.label}: amoCRM's type of it could not be read ({exc.message})"
        )
        return entry
    if custom is None:
        found.problems.append(
            f"{entry.label}: amoCRM has no lead custom field {field_id}, so {entry.key} would "
            "never get a value"
        )
        return None
    return Entry(entry.key, entry.source_name, custom.kind, custom)


def _check_entry(
    found: Findings,
    schema: EntitySchema,
    schemas: SchemaCache,
    amo: AmoSources | None,
    entry: Entry,
) -> None:
    target, problem = target_problem(schema, SourceValue(entry.key, entry.label, entry.kind, None))
    if problem is not None or target is None:
        found.problems.append(f"{entry.label}: {problem}")
        return
    if target.kind != FieldKind.CHOICE:
        return
    try:
        choices = schemas.choices(schema, target.id)
    except PrometeiError as exc:
        found.warnings.append(f"{entry.label}: its choices could not be read ({exc.message})")
        return
    if choices is None:
        unreadable = (
            f"{entry.label}: this API user may not read the choices of {target.key} "
            "(administrators only), so "
        )
        if entry.kind == "text":
            found.problems.append(
                unreadable + "names cannot be translated to choice ids: every value would be "
                "refused"
            )
            found.hints["or give the API user administrator rights"] = None
        else:
            found.warnings.append(unreadable + "choice ids go unchecked")
        return
    if not choices:
        found.problems.append(
            f"{entry.label}: {target.describe()} has no active choices: every value would be "
            "refused"
        )
        found.hints[CHOICES_HINT] = None
        return
    _check_labels(found, amo, entry, target, choices)


def _check_labels(
    found: Findings,
    amo: AmoSources | None,
    entry: Entry,
    target: ErpField,
    choices: tuple[Choice, ...],
) -> None:
    """The amoCRM names this entry will send that no active choice carries: each such lead
    fails for good."""
    if entry.custom is not None and entry.custom.type in SINGLE_CHOICE_TYPES:
        expected = dict.fromkeys(entry.custom.enums, "")
        what = f"values of {entry.custom.describe()}"
        hints = [CHOICES_HINT]
    elif amo is not None and entry.source_name in ("status_name", "pipeline_name"):
        try:
            expected = amo.expected_labels(entry.source_name)
        except PrometeiError as exc:
            found.warnings.append(
                f"{entry.label}: amoCRM's names could not be read ({exc.message})"
            )
            return
        stages = "stages" if entry.source_name == "status_name" else "pipelines"
        what = f"amoCRM {stages} that start a sync"
        hints = [CHOICES_HINT, TRIGGERS_HINT]
    else:
        return
    known = {label_key(c.name) for c in choices}
    missing = sorted(name for name in expected if label_key(name) not in known)
    if not missing:
        return
    shown = ", ".join(
        f"{name!r} ({expected[name]})" if expected[name] else repr(name) for name in missing[:SHOWN]
    )
    more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
    found.problems.append(
        f"{entry.label}: {what} with no active choice of that label in {target.key} (their "
        f"syncs would fail for good): {shown}{more}"
    )
    found.hints.update(dict.fromkeys(hints))
