"""Validate deal event data and report *every* problem in readable form.

`parse_deal(data)` / `parse_batch(data)` check the data of `crm/create-deal`, `erp/task.create`
and `crm/batch-create-deals` and name each problem by its key
(`deals[3].dealName: must be 1-255 characters after trimming`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from prometei.deals.payload import NAME_RULE, BatchPayload, DealPayload, DealValidationError
from prometei.deals.record import conflicts

if TYPE_CHECKING:
    from prometei.config import Settings

_ALLOWED_KEYS = "dealName, amount, entityId, fields, externalId"


def _problems(exc: ValidationError, prefix: str, allowed: str) -> list[str]:
    """Pydantic errors as `<prefix><key>: <message>` lines, in the order of the keys."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error.get("loc") or ()) or "data"
        kind = error.get("type")
        if kind == "missing" and loc == "dealName":
            message = f"is required (the deal's name, {NAME_RULE.removeprefix('must be ')})"
        elif kind == "missing":
            message = "is required"
        elif kind == "extra_forbidden":
            message = f"unknown key (allowed: {allowed})"
        else:
            message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        for part in message.split("\n"):
            # `fields` problems already name their key (fields.field_1041: ...).
            if loc == "fields" and part.startswith("fields."):
                lines.append(f"{prefix}{part}")
            else:
                lines.append(f"{prefix}{loc}: {part}")
    return lines


def _public(data: Mapping[str, Any]) -> dict[str, Any]:
    # Keys starting with "_" are Inngest's (e.g. `_inngest` on invoked events), not ours.
    return {key: value for key, value in data.items() if not str(key).startswith("_")}


def parse_deal(data: Any, *, settings: Settings | None = None, prefix: str = "") -> DealPayload:
    """Validate one deal's data; raise `DealValidationError` listing every problem."""
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "data"
        raise DealValidationError(
            [f'{where}: must be a JSON object like {{"dealName": "Order #1042"}}']
        )
    try:
        deal = DealPayload.model_validate(_public(data))
    except ValidationError as exc:
        raise DealValidationError(_problems(exc, prefix, _ALLOWED_KEYS)) from None
    problems = conflicts(deal, settings, prefix) if settings is not None else []
    if problems:
        raise DealValidationError(problems)
    return deal


@dataclass(frozen=True)
class BatchCheck:
    """`parse_batch`'s answer: the valid deals by index, and the problems of the rest."""

    total: int
    valid: list[tuple[int, DealPayload]]
    invalid: list[tuple[int, list[str]]]

    @property
    def problems(self) -> list[str]:
        return [line for _, lines in self.invalid for line in lines]


def parse_batch(data: Any, *, settings: Settings | None = None) -> BatchCheck:
    """Validate `{"deals": [...]}`. A bad container raises `DealValidationError`; bad items
    are reported in `BatchCheck.invalid` and the valid ones kept."""
    if not isinstance(data, Mapping):
        raise DealValidationError(
            ['data: must be a JSON object like {"deals": [{"dealName": "..."}]}'], what="batch"
        )
    try:
        batch = BatchPayload.model_validate(_public(data))
    except ValidationError as exc:
        raise DealValidationError(_problems(exc, "", "deals"), what="batch") from None
    valid: list[tuple[int, DealPayload]] = []
    invalid: list[tuple[int, list[str]]] = []
    # Two deals with one externalId would race for one record (both runs may miss the
    # lookup and insert): the later one is reported instead.
    first_use: dict[str, int] = {}
    for index, item in enumerate(batch.deals):
        try:
            deal = parse_deal(item, settings=settings, prefix=f"deals[{index}].")
        except DealValidationError as exc:
            invalid.append((index, exc.problems))
            continue
        if deal.external_id is not None and deal.external_id in first_use:
            earlier = first_use[deal.external_id]
            invalid.append(
                (
                    index,
                    [
                        f"deals[{index}].externalId: {deal.external_id!r} is already used by "
                        f"deals[{earlier}] in this batch"
                    ],
                )
            )
            continue
        if deal.external_id is not None:
            first_use[deal.external_id] = index
        valid.append((index, deal))
    return BatchCheck(total=len(batch.deals), valid=valid, invalid=invalid)
