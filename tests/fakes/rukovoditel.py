"""A stateful stand-in for Rukovoditel's api/rest.php.

`FakeRukovoditel.handle_body(body, content_type)` is the whole server: the unit tier plugs it into
`responses` (`install`), the e2e tier serves it over HTTP.

It keeps rows per entity and answers insert/select/update the way the live 3.6.2 server does
(ids as strings, bare numeric filter keys, `update_by_field` with `field_N` or `id`, unknown
filters dropped silently). `fail_next(...)` queues faults for the next matching calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import requests
import responses

Reply = tuple[int, dict[str, str], str]


def _success(data: Any, **extra: Any) -> Reply:
    return (
        200,
        {"Content-Type": "text/html; charset=UTF-8"},
        json.dumps({"status": "success", "data": data, **extra}, ensure_ascii=False),
    )


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

    # ---- request handling ---------------------------------------------------------------
    def _handle(self, request: requests.PreparedRequest) -> Reply:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        return self.handle_body(body, request.headers.get("Content-Type", ""))

    def handle_body(self, body: bytes, content_type: str) -> Reply:
        """One api/rest.php request (raw body + Content-Type) -> (status, headers, text)."""
        params = parse_params(body, content_type)
        self.calls.append(params)
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
        entity = int(params["entity_id"])
        table = self.rows.setdefault(entity, [])
        if action == "insert":
            items = params["items"]
            self.next_id += 1
            table.append({"id": str(self.next_id), **{k: str(v) for k, v in items.items()}})
            return _success({"id": str(self.next_id)})
        if action == "select":
            found = list(table)
            for key, value in (params.get("filters") or {}).items():
                if not str(key).isdigit() or not isinstance(value, str):
                    continue  # the real server silently drops such filters
                found = [r for r in found if r.get(f"field_{key}") == value]
            limit = int(params.get("limit") or 0)
            if limit:
                found = found[:limit]
            wanted = [f for f in str(params.get("select_fields", "")).split(",") if f]
            out = [{"id": r["id"], **{f: r.get(f"field_{f}", "") for f in wanted}} for r in found]
            return _success(out, page=1, number_of_rows=len(out), number_of_pages=1)
        if action == "update":
            ((key, value),) = params["update_by_field"].items()
            column = "id" if key == "id" else key
            hit = [r for r in table if r.get(column) == str(value)]
            for row in hit:
                row.update({k: str(v) for k, v in params["data"].items()})
            return _success({"id": ",".join(r["id"] for r in hit)})
        if action == "login":
            return _success({"id": "1", "username": params.get("username"), "group_id": 0})
        return (
            500,
            {},
            json.dumps(
                {
                    "status": "error",
                    "error_code": 500,
                    "error_message": f'action "{action}" not exist',
                }
            ),
        )


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
