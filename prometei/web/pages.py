"""Small, self-contained HTML pages for the OAuth connect/callback endpoint.

Use `html_page(...)` to build any answer of `/api/oauth/callback`: it renders one fixed
template with Jinja autoescaping (every value is escaped, none is trusted) and sets the headers
every such page needs. The callback URL carries amoCRM's one-time code, so pages are never
cached (`Cache-Control: no-store`) and never leak their URL to a link target
(`Referrer-Policy: no-referrer`). No JavaScript, no outside assets: inline CSS only.

Pages are written in the visitor's language (`prometei.web.i18n`; `lang` on `<html>`), with a
Русский/English switch in the footer. The layout holds at 360 px: on narrow screens the facts
stack label above value; only values (hosts, URLs, ids) may break anywhere, prose breaks only
a word too long for the line. Colours meet WCAG AA (4.5:1) on their backgrounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import jinja2
from flask import Response

from prometei.web.i18n import DEFAULT_LANG, LANGUAGES, Lang

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
<html lang="{{ lang }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex">
<title>{{ title }} · prometei</title>
<style>
  body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
         background: #f4f6f9; margin: 0; padding: 1.5rem .75rem; }
  main { max-width: 40rem; margin: 0 auto; background: #fff; border-radius: 10px;
         padding: 1.75rem 2rem; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
  h1 { font-size: 1.4rem; margin: 0 0 .75rem; }
  h1, p { overflow-wrap: break-word; }
  .badge { display: inline-block; font-size: .8rem; font-weight: 600; padding: .1rem .6rem;
           border-radius: 999px; margin-bottom: .75rem; }
  .ok .badge { background: #dcf5e3; color: #146c2e; }
  .error .badge { background: #fde2e1; color: #a11d17; }
  .warn .badge { background: #fff1cc; color: #7a5300; }
  .info .badge { background: #e3ecfb; color: #1f4f9c; }
  dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: .3rem 1rem;
       margin: 1rem 0; }
  dt { color: #4d5566; }
  dd { margin: 0; overflow-wrap: anywhere; }
  a.button { display: inline-block; margin-top: 1rem; padding: .55rem 1.2rem; border-radius: 6px;
             background: #1a5fcc; color: #fff; text-decoration: none; font-weight: 600; }
  a.button:focus-visible, footer a:focus-visible { outline: 3px solid #1d2330;
                                                   outline-offset: 2px; }
  code { background: #f0f2f5; padding: 0 .25rem; border-radius: 3px; }
  footer { max-width: 40rem; margin: 1rem auto 0; color: #4d5566; font-size: .85rem;
           display: flex; flex-wrap: wrap; justify-content: space-between; gap: .5rem; }
  footer a { color: #1a56b8; }
  footer [aria-current] { font-weight: 600; color: #1d2330; text-decoration: none; }
  @media (max-width: 30rem) {
    main { padding: 1.25rem 1rem; }
    dl { grid-template-columns: minmax(0, 1fr); gap: 0; }
    dd { margin-bottom: .6rem; }
  }
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
<footer>
  <span>prometei · amoCRM → Rukovoditel · HTTP {{ status }}</span>
  {% if switch %}<nav aria-label="{{ switch_label }}">{% for link in switch %}{% if not loop.first
  %} · {% endif %}{% if link.current %}<span aria-current="page" lang="{{ link.lang }}">{{
  link.label }}</span>{% else %}<a href="{{ link.href }}" lang="{{ link.lang }}" hreflang="{{
  link.lang }}">{{ link.label }}</a>{% endif %}{% endfor %}</nav>{% endif %}
</footer>
</body>
</html>
"""

# Each language's name in itself, for the switch; and what the switch is called.
_LANGUAGE_NAMES: dict[Lang, str] = {"ru": "Русский", "en": "English"}
_SWITCH_LABEL: dict[Lang, str] = {"ru": "Язык", "en": "Language"}
_BADGES: dict[Lang, dict[Tone, str]] = {
    "ru": {"ok": "Подключено", "error": "Ошибка", "info": "Статус", "warn": "Внимание"},
    "en": {"ok": "Connected", "error": "Error", "info": "Status", "warn": "Note"},
}


@dataclass(frozen=True)
class _SwitchLink:
    lang: Lang
    label: str
    href: str
    current: bool


_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_template = _env.from_string(_TEMPLATE)


def _switch(lang: Lang, base: str | None) -> list[_SwitchLink]:
    if base is None:
        return []
    return [
        _SwitchLink(code, _LANGUAGE_NAMES[code], f"{base}?lang={code}", code == lang)
        for code in LANGUAGES
    ]


def render_html(
    *,
    title: str,
    status: int,
    tone: Tone,
    paragraphs: Sequence[str] = (),
    facts: Sequence[tuple[str, str]] = (),
    action: Link | None = None,
    badge: str | None = None,
    lang: Lang = DEFAULT_LANG,
    switch_base: str | None = None,
) -> str:
    """The page as text (escaped); `html_page` wraps it in a response. `switch_base` is the
    path the language links in the footer point to (never a URL with a code in it)."""
    return _template.render(
        title=title,
        status=status,
        tone=tone,
        badge=badge or _BADGES[lang][tone],
        paragraphs=list(paragraphs),
        facts=list(facts),
        action=action,
        lang=lang,
        switch=_switch(lang, switch_base),
        switch_label=_SWITCH_LABEL[lang],
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
    lang: Lang = DEFAULT_LANG,
    switch_base: str | None = None,
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
        lang=lang,
        switch_base=switch_base,
    )
    response = Response(body, status=status, mimetype="text/html")
    response.headers.update(PAGE_HEADERS)
    response.headers["Content-Language"] = lang
    response.headers["Vary"] = "Accept-Language"
    return response
