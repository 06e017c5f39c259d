"""What PHP 8.2 and MariaDB put into a Rukovoditel 3.6.2 answer, for `tests.fakes.rukovoditel`.

Two jobs the model leaves here: the *shapes* of the answers (the JSON envelopes, the
`<app_db_error>` fragment `db_query()` prints, the pages PHP prints with `display_errors=On`),
and the *value rules* MySQL and PHP apply to a filter (numeric comparisons, keyword search),
both as reference/rukovoditel-live.md recorded them and the 3.6.2 source explains them.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

Reply = tuple[int, dict[str, str], str]
HTML = {"Content-Type": "text/html; charset=UTF-8"}
# Where the capture's PHP files live; only the shape of these paths matters.
API_PHP = "/var/www/crm/plugins/ext/classes/api/api.php"
EMPTY_500: Reply = (500, dict(HTML), "")  # a string error code crashed http_response_code()


def success(data: Any, **extra: Any) -> Reply:
    body = {"status": "success", "data": data, **extra}
    # Cyrillic unescaped, "/" escaped, like app_json_encode (live: "11\/21\/2026 10:34").
    return (
        200,
        dict(HTML),
        json.dumps(body, ensure_ascii=False, separators=(",", ":")).replace("/", "\\/"),
    )


def error(message: str) -> Reply:
    # 3.6: an error without a code is HTTP 500 with the JSON envelope, error_code a number.
    body = {"status": "error", "error_code": 500, "error_message": message}
    return 500, dict(HTML), json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def db_error(code: int, message: str, query: str) -> Reply:
    """db_query()'s fragment (includes/functions/database.php): HTTP 200, no JSON after it."""
    body = (
        "\n            <app_db_error>\n"
        '            <div style="color: #b94a48; background: #f2dede; border: 1px solid #eed3d7;'
        ' padding: 5px; margin: 5px; font-family: verdana; font-size: 12px; line-height: 1.5;">\n'
        f"              <div><strong>Database Error:</strong> {code} - "
        f"{html.escape(message)}</div>\n"
        f"              <div><strong>Query:</strong> {html.escape(query)}</div>\n"
        "              <div><strong>Page: </strong> /api/rest.php</div>\n"
        "            </div>\n        "
    )
    return 200, dict(HTML), body


def fatal_type_error(message: str, line: int, *, display_errors: bool) -> Reply:
    """An uncaught TypeError (#24, #39-#45). With display_errors off PHP answers 500 with an
    empty body; with it on, 200 and the error as HTML text (D1). The capture elides the
    middle of that text; PHP's standard wording fills it here."""
    if not display_errors:
        return EMPTY_500
    body = (
        f"<br />\n<b>Fatal error</b>:  Uncaught TypeError: {message} in {API_PHP}:{line}\n"
        f"Stack trace:\n#0 {API_PHP}({line})\n#1 {{main}}\n"
        f"  thrown in <b>{API_PHP}</b> on line <b>{line}</b><br />\n"
    )
    return 200, dict(HTML), body


def string_code_error(code: str, *, display_errors: bool) -> Reply:
    """response_error($text, 'login_fail') and friends: http_response_code() gets a string."""
    del code  # PHP dies before the code reaches the answer
    message = "http_response_code(): Argument #1 ($response_code) must be of type int, string given"
    return fatal_type_error(message, 1718, display_errors=display_errors)


def warning(message: str, path: str, line: int) -> str:
    return f"<br />\n<b>Warning</b>:  {message} in <b>{path}</b> on line <b>{line}</b><br />\n"


def deprecations() -> str:
    """D3: four compile-time notices from the Extension's convertapi client (lines 47, 75,
    192 per the capture; which line repeats is not recorded, 192 is assumed)."""
    path = "/var/www/crm/plugins/ext/classes/convertapi/Client.php"
    text = "Using ${var} in strings is deprecated, use {$var} instead"
    return "".join(
        f"<br />\n<b>Deprecated</b>:  {text} in <b>{path}</b> on line <b>{line}</b><br />\n"
        for line in (47, 75, 192, 192)
    )


# ---- value rules ------------------------------------------------------------------------
_LEADING_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NUMERIC_TERM = re.compile(r"!=|>=|<=|>|<")


def sql_number(text: str) -> float:
    """How MySQL (and PHP's (float) cast) reads a string as a number: its leading number,
    0 when there is none ("abc", "" -> 0; "12abc" -> 12)."""
    found = _LEADING_NUMBER.match(text)
    return float(found.group(0)) if found else 0.0


def numeric_filter_keeps(filter_value: str, stored: str) -> bool:
    """reports::prepare_numeric_sql_filters: terms split on & and |, each an optional
    operator (!=, >=, <=, >, <; else =) and a number; a term takes the delimiter that
    follows it when it is the first. AND terms must all hold, and one OR term if any."""
    parts = re.split(r"([&|])", filter_value)
    if parts[0]:
        parts = ["", parts[1] if len(parts) > 1 and parts[1] == "|" else "&", *parts]
    ands, ors = [], []
    for joiner, term in zip(parts[1::2], parts[2::2], strict=False):
        found = _NUMERIC_TERM.search(term)
        operator = found.group(0) if found else "="
        number = sql_number(term.replace(operator, "") if found else term)
        (ors if joiner == "|" else ands).append(_compare(sql_number(stored), operator, number))
    return all(ands) and (any(ors) if ors else True)


def _compare(left: float, operator: str, right: float) -> bool:
    return {
        "=": left == right,
        "!=": left != right,
        ">": left > right,
        "<": left < right,
        ">=": left >= right,
        "<=": left <= right,
    }[operator]


def search_keeps(filter_value: str, stored: str, *, match_all: bool) -> bool:
    """reports::add_search_qeury for a text column: every keyword is `like '%kw%'` (a
    leading "=" asks for equality); keywords join with AND unless an "or" stands between
    them (search_match forces AND). LIKE under the app's utf8mb4 collation ignores case.
    Live verified only a plain substring (#17); the keyword rules are from the source."""
    groups: list[list[bool]] = [[]]  # OR of groups, each an AND of keywords
    for word in filter_value.split():
        if word.lower() == "or" and not match_all:
            groups.append([])
        elif word.lower() not in ("and", "or"):
            hit = stored == word[1:] if word.startswith("=") else word.lower() in stored.lower()
            groups[-1].append(hit)
    return any(all(group) for group in groups if group) or not any(groups)
