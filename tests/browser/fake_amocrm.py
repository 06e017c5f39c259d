"""A loopback stand-in for amoCRM's side of the connect flow, for a real browser.

- `GET /oauth?client_id=&state=&mode=`: the consent page (what `https://www.amocrm.ru/oauth`
  shows), with "Разрешить" and "Отказать" links;
- `GET /oauth/allow?...`: issues a single-use code and redirects (302) to the integration's
  registered redirect URI with `code`, `state`, `referer` and `client_id`, as amoCRM does
  (reference amocrm.md §2.3); `/oauth/deny` redirects with `error=access_denied`;
- `POST /oauth2/access_token` (grant `authorization_code`, JSON): checks the integration's
  credentials and redirect URI, spends the code and answers a pair; a spent or unknown code
  gets amoCRM's 401 problem body. Every exchange is counted.

The redirect URI is only known once the app under test has its port: set `redirect_uri`.
"""

from __future__ import annotations

import html
import itertools
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

CLIENT_ID = "browser-client-id"
CLIENT_SECRET = "browser-client-secret-SECRET-0000"
ACCOUNT_HOST = "example.amocrm.ru"
PROBLEM_TYPE = "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"

_CONSENT = """<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><title>amoCRM: доступ</title></head>
<body><main><h1>Предоставить доступ</h1>
<p>Интеграция {client_id} запрашивает доступ к аккаунту {host}.</p>
<p><a id="allow" href="/oauth/allow?{query}">Разрешить</a>
<a id="deny" href="/oauth/deny?{query}">Отказать</a></p></main></body></html>
"""


@dataclass
class FakeAmoCRM:
    redirect_uri: str = ""
    url: str = ""  # as the browser reaches it
    loopback_url: str = ""  # as the app process reaches it
    live_codes: set[str] = field(default_factory=set)
    exchanges: list[dict[str, Any]] = field(default_factory=list)  # every token request
    issued: list[str] = field(default_factory=list)  # every token value handed out
    redirects: list[str] = field(default_factory=list)  # every Location sent to the browser
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def successful_exchanges(self) -> int:
        return sum(1 for e in self.exchanges if e.get("answered") == 200)

    def issue_code(self, state: str) -> str:
        """A fresh code and the redirect URL amoCRM would send the browser to."""
        code = f"def50200code{next(self._counter)}-SECRET-{secrets.token_hex(4)}"
        with self._lock:
            self.live_codes.add(code)
        query = urlencode(
            {"code": code, "state": state, "referer": ACCOUNT_HOST, "client_id": CLIENT_ID}
        )
        return f"{self.redirect_uri}?{query}"

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self._handle(Request(environ))(environ, start_response)

    def _handle(self, request: Request) -> Response:
        args = request.args
        if request.path == "/oauth" and request.method == "GET":
            query = urlencode(
                {"client_id": args.get("client_id", ""), "state": args.get("state", "")}
            )
            body = _CONSENT.format(
                client_id=html.escape(args.get("client_id", "")),
                host=ACCOUNT_HOST,
                query=html.escape(query),
            )
            return Response(body, content_type="text/html; charset=utf-8")
        if request.path == "/oauth/allow":
            return self._redirect(self.issue_code(args.get("state", "")))
        if request.path == "/oauth/deny":
            query = urlencode({"error": "access_denied", "state": args.get("state", "")})
            return self._redirect(f"{self.redirect_uri}?{query}")
        if request.path == "/oauth2/access_token" and request.method == "POST":
            return self._token(request)
        return _json({"title": "Not found"}, 404)

    def _redirect(self, location: str) -> Response:
        with self._lock:
            self.redirects.append(location)
        return Response(status=302, headers={"Location": location})

    def _token(self, request: Request) -> Response:
        body = json.loads(request.get_data() or b"{}")
        record: dict[str, Any] = {"grant_type": body.get("grant_type"), "code": body.get("code")}
        with self._lock:
            self.exchanges.append(record)
            if body.get("client_id") != CLIENT_ID or body.get("client_secret") != CLIENT_SECRET:
                record["answered"] = 401
                return _json({"title": "Некорректный клиент", "status": 401}, 401)
            code = body.get("code")
            if (
                body.get("grant_type") != "authorization_code"
                or body.get("redirect_uri") != self.redirect_uri
                or code not in self.live_codes
            ):
                record["answered"] = 401
                return _json(
                    {
                        "title": "Некорректный запрос",
                        "type": PROBLEM_TYPE,
                        "status": 401,
                        "hint": "Authorization code has been revoked",
                    },
                    401,
                )
            self.live_codes.discard(code)  # single use
            n = next(self._counter)
            access, refresh = f"access-{n}-SECRET", f"refresh-{n}-SECRET"
            self.issued += [access, refresh]
            record["answered"] = 200
        return _json(
            {
                "token_type": "Bearer",
                "expires_in": 86400,
                "access_token": access,
                "refresh_token": refresh,
            },
            200,
        )


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
