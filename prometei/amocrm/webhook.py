"""amoCRM account webhooks: the raw form body -> a nested tree -> typed models.

amoCRM posts `application/x-www-form-urlencoded` bodies whose keys are PHP-style bracket paths
(`leads[status][0][id]=25399013`). Every value is a string, list indices are dict keys (and may
be sparse), and one body may carry several items and several entity/action groups at once
(reference: amocrm.md §1). Use `parse_webhook(body)` in the intake; `parse_form(body)` when you
only need the nested tree.

Every problem with the input raises `InputError` with a message saying what is wrong; no other
exception escapes, whatever the bytes (the intake answers 400 with that message).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, TypeAlias
from urllib.parse import unquote_to_bytes, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from prometei.config import KNOWN_BASE_DOMAINS
from prometei.errors import InputError

MAX_FIELDS = 10_000
MAX_DEPTH = 32
# Actions amoCRM sends under `leads[...]`; anything else there is counted as ignored.
LEAD_ACTIONS = ("add", "update", "status", "responsible", "delete", "restore", "note")

FormNode: TypeAlias = "str | dict[str, FormNode]"
FormTree: TypeAlias = "dict[str, FormNode]"

_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
# ASCII digits only (\d also matches other scripts' digits); 18 of them keep ids inside a
# signed 64-bit integer and far from Python's int-parsing limits.
_NUMBER = re.compile(r"[0-9]{1,18}")
_KEY_SHOWN = 80


# ---- models ----------------------------------------------------------------------------


class WebhookAccount(BaseModel):
    """Who sent the webhook, as the body claims it (check it against the settings)."""

    model_config = ConfigDict(frozen=True)

    subdomain: str
    id: int | None = None  # absent in older (2016-era) bodies
    self_url: str | None = None  # `account[_links][self]`, e.g. https://example.amocrm.ru
    self_host: str | None = None  # its host, lower-cased, without port


class LeadItem(BaseModel):
    """One lead item of one action group (`leads[<action>][<index>]`).

    `fields` is the item exactly as sent (nested dicts of strings: tags, custom_fields, ...);
    the typed ids are read from it. For `note` items the lead id is the note's `element_id`.
    """

    model_config = ConfigDict(frozen=True)

    action: str
    index: str
    id: int
    status_id: int | None = None
    pipeline_id: int | None = None
    old_status_id: int | None = None
    old_pipeline_id: int | None = None
    fields: dict[str, Any] = Field(default_factory=dict)


class WebhookPayload(BaseModel):
    """A parsed webhook: the account, its lead items in body order, and what was not a lead."""

    model_config = ConfigDict(frozen=True)

    account: WebhookAccount
    leads: list[LeadItem] = Field(default_factory=list)
    # item counts of everything that is not a lead item we handle, keyed by entity
    # ("contacts", "companies", "task", "unsorted", "talk", "message", ...) or, for an unknown
    # lead action, by "leads[<action>]".
    ignored: dict[str, int] = Field(default_factory=dict)

    @property
    def ignored_count(self) -> int:
        return sum(self.ignored.values())


# ---- form body -> tree ---------------------------------------------------------------------


def parse_webhook(body: bytes | str) -> WebhookPayload:
    """Parse an amoCRM webhook body into typed models; `InputError` on anything malformed."""
    return payload_from_tree(parse_form(body))


def parse_form(body: bytes | str) -> FormTree:
    """Decode a bracket-form body into nested dicts of strings (PHP's `$_POST` shape).

    Enforces the limits (MAX_FIELDS fields, MAX_DEPTH levels), strict percent-encoding and
    UTF-8. A repeated key keeps its last value, as PHP does.
    """
    raw = body.encode("utf-8", errors="surrogatepass") if isinstance(body, str) else body
    pairs = [chunk for chunk in raw.split(b"&") if chunk]
    if len(pairs) > MAX_FIELDS:
        raise InputError(f"the body has {len(pairs)} fields; at most {MAX_FIELDS} are accepted")
    tree: FormTree = {}
    for number, chunk in enumerate(pairs, start=1):
        raw_key, _, raw_value = chunk.partition(b"=")
        key = _decode(raw_key, number, "name")
        value = _decode(raw_value, number, "value")
        add_field(tree, key, value)
    return tree


def add_field(tree: FormTree, key: str, value: str) -> None:
    """Put one decoded form field (`leads[status][0][id]`, "25399013") into `tree`.

    The rules of `parse_form` (bracket syntax, depth, no key both a value and a group), for
    callers that hold fields already decoded, such as the TypeScript version's events.
    """
    _insert(tree, key, _split_key(key), value)


def _decode(raw: bytes, number: int, what: str) -> str:
    """Form-decode one name or value: `+` is a space, `%XX` a byte, the result UTF-8."""
    if _BAD_PERCENT.search(raw):
        raise InputError(
            f"field #{number}: the {what} has a bad percent-encoding ('%' must be followed by "
            "two hex digits)"
        )
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"field #{number}: the {what} is not valid UTF-8") from None


def _shown(key: str) -> str:
    return repr(key if len(key) <= _KEY_SHOWN else key[:_KEY_SHOWN] + "...")


def _split_key(key: str) -> list[str]:
    """`leads[status][0][id]` -> ["leads", "status", "0", "id"]."""
    match = _KEY.fullmatch(key)
    if match is None:
        raise InputError(
            f"field name {_shown(key)} is malformed: expected name[part][part]... "
            "with balanced brackets"
        )
    segments = [match.group(1), *_SEGMENT.findall(match.group(2))]
    if "" in segments:
        raise InputError(f"field name {_shown(key)} has an empty [] (list append is not used)")
    if len(segments) > MAX_DEPTH:
        raise InputError(
            f"field name {_shown(key)} is nested {len(segments)} levels deep; at most "
            f"{MAX_DEPTH} are accepted"
        )
    return segments


def _insert(tree: FormTree, key: str, path: list[str], value: str) -> None:
    node = tree
    for segment in path[:-1]:
        child = node.setdefault(segment, {})
        if isinstance(child, str):
            raise InputError(
                f"field {_shown(key)} conflicts with an earlier field: a key cannot be both "
                "a value and a group of fields"
            )
        node = child
    if isinstance(node.get(path[-1]), dict):
        raise InputError(
            f"field {_shown(key)} conflicts with an earlier field: a key cannot be both "
            "a value and a group of fields"
        )
    node[path[-1]] = value


# ---- tree -> models ------------------------------------------------------------------------


def payload_from_tree(tree: FormTree) -> WebhookPayload:
    """Type the nested tree: account block, lead items per action, counts of the rest."""
    account = _account(tree.get("account"))
    leads: list[LeadItem] = []
    ignored: dict[str, int] = {}
    for entity, groups in tree.items():
        if entity == "account":
            continue
        if entity == "leads":
            leads.extend(_lead_items(groups, ignored))
        elif isinstance(groups, dict):
            # contacts, companies, task, unsorted, talk, message, customers, ...: not ours.
            count = sum(_count_items(group) for group in groups.values())
            if count:
                ignored[entity] = ignored.get(entity, 0) + count
    return WebhookPayload(account=account, leads=leads, ignored=ignored)


def _account(block: FormNode | None) -> WebhookAccount:
    if not isinstance(block, dict):
        raise InputError(
            "the body has no account block (account[subdomain]=...): this does not look like "
            "an amoCRM webhook"
        )
    subdomain = block.get("subdomain")
    if not isinstance(subdomain, str) or not subdomain.strip():
        raise InputError("account[subdomain] is missing or empty")
    account_id = _optional_int(block.get("id"), "account[id]")
    self_url: str | None = None
    self_host: str | None = None
    links = block.get("_links")
    if links is not None:
        link = links.get("self") if isinstance(links, dict) else links
        if not isinstance(link, str):
            raise InputError("account[_links][self] must be a URL like https://<sub>.amocrm.ru")
        if link.strip():
            self_url = link.strip()
            self_host = _host_of(self_url)
    return WebhookAccount(
        subdomain=subdomain.strip().lower(),
        id=account_id,
        self_url=self_url,
        self_host=self_host,
    )


def account_problem(
    account: WebhookAccount, *, subdomain: str, account_id: int | None
) -> str | None:
    """Why a webhook claiming to be from `account` is not for this deployment, or None.

    `subdomain` and `account_id` are the configured AMOCRM_SUBDOMAIN / AMOCRM_ACCOUNT_ID. An
    absent account id or self link in the body is not held against it (older bodies lack them).
    """
    if account.subdomain != subdomain:
        return (
            f"webhook comes from account {account.subdomain[:63]!r}, but this deployment "
            f"serves {subdomain!r} (AMOCRM_SUBDOMAIN)"
        )
    if account_id is not None and account.id is not None and account.id != account_id:
        return f"webhook comes from account id {account.id}, but AMOCRM_ACCOUNT_ID is {account_id}"
    allowed_hosts = {f"{subdomain}.{domain}" for domain in KNOWN_BASE_DOMAINS}
    if account.self_host is not None and account.self_host not in allowed_hosts:
        return (
            f"account[_links][self] points to {account.self_host[:100]!r}, not to "
            f"{subdomain}.amocrm.ru/.amocrm.com/.kommo.com"
        )
    return None


def _host_of(url: str) -> str:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host:
        raise InputError(f"account[_links][self] {_shown(url)} is not a URL with a host")
    return host.rstrip(".")


def _lead_items(groups: FormNode, ignored: dict[str, int]) -> Iterator[LeadItem]:
    if not isinstance(groups, dict):
        raise InputError("'leads' must be a group like leads[status][0][id]=...")
    for action, group in groups.items():
        if action not in LEAD_ACTIONS:
            key = f"leads[{action}]"
            ignored[key] = ignored.get(key, 0) + _count_items(group)
            continue
        for index, item in _indexed(group):
            yield _lead_item(action, index, item)


def _indexed(group: FormNode) -> list[tuple[str, FormNode]]:
    """Items of one action group in index order (indices may be sparse or out of order)."""
    if isinstance(group, str):
        # The docs describe delete as `{entity: {action: "id"}}`: a bare id, no index.
        return [("0", group)]

    def order(key: str) -> tuple[int, int, str]:
        # Compare digit strings by length first: no int() on arbitrarily long input.
        digits = key.lstrip("0") or "0"
        return (0, len(digits), digits) if key.isdigit() else (1, 0, key)

    return sorted(group.items(), key=lambda pair: order(pair[0]))


def _count_items(group: FormNode) -> int:
    return len(group) if isinstance(group, dict) else 1


def _lead_item(action: str, index: str, item: FormNode) -> LeadItem:
    where = f"leads[{action}][{index}]"
    fields: dict[str, Any] = {"id": item} if isinstance(item, str) else item
    if action == "note":
        # Notes are double-nested (`leads[note][0][note][element_id]`); `note[id]` is the
        # note's own id, `element_id` the lead's.
        note = fields.get("note")
        raw_id = note.get("element_id") if isinstance(note, dict) else None
        if raw_id is None:
            raw_id = fields.get("element_id")
        id_name = f"{where}[note][element_id]"
    else:
        raw_id = fields.get("id")
        id_name = f"{where}[id]"
    lead_id = _optional_int(raw_id, id_name)
    if lead_id is None:
        raise InputError(f"{id_name} is missing: every lead item needs the lead id")
    if lead_id <= 0:
        raise InputError(f"{id_name} must be a positive number")
    return LeadItem(
        action=action,
        index=index,
        id=lead_id,
        status_id=_optional_int(fields.get("status_id"), f"{where}[status_id]"),
        pipeline_id=_optional_int(fields.get("pipeline_id"), f"{where}[pipeline_id]"),
        old_status_id=_optional_int(fields.get("old_status_id"), f"{where}[old_status_id]"),
        old_pipeline_id=_optional_int(fields.get("old_pipeline_id"), f"{where}[old_pipeline_id]"),
        fields=fields,
    )


def _optional_int(value: FormNode | None, name: str) -> int | None:
    """A numeric string -> int; missing or empty -> None; anything else -> InputError."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{name} must be a single number, not a group of fields")
    text = value.strip()
    if not text:
        return None
    if not _NUMBER.fullmatch(text):
        raise InputError(f"{name} must be a number, got {_shown(text)}")
    return int(text)
