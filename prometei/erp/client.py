"""Rukovoditel REST client (`api/rest.php`): one POST per action, typed errors.

Every call POSTs `key`, `username`, `password`, `action` and the action's parameters to
CRM_API_URL and gets back `{"status": "success", "data": ...}`; `prometei.erp.answers` reads
every other shape Rukovoditel (or the web server in front of it) can answer with. The key and
password never appear in an exception, a log line or a step output.

Use this class for single actions (`login`, `insert`, `select`, `update`, `entity_fields`,
`field_choices`). Writing one record per lead, checked against the entity's fields, is
`prometei.erp.records.RecordWriter`'s job.

Request encoding (env ERP_REQUEST_FORMAT):
- `json` (default): a JSON body. Rukovoditel 3.6+ decodes `php://input` when `$_POST` is empty.
- `form`: PHP bracket form fields (`items[field_1039]=...`, `filters[1041]=...`,
  `update_by_field[id]=...`), which every version reads. Use it for servers older than 3.6:
  they ignore a JSON body and answer "key is required".
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import requests

from prometei.erp.answers import SERVICE, AnswerReader
from prometei.http import DEFAULT_TIMEOUT, make_session, send
from prometei.redaction import redact

if TYPE_CHECKING:
    from prometei.config import Settings

log = logging.getLogger(__name__)

RequestFormat = Literal["json", "form"]

_FILTER_KEY_RE = re.compile(r"^(\d+|id|parent_item_id|date_added|date_updated)$")
_UPDATE_KEY_RE = re.compile(r"^(id|field_\d+)$")


@dataclass(frozen=True)
class InsertResult:
    """`id` is Rukovoditel's string: "812", "812,813" for several items, or "" when every item
    was skipped because a unique field already holds its value (see `unique_fields_warning`)."""

    id: str
    unique_fields_warning: list[dict[str, str]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [part for part in self.id.split(",") if part]

    @property
    def skipped_as_duplicate(self) -> bool:
        return not self.ids and bool(self.unique_fields_warning)

    def warning_fields(self) -> str:
        return ", ".join(sorted({w.get("id", "?") for w in self.unique_fields_warning}))


class ERPClient:
    """A Rukovoditel REST API user. One `requests` session, explicit timeouts."""

    def __init__(
        self,
        url: str,
        key: str,
        username: str,
        password: str,
        *,
        request_format: RequestFormat = "json",
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        if request_format not in ("json", "form"):
            raise ValueError("request_format must be 'json' or 'form' (ERP_REQUEST_FORMAT)")
        self.url = url
        self.username = username
        self.request_format: RequestFormat = request_format
        self.timeout = timeout
        self._key = key
        self._password = password
        self._session = session or make_session()
        self.answers = AnswerReader(self._scrub)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, session: requests.Session | None = None
    ) -> ERPClient:
        settings.require_erp()
        assert settings.crm_api_url and settings.crm_api_key and settings.crm_api_password
        assert settings.crm_api_username
        return cls(
            settings.crm_api_url,
            settings.crm_api_key.get_secret_value(),
            settings.crm_api_username,
            settings.crm_api_password.get_secret_value(),
            request_format=settings.erp_request_format,
            session=session,
        )

    def __repr__(self) -> str:
        # Scheme and host only: user info, a path or a query could carry something private.
        parts = urlsplit(self.url)
        host = parts.hostname or "?"
        if ":" in host:  # IPv6
            host = f"[{host}]"
        origin = f"{parts.scheme}://{host}"
        return (
            f"ERPClient(url={origin!r}, username={self.username!r}, "
            f"request_format={self.request_format!r})"
        )

    # ---- actions ----------------------------------------------------------------------
    def login(self) -> dict[str, Any]:
        """Check the credentials; returns the API user (id, group_id, name...), no secrets."""
        user = self._dict_data("login", self._call("login"))
        return {
            key: value
            for key, value in user.items()
            if "password" not in key.lower() and value not in (self._key, self._password)
        }

    def insert(self, entity_id: int, items: dict[str, str]) -> InsertResult:
        data = self._dict_data("insert", self._call("insert", entity_id=entity_id, items=items))
        warnings = data.get("unique_fields_warning") or []
        if not isinstance(warnings, list):
            raise self.answers.protocol("insert", "unique_fields_warning is not a list")
        return InsertResult(
            id=self._id_string("insert", data),
            unique_fields_warning=[
                {str(k): str(v) for k, v in w.items()} for w in warnings if isinstance(w, dict)
            ],
        )

    def select(
        self,
        entity_id: int,
        *,
        filters: dict[str, str],
        select_fields: list[int],
        limit: int,
    ) -> list[dict[str, str]]:
        """Rows matching every filter. Keys are bare field ids ("1041"), values strings:
        Rukovoditel silently drops any other filter and returns unrelated rows."""
        for key, value in filters.items():
            if not _FILTER_KEY_RE.match(key):
                raise ValueError(f"filter key {key!r} must be a bare numeric field id like '1041'")
            if not isinstance(value, str):
                raise TypeError(f"filter value for {key} must be a string, not {value!r}")
        if limit <= 0:
            raise ValueError("limit must be positive")
        data = self._call(
            "select",
            entity_id=entity_id,
            filters=filters,
            # A comma-separated string: an array makes PHP 8 die with an empty 500.
            select_fields=",".join(str(int(f)) for f in select_fields),
            limit=limit,
        )
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise self.answers.protocol("select", "data is not a list of records")
        return [{str(k): "" if v is None else str(v) for k, v in row.items()} for row in data]

    def update(
        self, entity_id: int, *, by: dict[str, str | int], data: dict[str, str]
    ) -> list[str]:
        """Update the records matching `by` (`{"id": 812}` or `{"field_1041": "..."}`, unlike
        select's bare ids); returns the ids touched, [] when nothing matched.

        Rukovoditel drops `data` keys that are not fields of the entity without a word
        (rukovoditel-live.md T8): check them against the schema before calling this."""
        if len(by) != 1 or not _UPDATE_KEY_RE.match(next(iter(by))):
            raise ValueError("update `by` needs exactly one key: 'id' or 'field_<id>'")
        answer = self._dict_data(
            "update", self._call("update", entity_id=entity_id, update_by_field=by, data=data)
        )
        return [part for part in self._id_string("update", answer).split(",") if part]

    def entity_fields(self, entity_id: int) -> dict[str, Any]:
        """`get_entity_fields` (Extension 3.4+): field id -> {id, type, name, is_required,
        is_heading, configuration, ...}, system fields included. Any API user may call it."""
        return self._dict_data(
            "get_entity_fields", self._call("get_entity_fields", entity_id=entity_id)
        )

    def field_choices(self, entity_id: int, field_id: int) -> list[dict[str, Any]]:
        """`get_field_choices`: the choices of a dropdown/radio field as a flat tree (`id`,
        `name`, `parent_id`, `level`, `is_active`: inactive ones are listed too); [] for
        other field types. Administrators only:
        for other users Rukovoditel 3.6 answers an empty HTTP 500 (access_denied)."""
        data = self._call("get_field_choices", entity_id=entity_id, field_id=field_id)
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise self.answers.protocol("get_field_choices", "data is not a list of choices")
        return data

    # ---- transport --------------------------------------------------------------------
    def _call(self, action: str, **params: Any) -> Any:
        """POST one action; return the envelope's `data` or raise a typed error."""
        payload = {
            "key": self._key,
            "username": self.username,
            "password": self._password,
            "action": action,
            **params,
        }
        if self.request_format == "form":
            kwargs: dict[str, Any] = {"data": list(_php_form(payload))}
        else:
            kwargs = {
                "data": json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                "headers": {"Content-Type": "application/json; charset=utf-8"},
            }
        response = send(self._session, SERVICE, "POST", self.url, timeout=self.timeout, **kwargs)
        log.debug(
            "erp %s entity=%s: HTTP %s", action, params.get("entity_id"), response.status_code
        )
        return self.answers.decode(action, response)

    def _scrub(self, text: str) -> str:
        """Pattern redaction plus our own key and password by exact value (whatever length)."""
        return redact(text, extra=(self._key, self._password))

    def _dict_data(self, action: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.answers.protocol(action, "data is not an object")
        return data

    def _id_string(self, action: str, data: dict[str, Any]) -> str:
        value = data.get("id")
        # Ids are JSON strings; tolerate a number in case a build ever changes that.
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.answers.protocol(action, "data.id is missing")
        return str(value).replace(" ", "")


def _php_form(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Flatten to PHP bracket fields: {"items": {"field_1": "x"}} -> ("items[field_1]", "x")."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _php_form(item, f"{prefix}[{key}]" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _php_form(item, f"{prefix}[{index}]")
    elif isinstance(value, bool):
        yield prefix, "1" if value else "0"
    elif value is not None:
        yield prefix, str(value)
