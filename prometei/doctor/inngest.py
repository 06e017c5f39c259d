"""The Inngest rows: event and signing keys present (cloud mode) and of the right form, where
syncs register /api/inngest, and in dev mode whether the dev server answers."""

from __future__ import annotations

import re

from prometei.config import Settings, dev_server_command
from prometei.doctor.check import Check, fail, ok
from prometei.errors import PrometeiError

SIGNING_KEY_RE = re.compile(r"^signkey-(?P<env>[a-z]+)-(?P<hex>[0-9a-f]+)$")
EVENT_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{16,}$")


def check_dev_server(settings: Settings) -> Check:
    """Dev mode: does an Inngest dev server answer where INNGEST_DEV points?"""
    from prometei.http import make_session, send

    name = "inngest dev server"
    origin = settings.event_api_origin
    fix = (
        f"start it: {dev_server_command()} (with `make serve` on port 3000), or point "
        "INNGEST_DEV at the dev server's URL"
    )
    try:
        response = send(make_session(), "inngest", "GET", origin + "dev", timeout=(2.0, 5.0))
    except PrometeiError as exc:
        return fail(name, f"no dev server at {origin}: {exc.message}", fix)
    if response.status_code != 200:
        return fail(
            name,
            f"{origin}dev answered {response.status_code}: something else listens there, "
            "not an Inngest dev server",
            fix,
        )
    return ok(name, f"the dev server answers at {origin}")


def _signing_key_problem(value: str) -> str | None:
    match = SIGNING_KEY_RE.match(value)
    if match is None:
        return "does not look like signkey-<env>-<hex>"
    digits = match.group("hex")
    if len(digits) < 32 or len(digits) % 2:
        return f"has {len(digits)} hex digits after signkey-{match.group('env')}-; expected 64"
    return None


def _event_key_problem(value: str) -> str | None:
    if value.startswith("signkey-"):
        return "is a signing key, not an event key"
    if not EVENT_KEY_RE.match(value):
        return "must be 16 or more letters, digits, '-' or '_' (no spaces or quotes)"
    return None


def check_inngest(settings: Settings) -> Check:
    """Keys present in cloud mode and shaped like Inngest's; dev mode needs none."""
    name = "inngest"
    signing = settings.inngest_signing_key
    fallback = settings.inngest_signing_key_fallback
    event = settings.inngest_event_key
    problems: list[tuple[str, str]] = []
    if signing is None:
        if not settings.is_dev:
            problems.append(
                (
                    "INNGEST_SIGNING_KEY is not set (cloud mode needs it)",
                    "copy the signing key from the Inngest dashboard (Manage -> Signing Key) "
                    "into INNGEST_SIGNING_KEY, or set INNGEST_DEV=1 for local runs",
                )
            )
    elif problem := _signing_key_problem(signing.get_secret_value()):
        problems.append(
            (
                f"INNGEST_SIGNING_KEY {problem}",
                "copy the signing key again from the Inngest dashboard (Manage -> Signing Key)",
            )
        )
    if fallback is not None:
        problem = _signing_key_problem(fallback.get_secret_value())
        if problem is None and signing is not None and fallback == signing:
            problem = "equals INNGEST_SIGNING_KEY"
        if problem:
            problems.append(
                (
                    f"INNGEST_SIGNING_KEY_FALLBACK {problem}",
                    "set INNGEST_SIGNING_KEY_FALLBACK to the previous signing key, or remove it",
                )
            )
    if event is None:
        if not settings.is_dev:
            problems.append(
                (
                    "INNGEST_EVENT_KEY is not set (cloud mode needs it to send events)",
                    "create an event key in the Inngest dashboard (Manage -> Event Keys) and "
                    "set INNGEST_EVENT_KEY",
                )
            )
    elif problem := _event_key_problem(event.get_secret_value()):
        problems.append(
            (
                f"INNGEST_EVENT_KEY {problem}",
                "copy the event key again from the Inngest dashboard (Manage -> Event Keys)",
            )
        )
    if problems:
        return fail(name, "; ".join(p for p, _ in problems), problems[0][1])
    if settings.is_dev:
        return ok(
            name,
            f"dev mode: events go to {settings.event_api_origin}; keys are not needed",
        )
    assert signing is not None and event is not None
    env = SIGNING_KEY_RE.match(signing.get_secret_value())
    env_name = env.group("env") if env else "?"
    return ok(
        name,
        f"cloud mode; signing key for environment {env_name!r} "
        f"({len(signing.get_secret_value())} chars); event key set "
        f"({len(event.get_secret_value())} chars); {_serve_origin_detail(settings)}",
    )


def _serve_origin_detail(settings: Settings) -> str:
    """Where syncs register /api/inngest; never a request's Host header."""
    origin = settings.serve_origin
    if origin is None:
        return (
            "serve origin not configured: syncs from the Inngest dashboard or the Vercel "
            "integration register the URL Inngest signs, `curl -X PUT` syncs are refused "
            "(set INNGEST_SERVE_ORIGIN to allow them)"
        )
    return f"serve origin {origin[0]}/api/inngest (from {origin[1]})"
