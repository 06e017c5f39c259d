"""Can prometei write back to amoCRM? The write-back rows of `doctor`.

Run only when AMOCRM_SYNC_NOTE, AMOCRM_FAILURE_NOTE or AMOCRM_ERP_ID_FIELD is on (no row at
all otherwise), with harmless reads only (nothing is written to a lead):

    amocrm write-back     the user the token acts as (`current_user_id` of the account) may
                          edit leads: notes and field values need it, for the integration
                          (OAuth: the user who connected it) and a long-lived token alike;
                          stage rights that deny editing in a trigger stage are named; a sync
                          note needs a state store
    amocrm erp id field   AMOCRM_ERP_ID_FIELD is a lead custom field of a type that holds the
                          record id (text, number)

amoCRM's rights answer: `rights.leads.edit` is A (all), G (the user's group), M (own leads) or
D (denied); `is_admin` users may do everything (reference: Kommo's "Users and roles" page; the
SDK's RightModel). Whether every account lets a non-admin read its own user is not verified:
a refused read is a warning, not a failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometei.doctor.check import Check, fail, ok, passed, skip, warn
from prometei.errors import ConfigError, PrometeiError
from prometei.services import Services

if TYPE_CHECKING:
    from prometei.amocrm.client import AmoCRMClient
    from prometei.config import Settings

ROWS = ("amocrm write-back", "amocrm erp id field")
ID_FIELD_TYPES = frozenset({"text", "numeric", "textarea"})
RIGHT_NAMES = {"A": "all leads", "G": "its group's leads", "M": "its own leads", "D": "no leads"}


def enabled_settings(settings: Settings) -> list[str]:
    """The write-back settings that are on, by name."""
    names = [
        ("AMOCRM_SYNC_NOTE", settings.amocrm_sync_note),
        ("AMOCRM_FAILURE_NOTE", settings.amocrm_failure_note),
        ("AMOCRM_ERP_ID_FIELD", settings.amocrm_erp_id_field is not None),
    ]
    return [name for name, on in names if on]


def check_amocrm_writeback(services: Services, *, amocrm: Check | None) -> list[Check]:
    """With write-back on: may the token's user edit leads, and is AMOCRM_ERP_ID_FIELD a lead
    field that can hold the record id? No row when write-back is off; skipped when the amoCRM
    row did not pass."""
    settings = services.settings
    enabled = enabled_settings(settings)
    if not enabled:
        return []  # nothing to check, and no row for a feature that is off
    if not passed(amocrm):
        return [skip(ROWS[0], "not run: the amoCRM check did not pass (see above)")]
    client = services.amocrm_housekeeping
    rows = [rights_row(settings, client, enabled)]
    if settings.amocrm_sync_note:
        try:
            services.state  # noqa: B018 - building the store is the check
        except ConfigError as exc:
            rows[0] = fail(
                ROWS[0],
                f"AMOCRM_SYNC_NOTE needs a state store to tell a changed record from a "
                f"repeat: {exc.message}",
                "connect a KV store (KV_REST_API_URL and KV_REST_API_TOKEN), or unset "
                "AMOCRM_SYNC_NOTE",
            )
    if settings.amocrm_erp_id_field is not None:
        rows.append(id_field_row(settings.amocrm_erp_id_field, client))
    return rows


def rights_row(  # noqa: PLR0911 - one per answer
    settings: Settings, client: AmoCRMClient, enabled: list[str]
) -> Check:
    name = ROWS[0]
    who = (
        "the user who created AMOCRM_ACCESS_TOKEN"
        if settings.uses_long_lived_token
        else "the user who connected the integration (/api/oauth/callback)"
    )
    unset = f"or unset {', '.join(enabled)}"
    grant = (
        f"in amoCRM (Settings -> Users -> rights) let {who} edit leads (Leads: Edit = all), {unset}"
    )
    unread = f"make sure {who} may edit leads"
    try:
        user_id = client.current_user_id()
        user = client.user(user_id) if user_id is not None else None
    except PrometeiError as exc:
        return warn(name, f"could not read the token's user and rights: {exc.message}", unread)
    rights = user.get("rights") if isinstance(user, dict) else None
    if not isinstance(rights, dict):
        return warn(name, "amoCRM did not show the token's user and rights", unread)
    label = f"user {user_id}"
    if rights.get("is_active") is False:
        return fail(name, f"{label} is deactivated in amoCRM", grant)
    if rights.get("is_admin") is True:
        return ok(name, f"{label} is an administrator: {_on(enabled, settings)}")
    edit = _lead_right(rights, "edit")
    if edit == "D" or edit is None:
        return fail(
            name,
            f"{label} may edit no leads, so {', '.join(enabled)} would fail on every lead",
            grant,
        )
    blocked = _blocked_stages(rights, settings.amocrm_trigger_statuses)
    if edit != "A" or blocked:
        parts = [] if edit == "A" else [f"{label} may edit {RIGHT_NAMES.get(edit, edit)} only"]
        if blocked:
            parts.append(f"stage rights deny editing in {', '.join(blocked)}")
        return warn(name, "; ".join(parts) + ": write-backs fail on the other leads", grant)
    return ok(name, f"{label} may edit all leads: {_on(enabled, settings)}")


def id_field_row(field_id: int, client: AmoCRMClient) -> Check:
    name = ROWS[1]
    fix = (
        "set AMOCRM_ERP_ID_FIELD to the id of a text or number field of leads (amoCRM: "
        "Settings -> Leads fields; or GET /api/v4/leads/custom_fields), or unset it"
    )
    try:
        found = client.lead_custom_field(field_id)
    except PrometeiError as exc:
        return fail(name, exc.message, fix)
    if found is None:
        return fail(
            name, f"AMOCRM_ERP_ID_FIELD={field_id} is not a lead field of this account", fix
        )
    kind = str(found.get("type") or "?")
    title = f"AMOCRM_ERP_ID_FIELD={field_id} ({found.get('name')!r}, {kind})"
    if kind not in ID_FIELD_TYPES:
        return fail(name, f"{title} cannot hold a record id", fix)
    return ok(name, f"{title} receives the ERP record id")


def _lead_right(rights: dict[str, Any], action: str) -> str | None:
    leads = rights.get("leads")
    value = leads.get(action) if isinstance(leads, dict) else None
    return value if isinstance(value, str) else None


def _blocked_stages(rights: dict[str, Any], wanted: tuple[tuple[int, int], ...]) -> list[str]:
    """Stages (`pipeline:status`) where stage rights deny editing leads, among the trigger
    stages (all stages when no trigger stages are set)."""
    blocked = []
    for item in rights.get("status_rights") or []:
        if not isinstance(item, dict) or item.get("entity_type") != "leads":
            continue
        stage = (item.get("pipeline_id"), item.get("status_id"))
        stage_rights = item.get("rights")
        denied = isinstance(stage_rights, dict) and stage_rights.get("edit") == "D"
        if denied and (not wanted or stage in wanted):
            blocked.append(f"{stage[0]}:{stage[1]}")
    return blocked


def _on(enabled: list[str], settings: Settings) -> str:
    link = settings.erp_web_base
    where = f"; record links point to {link}" if link and settings.amocrm_sync_note else ""
    return f"{', '.join(enabled)} can write to leads{where}"
