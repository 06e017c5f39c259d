"""Which hosts may receive amoCRM secrets: the allow-list (reference amocrm.md §2.8).

Hosts reach us from places anyone can forge (an OAuth redirect's `referer`, a webhook body),
so every host is checked here before a token, a code or the client secret is sent to it.
Use `is_account_host` for "looks like an amoCRM account", `is_configured_account` for "is
the one account this deployment serves", `is_api_domain` for the `api-X.amocrm.ru` hosts that
appear in access-token claims, and `parse_referer` to turn a `referer` value into a host.
"""

from __future__ import annotations

import re

from prometei.config import KNOWN_BASE_DOMAINS, RESERVED_SUBDOMAINS, SUBDOMAIN_LABEL

_LABEL = SUBDOMAIN_LABEL
_DOMAINS = "|".join(re.escape(domain) for domain in KNOWN_BASE_DOMAINS)
_ACCOUNT_HOST_RE = re.compile(rf"^(?P<sub>{_LABEL})\.(?P<domain>{_DOMAINS})$")
# amoCRM's shared API hosts (`api-a.amocrm.ru`, `api-b.amocrm.ru`, ...). Staff advice: take
# the exact one from the token's `api_domain` claim, never hard-code the letter.
_API_DOMAIN_RE = re.compile(rf"^api-[a-z0-9]{{1,8}}\.(?:{_DOMAINS})$")
_RESERVED_LABELS = RESERVED_SUBDOMAINS


def normalize_host(value: str) -> str | None:
    """`value` as a bare lowercase host ("HTTPS://X.amocrm.ru/path" → "x.amocrm.ru").

    Returns None for anything with credentials, a port, whitespace or no host at all.
    """
    text = value.strip().lower()
    if not text or any(ch.isspace() for ch in text):
        return None
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme not in ("http", "https"):
            return None
    host = re.split(r"[/?#]", text, maxsplit=1)[0].rstrip(".")
    if not host or "@" in host or ":" in host:
        return None
    return host


def split_account_host(host: str) -> tuple[str, str] | None:
    """(subdomain, base domain) when `host` is an account host, else None."""
    match = _ACCOUNT_HOST_RE.match(host)
    if not match or match["sub"] in _RESERVED_LABELS or is_api_domain(host):
        return None
    return match["sub"], match["domain"]


def is_account_host(host: str) -> bool:
    """True for `<sub>.amocrm.ru`, `<sub>.amocrm.com` and `<sub>.kommo.com` (exact host)."""
    return split_account_host(host) is not None


def is_configured_account(host: str, subdomain: str, base_domain: str) -> bool:
    """True when `host` is exactly the configured account (AMOCRM_SUBDOMAIN + BASE_DOMAIN)."""
    return is_account_host(host) and host == f"{subdomain}.{base_domain}"


def is_api_domain(host: str) -> bool:
    """True for amoCRM's shared API hosts such as `api-b.amocrm.ru`."""
    return bool(_API_DOMAIN_RE.match(host))


def request_origin(host: str, api_base_url: str | None) -> str:
    """Where a request for the account `host` goes, after `host` passed the checks above.

    `api_base_url` is AMOCRM_API_BASE_URL (tests, self-hosted proxies): explicit operator
    configuration, validated in `prometei.config`, so it never comes from a request. Without
    it the answer is `https://<host>`.
    """
    return api_base_url or f"https://{host}"


def parse_referer(value: str | None) -> str | None:
    """The account host in an OAuth redirect's `referer` (with or without scheme), or None."""
    if not value:
        return None
    host = normalize_host(value)
    return host if host is not None and is_account_host(host) else None
