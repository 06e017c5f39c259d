"""One value for one ERP field, converted the way that field's type stores it.

`SourceValue` is what a caller wants written (an ERP key, a typed value, and a label saying
where the value comes from, for messages); `convert(field, value, choices, tz)` gives the text
Rukovoditel must receive, or raises `ValueProblem`:

    text (input, phone, url...)   at most 255 characters; a longer value is cut and the cut
                                  reported (VARCHAR(255): MySQL would cut it silently, or
                                  refuse the write in strict mode)
    textarea                      kept whole up to 65535 bytes (TEXT)
    numeric                       a plain decimal from an exact `Decimal` ("15000", "1500.5"),
                                  never a float; at most 64 characters (VARCHAR(64))
    date / datetime               "YYYY-MM-DD" / "YYYY-MM-DD HH:MM" in ERP_TIMEZONE: Rukovoditel
                                  misreads a Unix timestamp as a date in the year 4999 (T11)
    dropdown / radio              a choice id; a label is translated to its id (Rukovoditel
                                  stores a label as 0 and reports success, T9); anything
                                  else is refused with the list of valid choices

`None`, "" and (for the price) 0 are "no value": the field is left out, so an update never
blanks what someone typed in the ERP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Literal

from prometei.amocrm.models import SourceKind
from prometei.erp.schema import Choice, ErpField, FieldKind

TEXT_MAX_CHARS = 255
TEXTAREA_MAX_BYTES = 65535
NUMERIC_MAX_CHARS = 64
SUPPORTED_KINDS = "text, textarea, numeric, date, datetime, dropdown and radio fields"
_NUMBER_RE = re.compile(r"^-?\d+(?:[.,]\d+)?$")
_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}")


class ValueProblem(ValueError):
    """A value that cannot go into its field; the message says why and what would fit."""


@dataclass(frozen=True)
class SourceValue:
    """What to write into one ERP field.

    `origin` says who chose the field: "config" (ERP_FIELD_MAP, ERP_LEAD_ID_FIELD: the fix is
    a setting) or "input" (an event payload: the fix is the sender's). `skip_zero` treats 0
    as "no value" (the price rule)."""

    key: str
    label: str
    kind: SourceKind
    value: str | Decimal | int | None
    origin: Literal["config", "input"] = "config"
    skip_zero: bool = False

    def is_empty(self) -> bool:
        value = self.value
        if value is None or (isinstance(value, str) and not value.strip()):
            return True
        if self.skip_zero:
            number = _decimal(value)
            return number is not None and number == 0
        return False


def compatibility(field: ErpField, kind: SourceKind) -> str | None:
    """What is wrong with writing a `kind` source into `field`, before any value is seen."""
    target = field.kind
    if target in (FieldKind.TEXT, FieldKind.TEXTAREA) or kind == "any":
        return None
    if target == FieldKind.NUMERIC and kind not in ("number", "id"):
        return f"a {kind} source cannot fill numeric {field.describe()}"
    if target in (FieldKind.DATE, FieldKind.DATETIME) and kind != "timestamp":
        return (
            f"a {kind} source cannot fill {target.value} {field.describe()}; map a date "
            "(created_at, updated_at, closed_at or a date custom field)"
        )
    if target == FieldKind.CHOICE:
        if kind == "id":
            # An amoCRM id is refused as an unknown choice, or (when the choices cannot be
            # read, or an id happens to match) stored as the wrong choice with success.
            return (
                f"amoCRM ids are not choice ids of {field.describe()}; map a name "
                "(status_name, pipeline_name) to have it translated to a choice"
            )
        if kind != "text":
            return f"a {kind} source cannot fill {field.describe()}"
    return None


def convert(
    field: ErpField,
    value: SourceValue,
    choices: tuple[Choice, ...] | None,
    tz: tzinfo,
) -> tuple[str, str | None]:
    """(text to send, note about a cut or None). `value` must not be empty."""
    kind = field.kind
    if kind == FieldKind.NUMERIC:
        return numeric_text(value.value, field), None
    if kind in (FieldKind.DATE, FieldKind.DATETIME):
        return date_text(value.value, with_time=kind == FieldKind.DATETIME, tz=tz), None
    if kind == FieldKind.CHOICE:
        return choice_id(text_of(value.value), field, choices), None
    text = text_of(value.value)
    if kind == FieldKind.TEXTAREA:
        return cut_bytes(text, TEXTAREA_MAX_BYTES, field.key)
    return cut_chars(text, TEXT_MAX_CHARS, field.key)


# ---- per type -------------------------------------------------------------------------------
def text_of(value: str | Decimal | int | None) -> str:
    if isinstance(value, Decimal):
        return plain_decimal(value)
    return "" if value is None else str(value)


def plain_decimal(number: Decimal) -> str:
    """15000 -> "15000", 1500.50 -> "1500.5", 1E+3 -> "1000": every digit, no exponent
    (text work only: Decimal arithmetic would round past 28 digits)."""
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def numeric_text(value: str | Decimal | int | None, field: ErpField) -> str:
    number = _decimal(value)
    if number is None:
        raise ValueProblem(f"{field.describe()}: {text_of(value)[:40]!r} is not a number")
    text = plain_decimal(number)
    if len(text) > NUMERIC_MAX_CHARS:
        raise ValueProblem(
            f"{field.describe()}: the number has {len(text)} digits; the field holds "
            f"{NUMERIC_MAX_CHARS} characters"
        )
    return text


def date_text(value: str | Decimal | int | None, *, with_time: bool, tz: tzinfo) -> str:
    """amoCRM gives Unix seconds (or an ISO date in some custom fields) -> the ERP's format."""
    moment = _moment(value, tz)
    if moment is None:
        raise ValueProblem(
            f"{text_of(value)[:40]!r} is not a date (expected Unix seconds or YYYY-MM-DD)"
        )
    return moment.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


def choice_id(text: str, field: ErpField, choices: tuple[Choice, ...] | None) -> str:
    """A choice id given as itself or by its label (case and spaces ignored)."""
    wanted = text.strip()
    if choices is None:
        # The API user may not read the choices: ids pass unchecked, labels cannot be mapped.
        if wanted.isdigit():
            return wanted
        raise ValueProblem(
            f"{field.describe()}: cannot translate {wanted[:60]!r} to a choice id because this "
            "API user may not read the field's choices (get_field_choices is for "
            "administrators); give the choice id, or make the API user an administrator"
        )
    if any(choice.id == wanted for choice in choices):
        return wanted
    folded = label_key(wanted)
    found = [c for c in choices if label_key(c.name) == folded]
    if len(found) == 1:
        return found[0].id
    valid = ", ".join(f'{c.id} "{c.name}"' for c in choices[:20]) or "none"
    if len(choices) > 20:
        valid += f", ... ({len(choices)} in all)"
    if found:
        ids = ", ".join(c.id for c in found)
        raise ValueProblem(f"{field.describe()}: {wanted[:60]!r} names several choices ({ids})")
    raise ValueProblem(f"{field.describe()}: {wanted[:60]!r} is not a choice; valid: {valid}")


def cut_chars(text: str, limit: int, key: str) -> tuple[str, str | None]:
    if len(text) <= limit:
        return text, None
    return text[:limit], f"{key}: text cut from {len(text)} to {limit} characters"


def cut_bytes(text: str, limit: int, key: str) -> tuple[str, str | None]:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, None
    kept = raw[:limit].decode("utf-8", errors="ignore")
    return kept, f"{key}: text cut from {len(text)} to {len(kept)} characters ({limit} bytes)"


# ---- parsing ---------------------------------------------------------------------------------
def _decimal(value: str | Decimal | int | None) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    text = "".join(value.split())  # "15 000" and non-breaking spaces
    if not _NUMBER_RE.match(text):
        return None
    try:
        return Decimal(text.replace(",", "."))
    except InvalidOperation:
        return None


def _moment(value: str | Decimal | int | None, tz: tzinfo) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    text = text_of(value).strip()
    if text.lstrip("-").isdigit():
        try:
            return datetime.fromtimestamp(int(text), UTC).astimezone(tz)
        except (OverflowError, OSError, ValueError):
            return None
    if not _ISO_DATE_RE.match(text):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(tz) if moment.tzinfo is not None else moment


def label_key(label: str) -> str:
    """A choice label compared the way a person reads it: case and runs of spaces do not
    count. Writes match labels by it, and doctor predicts which names will not match."""
    return " ".join(label.split()).casefold()
