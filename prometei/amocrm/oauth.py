"""amoCRM OAuth 2.0: the authorize URL, the token endpoint, moved-account discovery, `state`.

Use `OAuthClient` for every request that carries the client secret, a code or a refresh
token; `prometei.tokens` decides *when* to refresh, this module only knows *how*.

Rules it enforces (reference amocrm.md §2):
- the token endpoint is `POST https://{account host}/oauth2/access_token` with a JSON body, and
  the host must pass the allow-list in `prometei.amocrm.domains` before anything is sent;
- redirects are never followed and token requests are never retried here: a refresh token is
  single-use, so a blind retry of a refresh that did reach amoCRM burns the pair;
- "Token has been revoked" (a spent refresh token) is `RefreshTokenRevoked`, so the caller can
  re-read its store before giving up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import requests
from pydantic import SecretStr

from prometei.amocrm.domains import (
    is_account_host,
    is_api_domain,
    normalize_host,
    request_origin,
    split_account_host,
)
from prometei.config import KNOWN_BASE_DOMAINS, Settings
from prometei.errors import (
    InputError,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
    excerpt,
)
from prometei.http import make_session, retry_after_seconds, send
from prometei.redaction import redact
from prometei.store.base import TokenRecord

log = logging.getLogger(__name__)

SERVICE = "amocrm-oauth"
# Every token-endpoint call runs under the refresh lock (a refresh, the moved-account lookup, the
# callback's code exchange), so it is kept short enough for the lease (docs/token-rotation.md).
TOKEN_TIMEOUT: tuple[float, float] = (3.0, 10.0)
_STATE_CONTEXT = b"prometei-oauth-state"
_CLIENT_VARS = "AMOCRM_CLIENT_ID / AMOCRM_CLIENT_SECRET"
RECONNECT_HINT = "reconnect via /api/oauth/callback"


class RefreshTokenRevoked(UpstreamAuthError):
    """amoCRM answered 401 "Token has been revoked": this refresh token was already used
    (by another instance, or by an earlier attempt whose answer was lost) or access was
    revoked. Re-read the store once before asking a person to reconnect."""


class AccountMaybeMoved(UpstreamAuthError):
    """The token endpoint answered 404 or a redirect: the account may live at another host
    now (reference §2.7). Ask `discover_moved_host` before giving up."""


# ---- signed `state` -------------------------------------------------------------------------
def derive_state_key(client_secret: str | SecretStr) -> bytes:
    """The HMAC key for `state`, derived from AMOCRM_CLIENT_SECRET (never the secret itself)."""
    secret = (
        client_secret.get_secret_value() if isinstance(client_secret, SecretStr) else client_secret
    )
    return hmac.new(secret.encode(), _STATE_CONTEXT, hashlib.sha256).digest()


def _state_mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_state(key: bytes, now: int) -> str:
    """A fresh `state` for the authorize URL: `<timestamp>.<nonce>.<HMAC-SHA256>`."""
    payload = f"{int(now)}.{secrets.token_urlsafe(12)}"
    return f"{payload}.{_state_mac(key, payload)}"


def verify_state(state: str, key: bytes, now: int, max_age_s: int = 900) -> str:
    """The state's nonce; InputError unless `state` was signed with `key` within the last
    `max_age_s`. The signature proves we issued it; that it is used once, by the browser it
    was issued to, is `prometei.web.connect_state`'s job.

    `state` comes from the query string, so it can hold anything: only ASCII states of our
    own shape get as far as the (constant-time, byte-wise) signature check."""
    # sign_state only ever issues ASCII; `str.isdigit` alone would pass a superscript digit.
    parts = state.split(".") if isinstance(state, str) and state.isascii() else []
    if len(parts) != 3 or not parts[0].isdigit():
        raise InputError("the OAuth state is malformed; open the connect page and start again")
    timestamp, nonce, mac = parts
    expected = _state_mac(key, f"{timestamp}.{nonce}").encode("ascii")
    if not hmac.compare_digest(expected, mac.encode("utf-8")):
        raise InputError("the OAuth state signature does not match; start again from the page")
    age = now - int(timestamp)
    if age > max_age_s or age < -60:  # a minute of clock skew, no more
        raise InputError(
            "the OAuth state has expired; open /api/oauth/callback and click Connect again"
        )
    return nonce


# ---- the client ---------------------------------------------------------------------------
class OAuthClient:
    """Talks to amoCRM's OAuth endpoints for one integration (client id/secret/redirect URI)."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: SecretStr,
        redirect_uri: str,
        base_domain: str = "amocrm.ru",
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        timeout: tuple[float, float] = TOKEN_TIMEOUT,
        api_base_url: str | None = None,
    ) -> None:
        if base_domain not in KNOWN_BASE_DOMAINS:
            raise ValueError(f"unknown amoCRM base domain {base_domain!r}")
        self.client_id = client_id
        self._client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.base_domain = base_domain
        self._session = session or make_session()
        self._clock = clock
        self._timeout = timeout
        # AMOCRM_API_BASE_URL (tests, self-hosted proxies); hosts are still checked first.
        self._api_base_url = api_base_url

    def __repr__(self) -> str:
        return f"OAuthClient(client_id={self.client_id!r}, base_domain={self.base_domain!r})"

    @classmethod
    def from_settings(
        cls, settings: Settings, session: requests.Session | None = None
    ) -> OAuthClient:
        """Build from AMOCRM_CLIENT_ID/SECRET/REDIRECT_URI (ConfigError naming any missing)."""
        settings.require_oauth()
        assert settings.amocrm_client_id is not None
        assert settings.amocrm_client_secret is not None
        assert settings.amocrm_redirect_uri is not None
        return cls(
            client_id=settings.amocrm_client_id,
            client_secret=settings.amocrm_client_secret,
            redirect_uri=settings.amocrm_redirect_uri,
            base_domain=settings.amocrm_base_domain,
            session=session,
            api_base_url=settings.amocrm_api_base_url,
        )

    @property
    def state_key(self) -> bytes:
        return derive_state_key(self._client_secret)

    def authorize_url(self, state: str) -> str:
        """amoCRM's consent page. Kommo integrations must use www.kommo.com (an amocrm.ru
        authorize page just bounces a Kommo client_id to the home page)."""
        query = urlencode({"client_id": self.client_id, "state": state, "mode": "post_message"})
        return f"https://www.{self.base_domain}/oauth?{query}"

    def exchange_code(self, code: str, host: str) -> TokenRecord:
        """Trade an authorization code (20 min, single use) for the first pair at `host`."""
        if not code or not code.strip():
            raise InputError("the OAuth redirect carried no code; click Connect again")
        return self._token_request(host, "authorization_code", {"code": code.strip()})

    def refresh(self, refresh_token: str | SecretStr, host: str) -> TokenRecord:
        """Rotate the pair at `host`. The old refresh token is dead afterwards, whatever happens
        to the answer: persist the returned record before using it."""
        value = (
            refresh_token.get_secret_value()
            if isinstance(refresh_token, SecretStr)
            else refresh_token
        )
        return self._token_request(host, "refresh_token", {"refresh_token": value})

    def discover_moved_host(
        self, access_token_jwt: str | SecretStr, refresh_token: str | SecretStr
    ) -> str | None:
        """Where the account lives now (reference §2.7), or None when that cannot be learned.

        Reads `api_domain` from the access token's claims (no signature check is needed: the
        token came from our own store and the host is validated), asks
        `GET https://{api_domain}/oauth2/account/current/subdomain` with `X-Refresh-Token`,
        and returns the answer's host only if it passes the account allow-list.
        """
        jwt = (
            access_token_jwt.get_secret_value()
            if isinstance(access_token_jwt, SecretStr)
            else access_token_jwt
        )
        refresh = (
            refresh_token.get_secret_value()
            if isinstance(refresh_token, SecretStr)
            else refresh_token
        )
        if self._api_base_url:
            # Every request goes to AMOCRM_API_BASE_URL: there is no other host to ask.
            log.warning("amoCRM moved-account check skipped: AMOCRM_API_BASE_URL is set")
            return None
        api_domain = _jwt_claim(jwt, "api_domain")
        if not isinstance(api_domain, str) or not is_api_domain(api_domain.lower()):
            log.warning("amoCRM moved-account check skipped: no valid api_domain in the token")
            return None
        response = send(
            self._session,
            SERVICE,
            "GET",
            f"https://{api_domain.lower()}/oauth2/account/current/subdomain",
            timeout=self._timeout,
            headers={"X-Refresh-Token": refresh, "Accept": "application/json"},
        )
        if response.status_code == 429 or response.status_code >= 500:
            raise UpstreamUnavailable(
                SERVICE,
                f"account lookup at {api_domain.lower()} failed with HTTP {response.status_code} "
                "(amoCRM trouble); if it persists, check amoCRM's status",
                status=response.status_code,
            )
        if response.status_code != 200:
            log.warning("amoCRM moved-account check answered HTTP %s", response.status_code)
            return None
        try:
            data = response.json()
        except ValueError:
            return None
        return _host_from_account_answer(data)

    # ---- token endpoint -------------------------------------------------------------------
    def _token_request(self, host: str, grant: str, fields: dict[str, str]) -> TokenRecord:
        clean = normalize_host(host) if isinstance(host, str) else None
        if clean is None or not is_account_host(clean) or clean != host:
            # Never send the client secret, a code or a refresh token to an unchecked host.
            raise InputError(
                f"refusing to send OAuth credentials to {excerpt(str(host), 80)!r}: not an "
                "amoCRM account host (<subdomain>.amocrm.ru, .amocrm.com or .kommo.com)"
            )
        body = {
            "client_id": self.client_id,
            "client_secret": self._client_secret.get_secret_value(),
            "grant_type": grant,
            **fields,
            # Must equal the URI registered in the integration, byte for byte.
            "redirect_uri": self.redirect_uri,
        }
        now = int(self._clock())
        response = send(
            self._session,
            SERVICE,
            "POST",
            request_origin(host, self._api_base_url) + "/oauth2/access_token",
            timeout=self._timeout,
            json=body,
            headers={"Accept": "application/json"},
        )
        if response.status_code != 200:
            raise self._token_error(response, host, grant)
        return self._parse_token_answer(response, host, grant, now)

    def _parse_token_answer(
        self, response: requests.Response, host: str, grant: str, now: int
    ) -> TokenRecord:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(SERVICE, "token endpoint answered 200 without JSON")
        access = data.get("access_token")
        refresh = data.get("refresh_token")
        expires_in = data.get("expires_in")
        if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh:
            raise UpstreamProtocolError(SERVICE, "token answer lacks access_token/refresh_token")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
            raise UpstreamProtocolError(SERVICE, "token answer lacks a positive expires_in")
        return TokenRecord(
            access_token=SecretStr(access),
            refresh_token=SecretStr(refresh),
            expires_at=now + expires_in,
            obtained_at=now,
            refreshed_at=now if grant == "refresh_token" else None,
            host=host,
        )

    def _token_error(  # noqa: PLR0911 - one branch per documented amoCRM answer
        self, response: requests.Response, host: str, grant: str
    ) -> Exception:
        status = response.status_code
        problem = _problem(response)
        summary = redact(
            excerpt(" ".join(p for p in (problem.get("title"), problem.get("detail")) if p), 200)
        )
        hint = problem.get("hint", "")
        body = redact(excerpt(response.text))
        what = "refresh" if grant == "refresh_token" else "code exchange"
        kw: dict[str, Any] = {"status": status, "body_excerpt": body}

        if 300 <= status < 400 or status == 404:
            return AccountMaybeMoved(
                SERVICE,
                f"{what} at {host} answered HTTP {status}: the account may have moved to "
                "another domain",
                **kw,
            )
        if status == 429 or status >= 500:
            return UpstreamUnavailable(
                SERVICE,
                f"{what} failed with HTTP {status}; try again later",
                retry_after_seconds=retry_after_seconds(response),
                **kw,
            )
        if status == 403:
            return UpstreamAuthError(
                SERVICE,
                f"{what} refused with HTTP 403 by {host}: the account or this server's IP is "
                "blocked by amoCRM; contact amoCRM support with the IP and the subdomain",
                **kw,
            )
        if status == 402:
            return UpstreamAuthError(
                SERVICE, f"{what} refused with HTTP 402: the amoCRM account is not paid", **kw
            )
        if "revoked" in hint.lower():
            if grant == "refresh_token":
                return RefreshTokenRevoked(
                    SERVICE,
                    "the refresh token was refused as revoked (already used, or access was "
                    "revoked in amoCRM)",
                    **kw,
                )
            return UpstreamRejected(
                SERVICE,
                "the authorization code was refused (codes are single-use and live 20 "
                "minutes); click Connect amoCRM again",
                **kw,
            )
        if _is_client_problem(problem):
            return UpstreamAuthError(
                SERVICE,
                f"amoCRM refused the integration credentials ({summary}); check {_CLIENT_VARS} "
                "against the integration's keys in amoCRM",
                **kw,
            )
        if status in (400, 401):
            advice = (
                "AMOCRM_REDIRECT_URI must equal the integration's redirect URI exactly; codes "
                "are single-use and live 20 minutes"
                if grant == "authorization_code"
                else f"check AMOCRM_REDIRECT_URI; if it persists, {RECONNECT_HINT}"
            )
            error_cls = UpstreamRejected if grant == "authorization_code" else UpstreamAuthError
            return error_cls(SERVICE, f"{what} refused ({summary or status}); {advice}", **kw)
        return UpstreamProtocolError(SERVICE, f"{what}: unexpected HTTP {status}", **kw)


def _problem(response: requests.Response) -> dict[str, str]:
    """The `application/problem+json` fields amoCRM sends with token errors."""
    try:
        data = response.json()
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: str(data[k]) for k in ("title", "detail", "hint", "type") if data.get(k)}


def _is_client_problem(problem: dict[str, str]) -> bool:
    # "Некорректный клиент" / "Авторизация клиента не прошла" (wrong client_id or secret).
    text = " ".join(problem.values()).lower()
    return "клиент" in text or "invalid_client" in text or "client authentication" in text


def jwt_claim(token: str, claim: str) -> Any:
    """One claim of a JWT's payload, without verifying it; None when the token is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    segment = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(segment))
    except (ValueError, binascii.Error):
        return None
    return claims.get(claim) if isinstance(claims, dict) else None


_jwt_claim = jwt_claim  # the old name


def _host_from_account_answer(data: Any) -> str | None:
    """`{"id", "subdomain", "domain", "top_level_domain"}` → a validated account host."""
    if not isinstance(data, dict):
        return None
    domain = data.get("domain")
    if isinstance(domain, str):
        host = normalize_host(domain)
        if host and is_account_host(host):
            return host
        subdomain = data.get("subdomain")
        if host in KNOWN_BASE_DOMAINS and isinstance(subdomain, str):
            candidate = f"{subdomain.lower()}.{host}"
            if split_account_host(candidate):
                return candidate
    return None
