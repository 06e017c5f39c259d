"""Which language a page is written in: Russian by default, English on request.

`pick_language(request)` reads `?lang=ru|en` first (the switch in every page's footer), then
the browser's `Accept-Language` (the highest-weighted of ru/en; ties go to the one listed
first), and falls back to Russian: the company speaks Russian. `Texts(lang)` looks a phrase up
in a catalog of `{key: {"ru": ..., "en": ...}}` and fills in `str.format` fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import flask

Lang = Literal["ru", "en"]
LANGUAGES: tuple[Lang, ...] = ("ru", "en")
DEFAULT_LANG: Lang = "ru"
Catalog = Mapping[str, Mapping[Lang, str]]


def explicit_language(request: flask.Request) -> Lang | None:
    """The language named by `?lang=`, or None."""
    value = request.args.get("lang", "").strip().lower()
    return value if value in LANGUAGES else None


def pick_language(request: flask.Request) -> Lang:
    return explicit_language(request) or from_accept_language(
        request.headers.get("Accept-Language", "")
    )


def from_accept_language(header: str) -> Lang:
    """The best of ru/en for an Accept-Language value (`en-US,en;q=0.9,ru;q=0.8`)."""
    best: tuple[float, int, Lang] | None = None
    for position, item in enumerate(header.split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        weight = _weight(params)
        if weight <= 0:
            continue
        candidate = (weight, -position, primary)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best else DEFAULT_LANG


def _weight(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


class Texts:
    """Phrases of one catalog in one language: `texts("key", minutes=15)`."""

    def __init__(self, catalog: Catalog, lang: Lang) -> None:
        self.catalog = catalog
        self.lang = lang

    def __call__(self, key: str, **fields: object) -> str:
        text = self.catalog[key][self.lang]
        return text.format(**fields) if fields else text
