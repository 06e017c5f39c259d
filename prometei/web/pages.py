"""Small, self-contained HTML pages for the OAuth connect/callback endpoint.

Use `html_page(...)` to build any answer of `/api/oauth/callback`: it renders one fixed
template with Jinja autoescaping (every value is escaped, none is trusted) and sets the headers
every such page needs. The callback URL carries amoCRM's one-time code, so pages are never
cached (`Cache-Control: no-store`) and never leak their URL to a link target
(`Referrer-Policy: no-referrer`). No JavaScript, no outside assets: inline CSS only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import jinja2
from flask import Response

Tone = Literal["ok", "error", "info", "warn"]

# Headers on every page this module builds.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
}


@dataclass(frozen=True)
class Link:
    """A button on the page: `href` must be safe to show (no code, token or secret)."""

    label: str
    href: str


_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex">
<title>{{ title }} · prometei</title>
<style>
  body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
         background: #f4f6f9; margin: 0; padding: 2rem 1rem; }
  main { max-width: 40rem; margin: 0 auto; background: #fff; border-radius: 10px;
         padding: 1.75rem 2rem; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
  h1 { font-size: 1.4rem; margin: 0 0 .75rem; }
  .badge { display: inline-block; font-size: .8rem; font-weight: 600; padding: .1rem .6rem;
           border-radius: 999px; margin-bottom: .75rem; }
  .ok .badge { background: #dcf5e3; color: #146c2e; }
  .error .badge { background: #fde2e1; color: #a11d17; }
  .warn .badge { background: #fff1cc; color: #7a5300; }
  .info .badge { background: #e3ecfb; color: #1f4f9c; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; margin: 1rem 0; }
  dt { color: #5b6475; }
  dd { margin: 0; overflow-wrap: anywhere; }
  a.button { display: inline-block; margin-top: 1rem; padding: .55rem 1.2rem; border-radius: 6px;
             background: #1f6feb; color: #fff; text-decoration: none; font-weight: 600; }
  code { background: #f0f2f5; padding: 0 .25rem; border-radius: 3px; }
  footer { max-width: 40rem; margin: 1rem auto 0; color: #7a8294; font-size: .8rem; }
</style>
</head>
<body>
<main class="{{ tone }}">
  <span class="badge">{{ badge }}</span>
  <h1>{{ title }}</h1>
  {% for paragraph in paragraphs %}<p>{{ paragraph }}</p>
  {% endfor %}
  {% if facts %}<dl>
  {% for name, value in facts %}<dt>{{ name }}</dt><dd>{{ value }}</dd>
  {% endfor %}</dl>{% endif %}
  {% if action %}<a class="button" href="{{ action.href }}" rel="noreferrer noopener">{{
    action.label }}</a>{% endif %}
</main>
<footer>prometei · amoCRM → Rukovoditel · HTTP {{ status }}</footer>
</body>
</html>
"""

_BADGES: dict[Tone, str] = {"ok": "Connected", "error": "Error", "info": "Status", "warn": "Note"}

_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_template = _env.from_string(_TEMPLATE)


def render_html(
    *,
    title: str,
    status: int,
    tone: Tone,
    paragraphs: Sequence[str] = (),
    facts: Sequence[tuple[str, str]] = (),
    action: Link | None = None,
    badge: str | None = None,
) -> str:
    """The page as text (escaped); `html_page` wraps it in a response."""
    return _template.render(
        title=title,
        status=status,
        tone=tone,
        badge=badge or _BADGES[tone],
        paragraphs=list(paragraphs),
        facts=list(facts),
        action=action,
    )


def html_page(
    *,
    title: str,
    status: int,
    tone: Tone,
    paragraphs: Sequence[str] = (),
    facts: Sequence[tuple[str, str]] = (),
    action: Link | None = None,
    badge: str | None = None,
) -> Response:
    """A complete HTML response with the no-store / no-referrer headers set."""
    body = render_html(
        title=title,
        status=status,
        tone=tone,
        paragraphs=paragraphs,
        facts=facts,
        action=action,
        badge=badge,
    )
    response = Response(body, status=status, mimetype="text/html")
    response.headers.update(PAGE_HEADERS)
    return response
