"""The TypeScript version's `amocrm/webhook` events, read back into the webhook they carried.

Before the switch to this project, amoCRM webhooks reached Inngest as `amocrm/webhook` events
(the seeds' "Prometei Ingest"). Three shapes of `event.data` are known, all holding the
webhook's form fields under their bracket names:

- old intake (its `pages/api/amocrm-webhook.ts`): `{originalData, entity, action, parsedData,
  receivedAt, changes, ...}`; `originalData` is the form as Next.js parsed it: flat bracket keys
  with string values (an earlier version: the same fields nested as objects and lists).
- Inngest-hosted webhook (and the old `scripts/test-amocrm-webhook.js`): `{"data": {"account[id]":
  ["32452514"], "leads[status][0][id]": ["45721053"], ...}, "name": "webhook/request.received",
  "id", "ts"}`: form values arrive as lists of strings (reference inngest.md §6).
- the first old intake, and a pass-through webhook transform: the bracket keys directly in
  `event.data`, next to metadata such as `receivedAt`.

`parse_legacy_event(data)` rebuilds the form tree exactly as `parse_form` builds it from the
wire body, so the lead items and therefore the event ids (`prometei.events.lead_event_id`) are
the intake's own. Anything it cannot read raises `InputError` naming what is missing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from prometei.amocrm.webhook import (
    MAX_DEPTH,
    MAX_FIELDS,
    FormTree,
    WebhookPayload,
    add_field,
    payload_from_tree,
)
from prometei.errors import InputError

LEGACY_EVENT = "amocrm/webhook"
# Top-level names amoCRM uses in webhook forms; other keys of an old event are its metadata.
FORM_ROOTS = frozenset(
    {
        "account",
        "leads",
        "contacts",
        "companies",
        "customers",
        "task",
        "unsorted",
        "talk",
        "message",
    }
)
EXPECTED_FIELDS = "form fields such as leads[status][0][id] and account[subdomain]"

Shape = Literal["old-intake", "inngest-webhook", "form-fields"]


@dataclass(frozen=True)
class LegacyWebhook:
    """A legacy event read back: which shape it had, where the form was, and the webhook."""

    shape: Shape
    where: str  # e.g. "data.originalData", for messages
    payload: WebhookPayload


def parse_legacy_event(data: Any) -> LegacyWebhook:
    """The webhook inside an `amocrm/webhook` event's data; `InputError` when unreadable."""
    shape, where, source = _form_source(data)
    tree: FormTree = {}
    for count, (key, value) in enumerate(_fields(source, where), start=1):
        if count > MAX_FIELDS:
            raise InputError(f"{where} has more than {MAX_FIELDS} form fields")
        try:
            add_field(tree, key, value)
        except InputError as exc:
            raise InputError(f"{where}: {exc.message}") from None
    if not tree:
        raise InputError(f"{where} holds no amoCRM webhook: expected {EXPECTED_FIELDS}")
    try:
        payload = payload_from_tree(tree)
    except InputError as exc:
        raise InputError(f"{where}: {exc.message}") from None
    if not payload.leads and not payload.ignored:
        raise InputError(f"{where} has no lead item: expected leads[<action>][0][id]=<lead id>")
    return LegacyWebhook(shape=shape, where=where, payload=payload)


def _form_source(data: Any) -> tuple[Shape, str, Mapping[str, Any]]:
    if not isinstance(data, Mapping):
        raise InputError(f"event data must be an object with {EXPECTED_FIELDS}")
    if "originalData" in data:
        original = data["originalData"]
        if not isinstance(original, Mapping):
            raise InputError(
                "data.originalData (the old intake's copy of the webhook form) must be an "
                f"object with {EXPECTED_FIELDS}"
            )
        return "old-intake", "data.originalData", original
    if "parsedData" in data:
        # Every version of the old intake sent originalData next to parsedData; parsedData alone
        # lacks the fields the intake's event id is made of, so it cannot be synced once.
        raise InputError(
            "data.originalData is missing: the old intake's parsedData alone does not carry "
            "the webhook's fields; resend the webhook, or replay the lead "
            "(python -m prometei replay <lead id>)"
        )
    inner = data.get("data")
    if isinstance(inner, Mapping):
        return "inngest-webhook", "data.data", inner
    return "form-fields", "data", data


def _fields(source: Mapping[str, Any], where: str) -> Iterator[tuple[str, str]]:
    """(bracket name, string value) for every form field; metadata keys are left out."""
    for key, value in source.items():
        if not isinstance(key, str):
            continue
        if "[" not in key and key not in FORM_ROOTS:
            continue  # receivedAt, userAgent, ip, entity, action, changes, ...
        yield from _leaves(key, value, where, depth=1)


def _leaves(key: str, value: Any, where: str, *, depth: int) -> Iterator[tuple[str, str]]:
    if depth > MAX_DEPTH:
        raise InputError(f"{where}: field {key[:80]!r} is nested more than {MAX_DEPTH} levels")
    if value is None:
        return  # an absent field
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, Mapping):
        # An older intake kept the form nested: {"leads": {"status": {"0": {...}}}}.
        for sub, item in value.items():
            yield from _leaves(f"{key}[{sub}]", item, where, depth=depth + 1)
    elif isinstance(value, list):
        if all(_is_scalar(item) for item in value):
            # Form values as lists (an Inngest webhook, or a repeated key): the last one wins,
            # as in parse_form and PHP.
            if value:
                yield key, _text(value[-1], key, where)
        else:
            for index, item in enumerate(value):
                yield from _leaves(f"{key}[{index}]", item, where, depth=depth + 1)
    else:
        yield key, _text(value, key, where)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _text(value: Any, key: str, where: str) -> str:
    """A form value as amoCRM sends it: a string (numbers as their digits)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    raise InputError(
        f"{where}: field {key[:80]!r} has a {type(value).__name__} value; form fields are strings"
    )
