"""What a deal payload is: the pydantic models, their field rules and the error they lead to.

The models only check one value at a time; `prometei.deals.validation` turns their errors into
the readable problem lists that senders see.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prometei.config import ERP_FIELD_RE
from prometei.errors import InputError

MAX_NAME = 255
MAX_BATCH = 1000
MAX_EXTRA_FIELDS = 30
MAX_FIELD_VALUE = 4000
MAX_AMOUNT_DIGITS = 15
# Rukovoditel does not escape values of unique fields (rukovoditel-live.md U3): a quote in
# an external id could break the ERP's SQL, so ids are restricted to a safe alphabet.
EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/#-]{0,254}$")
_AMOUNT_RE = re.compile(r"^\d+(?:[.,]\d+)?$")

NAME_RULE = f"must be 1\u2013{MAX_NAME} characters after trimming"
_EXTERNAL_ID_RULE = (
    "must be 1\u2013255 characters: letters, digits and . _ : @ / # - (no spaces or quotes), "
    "starting with a letter or digit"
)
_AMOUNT_RULE = 'must be a non-negative number or numeric string like 15000 or "15000.50"'


class DealValidationError(InputError):
    """The payload is invalid; `problems` lists every one as `<key>: <what is wrong>`."""

    def __init__(self, problems: list[str], *, what: str = "deal") -> None:
        self.problems = problems
        super().__init__(f"invalid {what}: " + "; ".join(problems))


def _decimal_from_text(value: str) -> Decimal | None:
    text = "".join(value.split())  # "15 000" and thin spaces
    if not text:
        return None
    if text.startswith("-") and _AMOUNT_RE.match(text[1:]):
        raise ValueError(f"must not be negative (got {value!r})")
    if not _AMOUNT_RE.match(text):
        raise ValueError(f"{_AMOUNT_RULE} (got {value!r})")
    return Decimal(text.replace(",", "."))


def _amount_text(value: Any) -> str | None:
    """A normalised decimal string ("15000", "15000.5"); None for absent/empty."""
    if value is None:
        return None
    if isinstance(value, str):
        number = _decimal_from_text(value)
        if number is None:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{_AMOUNT_RULE} (got {value!r})")
        number = Decimal(str(value))
    else:
        raise ValueError(f"{_AMOUNT_RULE} (got {value!r})")
    if number < 0:
        raise ValueError(f"must not be negative (got {value!r})")
    if number >= Decimal(10) ** MAX_AMOUNT_DIGITS:
        raise ValueError(f"is too large (at most {MAX_AMOUNT_DIGITS} digits before the point)")
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def _field_value(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"fields.{key}: value must be a string or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"fields.{key}: value must be a finite number")
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_FIELD_VALUE:
        raise ValueError(f"fields.{key}: value must be at most {MAX_FIELD_VALUE} characters")
    return text


class DealPayload(BaseModel):
    """One validated deal. Build it with `parse_deal`; `to_data()` gives the event data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deal_name: str = Field(alias="dealName")
    amount: str | None = None
    entity_id: int | None = Field(None, alias="entityId")
    fields: dict[str, str] = Field(default_factory=dict)
    external_id: str | None = Field(None, alias="externalId")
    # Set by batch-create-crm-deals on the events it fans out (where a deal came from).
    batch_id: str | None = Field(None, alias="batchId")
    batch_index: int | None = Field(None, alias="batchIndex")

    @field_validator("deal_name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string ({NAME_RULE})")
        name = value.strip()
        if not 1 <= len(name) <= MAX_NAME:
            raise ValueError(NAME_RULE)
        return name

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> str | None:
        return _amount_text(value)

    @field_validator("entity_id", mode="before")
    @classmethod
    def _entity(cls, value: Any) -> int | None:
        if value is None:
            return None
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().isdigit():
            number = int(value.strip())
        if number is None or number <= 0:
            raise ValueError(f"must be a positive integer (got {value!r})")
        return number

    @field_validator("fields", mode="before")
    @classmethod
    def _fields(cls, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError('must be an object like {"field_1041": "value"}')
        if len(value) > MAX_EXTRA_FIELDS:
            raise ValueError(f"at most {MAX_EXTRA_FIELDS} extra fields")
        problems, out = [], {}
        for key, item in value.items():
            if not isinstance(key, str) or not ERP_FIELD_RE.match(key):
                problems.append(f"fields.{key}: key must look like field_1041")
                continue
            try:
                out[key] = _field_value(key, item)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            # One ValueError for the key; validation's `_problems` splits it back into lines.
            raise ValueError("\n".join(problems))
        return out

    @field_validator("external_id", mode="before")
    @classmethod
    def _external(cls, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not EXTERNAL_ID_RE.match(value.strip()):
            raise ValueError(_EXTERNAL_ID_RULE)
        return value.strip()

    @field_validator("batch_id", mode="before")
    @classmethod
    def _batch_id(cls, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value or len(value) > 255:
            raise ValueError("must be the batch event id (a string)")
        return value

    @field_validator("batch_index", mode="before")
    @classmethod
    def _batch_index(cls, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("must be a non-negative integer")
        return value

    def to_data(self) -> dict[str, Any]:
        """The event data for this deal (JSON keys, nothing empty)."""
        data = self.model_dump(by_alias=True, exclude_none=True)
        if not data.get("fields"):
            data.pop("fields", None)
        return data


class BatchPayload(BaseModel):
    """The data of `crm/batch-create-deals`: `{"deals": [...]}`, 1-1000 items.

    Items stay raw here: each one is checked on its own by `parse_batch`, so one bad deal
    does not stop the others."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deals: list[Any]

    @field_validator("deals", mode="before")
    @classmethod
    def _deals(cls, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError(f"must be a list of 1\u2013{MAX_BATCH} deal objects")
        if not value:
            raise ValueError("must hold at least one deal")
        if len(value) > MAX_BATCH:
            raise ValueError(
                f"must hold at most {MAX_BATCH} deals (got {len(value)}); split larger batches"
            )
        return value
