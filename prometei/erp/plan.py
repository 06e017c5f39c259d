"""Turn the values a caller wants written into Rukovoditel `items`, checked against the entity.

Before any insert *and* any update (Rukovoditel's update drops unknown keys without a word,
rukovoditel-live.md T8), every target must be a field of the entity, one Rukovoditel lets us
fill, of a type that fits its source; every value must convert (`prometei.erp.values`). A
violation is a permanent error naming the field, the entity and the fix: `ConfigError` when a
setting chose the field (ERP_FIELD_MAP, ERP_LEAD_ID_FIELD), `InputError` when an event did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo

from prometei.erp.schema import Choice, EntitySchema, ErpField, FieldKind
from prometei.erp.values import (
    SUPPORTED_KINDS,
    TEXT_MAX_CHARS,
    SourceValue,
    ValueProblem,
    compatibility,
    convert,
    cut_chars,
    text_of,
)
from prometei.errors import ConfigError, InputError

FIELDS_HINT = "`python -m prometei erp fields --entity {entity}` lists its fields"
ChoicesOf = Callable[[ErpField], "tuple[Choice, ...] | None"]


@dataclass
class Problems:
    """Everything wrong with one write, so a single error lists it all."""

    lines: list[str] = field(default_factory=list)
    from_config: bool = False

    def add(self, value: SourceValue, message: str, *, about_target: bool = True) -> None:
        """`about_target`: the problem is the field chosen (a setting's fault when a setting
        chose it), not the value that came with this record."""
        self.lines.append(f"{value.label}: {message}")
        self.from_config = self.from_config or (about_target and value.origin == "config")

    def raise_if_any(self, what: str, entity_id: int) -> None:
        if not self.lines:
            return
        text = f"cannot write {what} to ERP entity {entity_id}: " + "; ".join(self.lines)
        if self.from_config:
            raise ConfigError(f"{text} ({FIELDS_HINT.format(entity=entity_id)})")
        raise InputError(text)


@dataclass
class WritePlan:
    """`items` to send; `notes` about values that were cut (reported in the run output);
    `empty` keys whose value was empty and left out."""

    items: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    empty: dict[str, SourceValue] = field(default_factory=dict)


def target_problem(schema: EntitySchema, value: SourceValue) -> tuple[ErpField | None, str | None]:
    """The field `value.key` names, and what is wrong with writing this source into it."""
    target = schema.field_for(value.key)
    if target is None:
        return None, f"{value.key} is not a field of entity {schema.entity_id}"
    if target.kind == FieldKind.SYSTEM:
        return target, f"{target.describe()} is filled by Rukovoditel itself"
    if target.kind == FieldKind.OTHER:
        return target, f"{target.describe()} is not supported; prometei writes {SUPPORTED_KINDS}"
    return target, compatibility(target, value.kind)


def plan_items(
    schema: EntitySchema | None,
    values: Sequence[SourceValue],
    choices_of: ChoicesOf,
    tz: tzinfo,
    *,
    what: str,
    entity_id: int,
) -> WritePlan:
    """Checked and converted items; raises listing every problem. Without a schema (an
    Extension before 3.4) values go as text, cut to 255 characters, as they always did."""
    plan = WritePlan()
    problems = Problems()
    for value in values:
        if schema is None:
            if not value.is_empty():
                _put(plan, value.key, cut_chars(text_of(value.value), TEXT_MAX_CHARS, value.key))
            continue
        target, problem = target_problem(schema, value)
        if problem is not None or target is None:
            problems.add(value, problem or "unknown field")
            continue
        if value.is_empty():
            plan.empty[value.key] = value
            continue
        try:
            converted = convert(target, value, _choices(target, choices_of), tz)
        except ValueProblem as exc:
            problems.add(value, str(exc), about_target=False)
            continue
        _put(plan, value.key, converted)
    problems.raise_if_any(what, entity_id)
    return plan


def check_required(
    schema: EntitySchema | None, plan: WritePlan, values: Sequence[SourceValue], *, what: str
) -> None:
    """Before an insert: every field the entity marks required has a value. (The API itself
    does not enforce the form's required flag, so a record would silently lack it.)"""
    if schema is None:
        return
    problems = Problems()
    targeted = {value.key: value for value in values}
    for required in schema.required():
        if required.key in plan.items:
            continue
        source = targeted.get(required.key)
        if source is not None:
            problems.add(
                source,
                f"{required.describe()} is required, and this record has no value",
                about_target=False,
            )
        else:
            problems.lines.append(
                f"{required.describe()} is required and nothing fills it; map it in "
                "ERP_FIELD_MAP (or a deal's fields), or make it optional in Rukovoditel"
            )
            problems.from_config = True
    problems.raise_if_any(what, schema.entity_id)


def _choices(target: ErpField, choices_of: ChoicesOf) -> tuple[Choice, ...] | None:
    return choices_of(target) if target.kind == FieldKind.CHOICE else None


def _put(plan: WritePlan, key: str, converted: tuple[str, str | None]) -> None:
    text, note = converted
    plan.items[key] = text
    if note:
        plan.notes.append(note)
