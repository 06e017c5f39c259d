"""A stateful stand-in for Rukovoditel's api/rest.php, following reference/rukovoditel-live.md.

`FakeRukovoditel.handle_body(body, content_type)` is the whole server: the unit tier plugs it into
`responses` (`install`), the e2e tier serves it over HTTP.

It keeps rows per entity and a schema per entity (`entities`: fields with types, required and
heading flags, dropdown choices), and answers the way the live 3.6.2 server does:

- `insert` refuses a key that is not a field of the entity (500 JSON, #47) and an unknown entity
  (#46); a dropdown value that is not an integer is stored as 0 (#48, T9), an unknown choice id
  as given (#49); a unique field already holding the value skips the item (U1);
- `select` wants bare numeric filter keys with string values and silently drops anything else
  (#9-#14); rows come back formatted: numbers as "15000.00" (#21), dropdowns as the label plus
  `<id>_db_value` (#22), dates as m/d/Y (T10); an unknown entity is an `<app_db_error>` (#26);
- `update` ignores unknown `data` keys and answers success (#34, T8), wants `field_N` or `id` in
  `update_by_field` (#32, #33), skips the unique check (U5);
- `get_entity_fields` / `get_field_choices` (T1-T6; inactive choices listed too, with
  `is_active` "0"); choices are for administrators only (an empty 500 for other users, #42);
  `legacy=True` is an Extension before 3.4 (no such actions).

`fail_next(...)` queues faults for the next matching calls. Credentials are not checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

import requests
import responses

Reply = tuple[int, dict[str, str], str]
HTML = {"Content-Type": "text/html; charset=UTF-8"}
# The live server ran in Europe/Moscow (a never-updated record shows 01/01/1970 03:00).
SERVER_TZ = timezone(timedelta(hours=3))
NEVER_UPDATED = "01/01/1970 03:00"
SYSTEM_TYPES = ("id", "date_added", "date_updated", "created_by", "parent_item_id")
CHOICE_TYPES = ("dropdown", "radioboxes")


@dataclass
class FakeField:
    """One field; `type` without the `fieldtype_` prefix, `choices` as (id, label) pairs."""

    id: int
    type: str
    name: str
    required: bool = False
    heading: bool = False
    unique: bool = False
    choices: list[tuple[int, str]] = field(default_factory=list)
    inactive: tuple[int, ...] = ()  # choice ids switched off (listed with is_active "0")
    configuration: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"field_{self.id}"


@dataclass
class FakeEntity:
    id: int
    name: str
    fields: dict[int, FakeField]

    def by_key(self, key: str) -> FakeField | None:
        if not key.startswith("field_") or not key[6:].isdigit():
            return None
        return self.fields.get(int(key[6:]))


def entity(entity_id: int, name: str, first_system_id: int, *fields: FakeField) -> FakeEntity:
    """An entity with Rukovoditel's system fields (ids from `first_system_id`) and `fields`."""
    system = [
        FakeField(first_system_id + i, kind, kind.replace("_", " ").title())
        for i, kind in enumerate(SYSTEM_TYPES)
    ]
    return FakeEntity(entity_id, name, {f.id: f for f in (*system, *fields)})


def deals_entity(entity_id: int, name: str, first_system_id: int, first_id: int) -> FakeEntity:
    """A top-level entity shaped like the live capture's "Сделки": a heading text field, a
    numeric amount (number_format 2/./*), a text field for the amoCRM id, a status dropdown."""
    return entity(
        entity_id,
        name,
        first_system_id,
        FakeField(first_id, "input", "Название", heading=True),
        FakeField(first_id + 1, "input_numeric", "Сумма", configuration={"number_format": "2/./*"}),
        FakeField(first_id + 2, "input", "amoCRM ID"),
        FakeField(first_id + 3, "dropdown", "Статус", choices=[(68, "Новая"), (69, "В работе")]),  # noqa: RUF001
    )


def default_entities() -> dict[int, FakeEntity]:
    """The project's defaults (entity 70: field_1039 name, field_1040 price, field_1041 a text
    field for the lead id, field_1042 a dropdown) and the live capture's entity 25 (213-216)."""
    return {70: deals_entity(70, "Заявки", 1030, 1039), 25: deals_entity(25, "Сделки", 208, 213)}


def _success(data: Any, **extra: Any) -> Reply:
    body = {"status": "success", "data": data, **extra}
    return 200, dict(HTML), json.dumps(body, ensure_ascii=False)


def _error(message: str) -> Reply:
    # 3.6: an error without a code is HTTP 500 with the JSON envelope, error_code a number.
    body = {"status": "error", "error_code": 500, "error_message": message}
    return 500, dict(HTML), json.dumps(body, ensure_ascii=False)


def _db_error(mysql_line: str) -> Reply:
    body = (
        '<div style="color:#b94a48;background:#f2dede;border:1px solid #eed3d7;padding:5px">'
        f"<app_db_error><strong>Database Error:</strong> {mysql_line}</div>"
    )
    return 200, dict(HTML), body


EMPTY_500: Reply = (500, dict(HTML), "")  # a string error code crashed http_response_code()


@dataclass
class Fault:
    action: str
    reply: Reply | type[Exception]
    # apply the real effect first (e.g. insert lands, then the client times out)
    after_effect: bool = False
    match: Callable[[dict[str, Any]], bool] | None = None


@dataclass
class FakeRukovoditel:
    url: str
    rows: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    next_id: int = 800
    entities: dict[int, FakeEntity] = field(default_factory=default_entities)
    admin: bool = True  # the API user's group may read choices (get_field_choices)
    legacy: bool = False  # Extension before 3.4: no get_entity_fields / get_field_choices

    def install(self, mock: responses.RequestsMock) -> FakeRukovoditel:
        mock.add_callback(responses.POST, self.url, callback=self._handle)
        return self

    def fail_next(
        self,
        action: str,
        reply: Reply | type[Exception],
        *,
        times: int = 1,
        after_effect: bool = False,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        for _ in range(times):
            self.faults.append(Fault(action, reply, after_effect, match))

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c.get("action") == action]

    def add_field(self, entity_id: int, new: FakeField) -> FakeField:
        self.entities[entity_id].fields[new.id] = new
        return new

    def shown(self, entity_id: int, row: dict[str, str]) -> dict[str, str]:
        """A stored row the way `select` shows it (formatted values, `_db_value` keys)."""
        return self._render(self.entities[entity_id], row, [])

    # ---- request handling ---------------------------------------------------------------
    def _handle(self, request: requests.PreparedRequest) -> Reply:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        return self.handle_body(body, request.headers.get("Content-Type", ""))

    def handle_body(self, body: bytes, content_type: str) -> Reply:
        """One api/rest.php request (raw body + Content-Type) -> (status, headers, text)."""
        try:
            params = parse_params(body, content_type)
        except ValueError:
            params = {}
        self.calls.append(params)
        if "key" not in params:
            # JSON the server cannot read (bad JSON, a BOM, a form Content-Type) leaves
            # $_REQUEST empty, and `key` is checked first (#55, #56).
            return _error("key is required")
        action = params.get("action", "")
        for fault in list(self.faults):
            if fault.action == action and (fault.match is None or fault.match(params)):
                self.faults.remove(fault)
                if fault.after_effect:
                    self._apply(action, params)
                if isinstance(fault.reply, type):
                    raise fault.reply("injected fault")
                return fault.reply
        return self._apply(action, params)

    def _apply(self, action: str, params: dict[str, Any]) -> Reply:
        if not action:
            return _error("action is required")
        if action == "login":
            return _success(
                {"id": "1", "username": params.get("username"), "group_id": 0 if self.admin else 4}
            )
        handler = {
            "insert": self._insert,
            "select": self._select,
            "update": self._update,
            "delete": self._delete,
            "get_entity_fields": self._entity_fields,
            "get_field_choices": self._field_choices,
        }.get(action)
        if handler is None or (self.legacy and action.startswith("get_")):
            return _error(f'action "{action}" not exist')
        if "entity_id" not in params:
            return _error("entity_id is required")
        return handler(params)

    # ---- actions --------------------------------------------------------------------------
    def _insert(self, params: dict[str, Any]) -> Reply:
        ent = self.entities.get(_int(params["entity_id"]))
        if ent is None:
            return _error(f"entity {params['entity_id']} not found")
        if "items" not in params:
            return _error("items is required")
        items = params["items"]
        if not isinstance(items, dict | list):
            return _error("items is not array")
        batch = items if isinstance(items, list) else [items]
        if isinstance(items, dict) and "0" in items:  # a form-encoded list
            batch = list(items.values())
        for item in batch:
            for key in item:
                if key not in ("parent_item_id", "created_by") and ent.by_key(key) is None:
                    return _error(f"{key} not exist in entity {ent.id}")
        table = self.rows.setdefault(ent.id, [])
        ids, clashes = [], []
        for item in batch:
            clash = self._unique_clash(ent, item)
            if clash:
                clashes.append(clash)
                continue
            self.next_id += 1
            row = {"id": str(self.next_id)}
            row.update(self._stored(ent, item))
            table.append(row)
            ids.append(row["id"])
        data: dict[str, Any] = {"id": ",".join(ids)}
        if clashes:
            data["unique_fields_warning"] = clashes
        return _success(data)

    def _select(self, params: dict[str, Any]) -> Reply:
        ent = self.entities.get(_int(params["entity_id"]))
        if ent is None:
            return _db_error(f"1146 - Table 'ruko.app_entity_{params['entity_id']}' doesn't exist")
        wanted = [f for f in str(params.get("select_fields", "")).split(",") if f]
        if any(not f.isdigit() for f in wanted):
            bad = next(f for f in wanted if not f.isdigit())
            return _db_error(f"1054 - Unknown column '{bad}' in 'WHERE'")
        found = list(self.rows.get(ent.id, []))
        for key, value in (params.get("filters") or {}).items():
            found = [row for row in found if self._filter_keeps(ent, str(key), value, row)]
        limit = _int(params.get("limit"))
        if limit > 0:
            found = found[:limit]
        out = [self._render(ent, row, wanted) for row in found]
        return _success(out, page=1, number_of_rows=len(out), number_of_pages=1)

    def _update(self, params: dict[str, Any]) -> Reply:
        ent = self.entities.get(_int(params["entity_id"]))
        if ent is None:
            return _db_error(f"1146 - Table 'ruko.app_entity_{params['entity_id']}' doesn't exist")
        hit, problem = self._matching(ent, params.get("update_by_field") or {})
        if problem:
            return _error(problem)
        data = params.get("data") or {}
        # Unknown keys are dropped without a word (T8): the bug prometei must guard against.
        known = {k: v for k, v in data.items() if ent.by_key(k) is not None}
        for row in hit:
            row.update(self._stored(ent, known))
        return _success({"id": ",".join(r["id"] for r in hit)})

    def _delete(self, params: dict[str, Any]) -> Reply:
        ent = self.entities.get(_int(params["entity_id"]))
        if ent is None:
            return _error(f"entity {params['entity_id']} not found")
        hit, problem = self._matching(ent, params.get("delete_by_field") or {})
        if problem:
            return _error(problem)
        table = self.rows.get(ent.id, [])
        self.rows[ent.id] = [row for row in table if row not in hit]
        return _success({"id": ",".join(r["id"] for r in hit)})

    def _entity_fields(self, params: dict[str, Any]) -> Reply:
        ent = self.entities.get(_int(params["entity_id"]))
        if ent is None:
            return _error(f"Entity #{_int(params['entity_id'])} does not exist")
        return _success(
            {
                str(f.id): {
                    "id": str(f.id),
                    "type": f"fieldtype_{f.type}",
                    "name": f.name,
                    "short_name": "",
                    "is_heading": "1" if f.heading else "0",
                    "tooltip": "",
                    "is_required": "1" if f.required else "0",
                    "required_message": "",
                    "configuration": json.dumps(f.configuration),
                }
                for f in ent.fields.values()
            }
        )

    def _field_choices(self, params: dict[str, Any]) -> Reply:
        if not self.admin:
            return EMPTY_500  # access_denied: admins only
        ent = self.entities.get(_int(params["entity_id"]))
        if ent is None:
            return _error(f"Entity #{_int(params['entity_id'])} does not exist")
        fid = _int(params.get("field_id"))
        found = ent.fields.get(fid)
        if found is None:
            return _error(f"Field #{fid} does not exist in Entity #{ent.id}")
        return _success(
            [
                {
                    "id": str(cid),
                    "parent_id": "0",
                    "fields_id": str(fid),
                    "is_active": "0" if cid in found.inactive else "1",
                    "name": name,
                    "is_default": "0",
                    "sort_order": str(n),
                    "level": 0,
                }
                for n, (cid, name) in enumerate(found.choices)
            ]
        )

    # ---- storage rules --------------------------------------------------------------------
    def _stored(self, ent: FakeEntity, values: dict[str, Any]) -> dict[str, str]:
        out = {}
        for key, value in values.items():
            target = ent.by_key(key)
            if target is None:
                continue
            text = "" if value is None else str(value)
            if target.type in CHOICE_TYPES:
                # An INT column in a non-strict session: a label becomes 0 (T9).
                text = text if text.isdigit() else "0"
            elif target.type in ("input_date", "input_datetime"):
                text = _stored_date(text)
            out[key] = text
        return out

    def _unique_clash(self, ent: FakeEntity, item: dict[str, Any]) -> dict[str, str] | None:
        for key, value in item.items():
            target = ent.by_key(key)
            table = self.rows.get(ent.id, [])
            if (
                target is not None
                and target.unique
                and any(row.get(key) == str(value) for row in table)
            ):
                return {"id": str(target.id), "value": str(value)}
        return None

    def _filter_keeps(self, ent: FakeEntity, key: str, value: Any, row: dict[str, str]) -> bool:
        if key == "id":
            return row["id"] in str(value).split(",")
        target = ent.fields.get(int(key)) if key.isdigit() else None
        if target is None or not isinstance(value, str):
            return True  # the real server silently drops such filters
        stored = row.get(target.key, "")
        if target.type == "input_numeric":
            return _number(stored) is not None and _number(stored) == _number(value)
        return stored == value

    def _matching(
        self, ent: FakeEntity, by: dict[str, Any]
    ) -> tuple[list[dict[str, str]], str | None]:
        ((key, value),) = by.items()
        table = self.rows.get(ent.id, [])
        if key == "id":
            wanted = {str(v) for v in value} if isinstance(value, list) else {str(value)}
            return [r for r in table if r["id"] in wanted], None
        if ent.by_key(key) is None:
            return [], f"{key} not exist in entity {ent.id}"
        return [r for r in table if r.get(key) == str(value)], None

    def _render(self, ent: FakeEntity, row: dict[str, str], wanted: list[str]) -> dict[str, str]:
        out = {
            "id": row["id"],
            "parent_item_id": "0",
            "date_added": "11/21/2026 10:34",
            "date_updated": NEVER_UPDATED,
            "created_by": "1",
        }
        ids = [int(f) for f in wanted] or [f.id for f in ent.fields.values()]
        for fid in ids:
            target = ent.fields.get(fid)
            if target is None or target.type in SYSTEM_TYPES:
                continue
            stored = row.get(target.key, "")
            if target.type in CHOICE_TYPES:
                names = dict(target.choices)
                out[str(fid)] = names.get(_int(stored), "") if stored else ""
                out[f"{fid}_db_value"] = stored or "0"
            elif target.type == "input_numeric":
                number = _number(stored)
                out[str(fid)] = f"{number:.2f}" if number is not None else stored
            elif target.type in ("input_date", "input_datetime") and stored.isdigit():
                moment = datetime.fromtimestamp(int(stored), SERVER_TZ)
                pattern = "%m/%d/%Y %H:%M" if target.type == "input_datetime" else "%m/%d/%Y"
                out[str(fid)] = moment.strftime(pattern)
            else:
                out[str(fid)] = stored
        return out


def _stored_date(text: str) -> str:
    """PHP date_parse + mktime in the server's zone (T10); a bare timestamp is misread as a
    date in the year 4999 (T11)."""
    if text.isdigit():
        return str(int(datetime(4999, 12, 31, tzinfo=SERVER_TZ).timestamp()))
    for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            moment = datetime.strptime(text, pattern).replace(tzinfo=SERVER_TZ)
        except ValueError:
            continue
        return str(int(moment.timestamp()))
    return "0"


def _number(text: str) -> Decimal | None:
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse_params(body: bytes, content_type: str) -> dict[str, Any]:
    """What PHP would see in $_POST (form) or the JSON fallback api/rest.php reads."""
    if "x-www-form-urlencoded" in content_type:
        return _unflatten(parse_qs(body.decode(), keep_blank_values=True))
    return json.loads(body or b"{}")


def _unflatten(form: dict[str, list[str]]) -> dict[str, Any]:
    """PHP bracket keys (items[field_1039]=x) back into nested dicts."""
    out: dict[str, Any] = {}
    for key, values in form.items():
        parts = key.replace("]", "").split("[")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = values[-1]
    return out
