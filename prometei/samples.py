"""Realistic amoCRM webhook bodies, for `python -m prometei webhook send` and smoke tests.

amoCRM posts `application/x-www-form-urlencoded` bodies with PHP bracket keys
(`leads[status][0][id]=25399013`); every value is a string. `webhook_fields()` builds the
(key, value) pairs of one lead item of the requested kind plus the `account[...]` block, and
`encode_form()` turns them into the bytes amoCRM puts on the wire (brackets percent-encoded,
`+` for spaces).

`updated_at`/`last_modified` default to the current time, so each body sent is a new change:
the intake derives the event id from the item's content, and Inngest drops a repeated id for
24 hours. Pass `now=` for a fixed body (tests, or to check that a redelivery is dropped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

WebhookKind = Literal["status", "add", "update"]
KINDS: tuple[WebhookKind, ...] = ("status", "add", "update")

DEFAULT_LEAD_ID = 25399013
DEFAULT_PIPELINE_ID = 7012345
DEFAULT_STATUS_ID = 142  # amoCRM's fixed id of the "won" stage in every pipeline
DEFAULT_OLD_STATUS_ID = 32392156
DEFAULT_ACCOUNT_ID = 29085955
_RESPONSIBLE_USER = "938348"
_CREATED_BY = "102525"


@dataclass(frozen=True)
class SampleLead:
    """What goes into the sample item; the defaults read like a real order."""

    lead_id: int = DEFAULT_LEAD_ID
    pipeline_id: int = DEFAULT_PIPELINE_ID
    status_id: int = DEFAULT_STATUS_ID
    old_status_id: int = DEFAULT_OLD_STATUS_ID
    name: str = "Order #1042"
    price: int = 15000


def webhook_fields(
    kind: WebhookKind,
    *,
    subdomain: str,
    account_id: int | None = DEFAULT_ACCOUNT_ID,
    base_domain: str = "amocrm.ru",
    lead: SampleLead | None = None,
    now: int | None = None,
) -> list[tuple[str, str]]:
    """The decoded (key, value) pairs of a one-lead webhook of `kind`, in amoCRM's order.

    >>> pairs = webhook_fields("status", subdomain="example", now=1712056800)
    >>> pairs[0]
    ('leads[status][0][id]', '25399013')
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    lead = lead or SampleLead()
    stamp = str(int(time.time()) if now is None else int(now))
    created = str(int(stamp) - 3 * 86400)
    item: list[tuple[str, str]] = [
        ("id", str(lead.lead_id)),
        ("name", lead.name),
        ("status_id", str(lead.status_id)),
    ]
    if kind in ("status", "update"):
        # amoCRM sends old_status_id on updates too (equal to status_id when it did not move).
        old = lead.old_status_id if kind == "status" else lead.status_id
        item.append(("old_status_id", str(old)))
    item += [
        ("price", str(lead.price)),
        ("responsible_user_id", _RESPONSIBLE_USER),
        ("last_modified", stamp),
        ("modified_user_id", _RESPONSIBLE_USER),
        ("created_user_id", _CREATED_BY),
        ("date_create", created),
        ("pipeline_id", str(lead.pipeline_id)),
    ]
    if kind == "status":
        item.append(("old_pipeline_id", str(lead.pipeline_id)))
    if account_id is not None:
        item.append(("account_id", str(account_id)))
    if kind == "update":
        item += [
            ("tags/0/id", "80147"),
            ("tags/0/name", "repeat customer"),
            ("custom_fields/0/id", "66339"),
            ("custom_fields/0/name", "Source"),
            ("custom_fields/0/values/0/value", "Website"),
            ("custom_fields/0/values/0/enum", "139517"),
        ]
    item += [("created_at", created), ("updated_at", stamp)]

    # Keys are written as slash paths above; amoCRM nests them with brackets.
    pairs = [(_bracket_key("leads", kind, "0", *key.split("/")), value) for key, value in item]
    pairs.append(("account[subdomain]", subdomain))
    if account_id is not None:
        pairs.append(("account[id]", str(account_id)))
    pairs.append(("account[_links][self]", f"https://{subdomain}.{base_domain}"))
    return pairs


def _bracket_key(name: str, *parts: str) -> str:
    """`_bracket_key("leads", "add", "0", "id")` -> `leads[add][0][id]`."""
    return name + "".join(f"[{part}]" for part in parts)


def encode_form(pairs: list[tuple[str, str]]) -> bytes:
    """Wire form of the pairs: `quote_plus` on names and values, joined with `&`."""
    return urlencode(pairs).encode("ascii")


def describe(kind: WebhookKind, lead: SampleLead) -> str:
    """A short human description of the sample, for CLI output."""
    if kind == "status":
        return (
            f"lead {lead.lead_id} moved to stage {lead.status_id} of pipeline {lead.pipeline_id}"
            f" (from stage {lead.old_status_id})"
        )
    if kind == "add":
        return f"lead {lead.lead_id} added in pipeline {lead.pipeline_id}"
    return f"lead {lead.lead_id} updated (tags, a custom field)"
