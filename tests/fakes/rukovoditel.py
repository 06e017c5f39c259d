"""A stateful stand-in for Rukovoditel's api/rest.php, following reference/rukovoditel-live.md.

`FakeRukovoditel.handle_body(body, content_type)` is the whole server: the unit tier plugs it into
`responses` (`install`), the e2e tier serves it over HTTP.

It keeps rows per entity and a schema per entity (`entities`: fields with types, required and
heading flags, dropdown choices), and answers the way the live 3.6.2 server does:

- the body: JSON the server cannot read (invalid, a UTF-8 BOM, a form Content-Type) leaves
  nothing to read, so "key is required" (#55, #56);
- credentials: it checks the `key`, `username` and `password` it was built with (defaults:
  the unit tier's, tests/conftest.py) and answers a wrong key with "API Key mismatch", a wrong
  username or password or an inactive user (`active=False`) with PHP's empty 500 (#37-#41);
- `insert` refuses a key that is not a field of the entity (500 JSON, #47) and an unknown entity
  (#46); a dropdown value that is not an integer is stored as 0 (#48, T9), an unknown choice id
  as given (#49); a unique field already holding the value skips the item (U1), a quote in it
  breaks the query (U3, U4);
- `select` wants bare numeric filter keys and silently drops what it cannot apply (#9-#14); a
  text value is an exact match (#16), `{"value", "condition": "search"}` a keyword search
  (#17), a numeric field compares (">1000", #21); rows come back formatted: numbers as
  "15000.00" (#21), dropdowns as the label plus `<id>_db_value` (#22), dates as m/d/Y (T10),
  every field including the system ones when `select_fields` is absent (#20); `select_fields`
  as an array kills PHP (#24); an unknown entity is an `<app_db_error>` (#26);
- `update` ignores unknown `data` keys and answers success (#34, T8), wants `field_N` or `id` in
  `update_by_field` (#32, #33), skips the unique check (U5), stamps `date_updated`;
- `get_entity_fields` / `get_field_choices` (T1-T6; inactive choices listed too, with
  `is_active` "0"); choices are for administrators only (an empty 500 for other users, #42;
  rukovoditel.md's rule, not tried live); `legacy=True` is an Extension before 3.4 (no such
  actions).

Opt-in modes for the server set-ups the reference also recorded: `strict_sql=True` (the
server's STRICT_TRANS_TABLES reaches the app's session: S1, S2) and `display_errors=True`
(PHP prints its errors: D1-D3; `opcache=False` repeats D3's notices on every select).

`fail_next(...)` queues faults for the next matching calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

import requests
import responses

from tests.fakes import rukovoditel_php as php
from tests.fakes.rukovoditel_php import EMPTY_500, HTML, Reply

__all__ = ["EMPTY_500", "HTML", "FakeEntity", "FakeField", "FakeRukovoditel", "Reply"]

# The unit tier's credentials (tests/conftest.py BASE_ENV); other tiers pass their own.
API_KEY = "erp-api-key-SECRET-3333"
API_USERNAME = "api"
API_PASSWORD = "erp-password-SECRET-4444"
# The live server ran in Europe/Moscow (a never-updated record shows 01/01/1970 03:00).
SERVER_TZ = timezone(timedelta(hours=3))
DB_NAME = "ruko"
# fields_types::get_reserved_types() of 3.x, in the order a new entity gets them: the live
# entity 25 had 208 id, 209 date_added, 210 date_updated, 211 created_by, 212 parent_item_id
# (#20), so the action field is 207. `action` has no column and is never listed by select.
SYSTEM_TYPES = ("action", "id", "date_added", "date_updated", "created_by", "parent_item_id")
CHOICE_TYPES = ("dropdown", "radioboxes")
DATE_TYPES = ("input_date", "input_date_extra", "input_datetime")


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

    @property
    def has_column(self) -> bool:
        """A `field_N` column of app_entity_<id> (system fields live in fixed columns)."""
        return self.type not in SYSTEM_TYPES


@dataclass
class FakeEntity:
    id: int
    name: str
    fields: dict[int, FakeField]

    def by_key(self, key: str) -> FakeField | None:
        if not key.startswith("field_") or not key[6:].isdigit():
            return None
        found = self.fields.get(int(key[6:]))
        return found if found is not None and found.has_column else None

    def columns(self) -> list[FakeField]:
        return [f for f in self.fields.values() if f.has_column]


def entity(entity_id: int, name: str, first_system_id: int, *fields: FakeField) -> FakeEntity:
    """An entity with Rukovoditel's system fields (ids from `first_system_id`, the action
    field first) and `fields`."""
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
    return {70: deals_entity(70, "Заявки", 1029, 1039), 25: deals_entity(25, "Сделки", 207, 213)}


@dataclass
class Fault:
    action: str
    reply: Reply | type[Exception]
    # apply the real effect first (e.g. insert lands, then the client times out)
    after_effect: bool = False
    match: Callable[[dict[str, Any]], bool] | None = None


class _Died(Exception):
    """PHP's die(): the answer `reply` is final."""

    def __init__(self, reply: Reply) -> None:
        super().__init__("api.php died")
        self.reply = reply


@dataclass
class FakeRukovoditel:
    url: str
    key: str = API_KEY
    username: str = API_USERNAME
    password: str = API_PASSWORD
    rows: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    next_id: int = 800
    entities: dict[int, FakeEntity] = field(default_factory=default_entities)
    admin: bool = True  # the API user's group is 0 (administrators)
    active: bool = True  # the API user's account is active (field_5 = 1)
    user_id: str = "1"
    full_name: str = "Иван Петров"
    legacy: bool = False  # Extension before 3.4: no get_entity_fields / get_field_choices
    strict_sql: bool = False  # S1/S2: STRICT_TRANS_TABLES reaches the app's session
    display_errors: bool = False  # D1-D3: PHP prints errors into the answer
    opcache: bool = True  # D3: with it, only the first request after start prints notices
    clock: Callable[[], float] = time.time
    _served: int = field(default=0, init=False, repr=False)

    def install(self, mock: responses.RequestsMock) -> FakeRukovoditel:
        mock.add_callback(responses.POST, self.url, callback=self._handle)
        return self

    def blank(self) -> FakeRukovoditel:
        """A fresh server with the same credentials, user and modes: no rows, log or faults."""
        return FakeRukovoditel(
            url=self.url,
            key=self.key,
            username=self.username,
            password=self.password,
            admin=self.admin,
            active=self.active,
            legacy=self.legacy,
            strict_sql=self.strict_sql,
            display_errors=self.display_errors,
            opcache=self.opcache,
            clock=self.clock,
        )

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
        return self._render(self.entities[entity_id], row, None)

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
        self._served += 1
        if params.get("key") is None:
            # JSON the server cannot read (bad JSON, a BOM, a form Content-Type) leaves
            # $_REQUEST empty, and `key` is checked first (#55, #56).
            return php.error("key is required")
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
        try:
            self._login(params)
            return self._dispatch(action, params)
        except _Died as died:
            return died.reply

    def _login(self, params: dict[str, Any]) -> None:
        """api/rest.php compares the key, then api::login() reads username and password; a
        string error code (login_fail, account_not_active) is PHP's empty 500 (#37-#41)."""
        if _php_text(params["key"]) != self.key:
            raise _Died(php.error("API Key mismatch"))
        for name in ("username", "password"):
            _require(params, name)
        if _php_text(params["username"]) != self.username:
            self._die_with_code("login_fail")
        if not self.active:  # checked before the password, as api::login() does
            self._die_with_code("account_not_active")
        if _php_text(params["password"]) != self.password:
            self._die_with_code("login_fail")

    def _die_with_code(self, code: str) -> None:
        raise _Died(php.string_code_error(code, display_errors=self.display_errors))

    def _dispatch(self, action: str, params: dict[str, Any]) -> Reply:
        if not action:
            return php.error("action is required")
        if action == "login":
            return php.success(self._user())
        handler = {
            "insert": self._insert,
            "select": self._select,
            "update": self._update,
            "delete": self._delete,
            "get_entity_fields": self._entity_fields,
            "get_field_choices": self._field_choices,
        }.get(action)
        if handler is None or (self.legacy and action.startswith("get_")):
            return php.error(f'action "{action}" not exist')
        if action == "get_field_choices" and not self.admin:
            # check_admin_access() in the 3.6.2 source; NOT tried live (rukovoditel.md only).
            self._die_with_code("access_denied")
        _require(params, "entity_id")
        return handler(params)

    def _user(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "group_id": 0 if self.admin else 4,
            "multiple_access_groups": "",
            "language": "russian.php",
            "name": self.full_name,
            "email": "api@example.test",
            "username": self.username,
            "is_email_verified": "1",
            "photo": "",
        }

    # ---- actions --------------------------------------------------------------------------
    def _insert(self, params: dict[str, Any]) -> Reply:
        ent = self.entities.get(_int(params["entity_id"]))
        if ent is None:
            return php.error(f"entity {params['entity_id']} not found")
        _require(params, "items")
        items = params["items"]
        if not isinstance(items, dict | list):
            return php.error("items is not array")
        if not items:
            return php.error("items is ampty")  # sic, the 3.6.2 source; not tried live
        batch = items if isinstance(items, list) else [items]
        if isinstance(items, dict) and "0" in items:  # a form-encoded list
            batch = list(items.values())
        ids: list[str] = []
        clashes: list[dict[str, str]] = []
        # Item by item, as action_insert does: an error in a later item leaves the earlier
        # ones inserted, and their ids unreported (U4).
        for item in batch:
            if not isinstance(item, dict):
                continue  # foreach over a string: a PHP warning, nothing to insert
            for key in item:
                if key not in ("parent_item_id", "created_by") and ent.by_key(key) is None:
                    return php.error(f"{key} not exist in entity {ent.id}")
            clash = self._unique_clash(ent, item)
            if clash:
                clashes.append(clash)
                continue
            row = {"id": str(self.next_id + 1), "date_added": str(int(self.clock()))}
            row["created_by"] = str(item.get("created_by") or self.user_id)
            row["parent_item_id"] = str(_int(item.get("parent_item_id")))
            row.update(self._stored(ent, item, inserting=True))
            self.next_id += 1
            self.rows.setdefault(ent.id, []).append(row)
            ids.append(row["id"])
        data: dict[str, Any] = {"id": ",".join(ids)}
        if clashes:
            data["unique_fields_warning"] = clashes
        return php.success(data)

    def _select(self, params: dict[str, Any]) -> Reply:
        entity_id = _int(params["entity_id"])
        ent = self.entities.get(entity_id)
        fields_param = params.get("select_fields", "")
        if isinstance(fields_param, dict | list):  # strlen(array) on PHP 8 (#24)
            message = "strlen(): Argument #1 ($string) must be of type string, array given"
            return php.fatal_type_error(message, 419, display_errors=self.display_errors)
        wanted = [f.strip() for f in str(fields_param).split(",") if f.strip()]
        bad = next((f for f in wanted if not f.isdigit()), None)
        if bad is not None:  # select_fields goes into `f.id in (...)` raw (#25)
            query = f"select f.* from app_fields f where f.id in ({fields_param})"  # noqa: S608 - echoed SQL
            return php.db_error(1054, f"Unknown column '{bad}' in 'WHERE'", query)
        if ent is None:  # select never checks the entity; the listing query fails (#26, D2)
            query = f"select e.* from app_entity_{entity_id} e where e.id>0"  # noqa: S608 - echoed SQL
            status, headers, body = php.db_error(
                1146, f"Table '{DB_NAME}.app_entity_{entity_id}' doesn't exist", query
            )
            if self.display_errors:
                path = "/var/www/crm/includes/classes/fieldstypes/fieldtype_input_encrypted.php"
                body = 2 * php.warning(f"Undefined array key {entity_id}", path, 187) + body
            return status, headers, body
        found = list(self.rows.get(ent.id, []))
        filters = params.get("filters")
        for key, value in filters.items() if isinstance(filters, dict) else []:
            found = [row for row in found if self._filter_keeps(ent, str(key), value, row)]
        limit = _int(params.get("limit"))
        if limit > 0:
            found = found[:limit]
        out = [self._render(ent, row, {int(f) for f in wanted} or None) for row in found]
        status, headers, body = php.success(out, page=1, number_of_rows=len(out), number_of_pages=1)
        if self.display_errors and (not self.opcache or self._served == 1):
            # D3: compile-time notices of the Extension, then the JSON. Only a select was
            # recorded doing this; other actions on a cold start are assumed clean.
            body = php.deprecations() + body
        return status, headers, body

    def _update(self, params: dict[str, Any]) -> Reply:
        for name in ("data", "update_by_field"):
            _require(params, name)
        ent = self.entities.get(_int(params["entity_id"]))
        if ent is None:  # action_update looks the entity up (3.6.2 source; not tried live)
            return php.error(f"entity {params['entity_id']} not found")
        hit = self._matching(ent, params["update_by_field"])
        data = params["data"] if isinstance(params["data"], dict) else {}
        # Unknown keys are dropped without a word (T8): the bug prometei must guard against.
        known = {k: v for k, v in data.items() if ent.by_key(k) is not None}
        if hit and self.strict_sql:
            query = f"update app_entity_{ent.id} set ..."  # noqa: S608 - echoed SQL
            self._refuse_bad_integers(ent, known, query)
        stamp = str(int(self.clock()))
        for row in hit:
            row.update(self._stored(ent, known, inserting=False))
            row["date_updated"] = stamp
        return php.success({"id": ",".join(r["id"] for r in hit)})

    def _delete(self, params: dict[str, Any]) -> Reply:
        _require(params, "delete_by_field")
        ent = self.entities.get(_int(params["entity_id"]))
        if ent is None:
            return php.error(f"entity {params['entity_id']} not found")
        hit = self._matching(ent, params["delete_by_field"])
        table = self.rows.get(ent.id, [])
        self.rows[ent.id] = [row for row in table if row not in hit]
        return php.success({"id": ",".join(r["id"] for r in hit)})

    def _entity_fields(self, params: dict[str, Any]) -> Reply:
        ent = self.entities.get(_int(params["entity_id"]))
        if ent is None:
            return php.error(f"Entity #{_int(params['entity_id'])} does not exist")
        return php.success(
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
        ent = self.entities.get(_int(params["entity_id"]))
        if ent is None:
            return php.error(f"Entity #{_int(params['entity_id'])} does not exist")
        fid = _int(params.get("field_id"))
        found = ent.fields.get(fid)
        if found is None:
            return php.error(f"Field #{fid} does not exist in Entity #{ent.id}")
        return php.success(
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
    def _stored(
        self, ent: FakeEntity, values: dict[str, Any], *, inserting: bool
    ) -> dict[str, str]:
        if inserting and self.strict_sql:
            query = f"insert into app_entity_{ent.id} (...) values (...)"  # noqa: S608 - echoed SQL
            missing = [f for f in ent.columns() if f.key not in values]
            if missing:  # every field_N column is NOT NULL without a default (S1)
                message = f"Field '{missing[0].key}' doesn't have a default value"
                raise _Died(php.db_error(1364, message, query))
            self._refuse_bad_integers(ent, values, query)
        out = {}
        for key, value in values.items():
            target = ent.by_key(key)
            if target is None:
                continue
            text = "" if value is None else str(value)
            if target.type in CHOICE_TYPES:
                # An INT column in a non-strict session: a label becomes 0 (T9).
                text = text if text.isdigit() else "0"
            elif target.type in DATE_TYPES:
                text = _stored_date(text)
            out[key] = text
        return out

    def _refuse_bad_integers(self, ent: FakeEntity, values: dict[str, Any], query: str) -> None:
        """S2: in strict mode an INT column refuses a value that is not an integer."""
        for key, value in values.items():
            target = ent.by_key(key)
            text = "" if value is None else str(value)
            if target is not None and target.type in CHOICE_TYPES and not text.isdigit():
                column = f"`{DB_NAME}`.`app_entity_{ent.id}`.`{key}`"
                message = f"Incorrect integer value: '{text}' for column {column} at row 1"
                raise _Died(php.db_error(1366, message, query))

    def _unique_clash(self, ent: FakeEntity, item: dict[str, Any]) -> dict[str, str] | None:
        for key, value in item.items():
            target = ent.by_key(key)
            if target is None or not target.unique:
                continue
            text = str(value)
            query = f"select id from app_entity_{ent.id} where {key}='{text}' limit 1"  # noqa: S608 - echoed SQL
            if "'" in text:  # the unique check does not escape the value (U3, U4)
                tail = text[text.index("'") + 1 :]
                message = (
                    "You have an error in your SQL syntax; check the manual that corresponds "
                    "to your MariaDB server version for the right syntax to use near "
                    f"'{tail}' limit 1' at line 1"
                )
                raise _Died(php.db_error(1064, message, query))
            if any(row.get(key) == text for row in self.rows.get(ent.id, [])):
                return {"id": str(target.id), "value": text}
        return None

    def _filter_keeps(self, ent: FakeEntity, key: str, value: Any, row: dict[str, str]) -> bool:
        """One entry of `filters`, the way action_select builds its SQL (3.6.2 source)."""
        if key in ("id", "parent_item_id"):
            return row.get(key, "0") in str(value).split(",")
        target = ent.fields.get(int(key)) if key.isdigit() else None
        if target is None or not target.has_column:
            return True  # `field_215`, an unknown id: the real server silently drops it
        condition = "include"
        if isinstance(value, dict):  # {"value": ..., "condition": ...}
            condition = str(value.get("condition", "include"))
            value = value.get("value", "")
        elif isinstance(value, list):
            value = ""  # an array without "value": nothing to filter on (#13)
        stored = row.get(target.key, "")
        if condition in ("empty_value", "not_empty_value"):
            zero_means_empty = target.type in (*CHOICE_TYPES, *DATE_TYPES)
            empty = _int(stored) == 0 if zero_means_empty else not stored
            return empty == (condition == "empty_value")
        if isinstance(value, dict | list) or value is None or str(value) == "":
            return True
        return _value_keeps(target, condition, value, stored)

    def _matching(self, ent: FakeEntity, by: Any) -> list[dict[str, str]]:
        """update_by_field / delete_by_field. action_update reads only the first key
        (PHP key()/current()); with none, the key is null and the message starts with a
        space. Neither case was tried live: both follow the 3.6.2 source."""
        if not isinstance(by, dict):
            given = {str: "string", int: "int", float: "float", bool: "bool"}.get(type(by), "null")
            message = f"key(): Argument #1 ($array) must be of type array, {given} given"
            raise _Died(php.fatal_type_error(message, 1123, display_errors=self.display_errors))
        key, value = next(iter(by.items()), ("", False))
        table = self.rows.get(ent.id, [])
        if key != "id" and ent.by_key(key) is None:
            raise _Died(php.error(f"{key} not exist in entity {ent.id}"))
        column = "id" if key == "id" else key
        if isinstance(value, list | dict):  # `in (...)` of the values, unescaped
            wanted = {str(v) for v in (value.values() if isinstance(value, dict) else value)}
            return [r for r in table if r.get(column, "") in (wanted or {"0"})]
        return [r for r in table if r.get(column, "") == _php_text(value)]

    def _render(
        self, ent: FakeEntity, row: dict[str, str], wanted: set[int] | None
    ) -> dict[str, str]:
        out = {
            "id": row["id"],
            "parent_item_id": row.get("parent_item_id", "0"),
            "date_added": _moment(row.get("date_added", "0")),
            "date_updated": _moment(row.get("date_updated", "0")),
            "created_by": row.get("created_by", self.user_id),
        }
        for target in ent.fields.values():  # in field order, whatever order select_fields has
            if target.type == "action" or (wanted is not None and target.id not in wanted):
                continue
            out.update(self._shown_value(target, row))
        return out

    def _shown_system(self, kind: str, row: dict[str, str]) -> str:
        """A system field's column as select shows it by id (live #20: "208":"3",
        "209":"11/21/2026 10:34", "210":"" never updated, "211":"<full name>", "212":"")."""
        if kind == "id":
            return row["id"]
        if kind == "created_by":
            return self.full_name if row.get("created_by", self.user_id) == self.user_id else ""
        column = row.get(kind, "0")
        if kind in ("date_added", "date_updated"):
            return _moment(column) if _int(column) else ""
        return column if _int(column) else ""  # parent_item_id: "" at the top level

    def _shown_value(self, target: FakeField, row: dict[str, str]) -> dict[str, str]:
        fid = str(target.id)
        if not target.has_column:
            return {fid: self._shown_system(target.type, row)}
        stored = row.get(target.key, "")
        if target.type in CHOICE_TYPES:
            names = dict(target.choices)
            return {
                fid: names.get(_int(stored), "") if stored else "",
                f"{fid}_db_value": stored or "0",
            }
        if target.type == "input_numeric":
            number = _number(stored)
            return {fid: f"{number:.2f}" if number is not None else stored}
        if target.type in DATE_TYPES and stored.isdigit():
            moment = datetime.fromtimestamp(int(stored), SERVER_TZ)
            pattern = "%m/%d/%Y %H:%M" if target.type == "input_datetime" else "%m/%d/%Y"
            return {fid: moment.strftime(pattern)}
        return {fid: stored}


def _value_keeps(target: FakeField, condition: str, value: Any, stored: str) -> bool:
    if isinstance(value, str) and condition in ("search", "search_match"):
        return php.search_keeps(value, stored, match_all=condition == "search_match")  # (#17)
    if target.type in ("input_numeric", "input_numeric_comments"):
        return php.numeric_filter_keeps(str(value), stored)  # (#21)
    if target.type in CHOICE_TYPES:
        wanted = {str(_int(v)) for v in str(value).split(",")}
        return (stored in wanted) == (condition != "exclude")
    if target.type in DATE_TYPES:
        return True  # filter_by_days: not modelled, so nothing is filtered out
    # A text field has no reports_query: exact equality, and only for a string (#11, #16).
    return stored == value if isinstance(value, str) else True


def _moment(epoch: str) -> str:
    """format_date_time(): m/d/Y H:i in the server's zone; 0 is 01/01/1970 03:00."""
    return datetime.fromtimestamp(_int(epoch), SERVER_TZ).strftime("%m/%d/%Y %H:%M")


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


def _require(params: dict[str, Any], name: str) -> None:
    """api::_post(): a parameter that is missing or null is "<name> is required" (#53)."""
    if params.get(name) is None:
        raise _Died(php.error(f"{name} is required"))


def _php_text(value: Any) -> str | None:
    """A request value as PHP compares it with a string: scalars as text, arrays never equal."""
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, str | int | float):
        return str(value)
    return None


def parse_params(body: bytes, content_type: str) -> dict[str, Any]:
    """What PHP would see in $_POST (form) or the JSON fallback api/rest.php reads.

    json_decode() refuses a UTF-8 BOM (#56) and anything that is not UTF-8; a JSON value that
    is not an object leaves nothing readable by name."""
    if "x-www-form-urlencoded" in content_type:
        return _unflatten(parse_qs(body.decode(), keep_blank_values=True))
    decoded = json.loads(body.decode("utf-8") or "{}")  # str input: a BOM is an error
    return decoded if isinstance(decoded, dict) else {}


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
