"""Property-based robustness of the amoCRM form parser and the /api/webhook intake.

Whatever the bytes (random, truncated or mutated real bodies, 10k fields, deep nesting,
latin-1/cp1251/utf-16 text, odd content types), the parser raises nothing but `InputError`,
and the intake answers one of the statuses DESIGN.md 3.2 documents with a JSON `error` for
anything but 200. It never answers 500, and its catch-all "unexpected error" path (which would
turn a bug into a 503) never fires. Hypothesis runs derandomized, without an example
database, so CI sees the same examples every time.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import pytest
import requests
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prometei.amocrm.webhook import MAX_DEPTH, MAX_FIELDS, parse_form, parse_webhook
from prometei.errors import InputError
from prometei.web.apps import create_webhook_app
from prometei.web.intake import MAX_BODY_BYTES
from tests.conftest import TEST_SECRETS
from tests.fixtures.amocrm_bodies import (
    ACCOUNT_LINES,
    ADD_TWO_LEADS,
    CONTACT_AND_TASK,
    STATUS_LEAD,
    UPDATE_WITH_CUSTOM_FIELDS,
    encode,
    lines,
)

DOCUMENTED = {200, 400, 401, 403, 413, 415, 503}
FORM = "application/x-www-form-urlencoded"
URL = f"/api/webhook?token={TEST_SECRETS['AMOCRM_WEBHOOK_SECRET']}"
SAMPLES = [
    encode(b) for b in (STATUS_LEAD, ADD_TWO_LEADS, UPDATE_WITH_CUSTOM_FIELDS, CONTACT_AND_TASK)
]
ACCOUNT = encode(ACCOUNT_LINES)

# Deterministic for CI: fixed derivation of examples, no example database, no deadline (a
# 10k-field body is legitimately slower than a one-liner).
ROBUST = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)


def examples(n: int) -> settings:
    return settings(ROBUST, max_examples=n)


# ---- strategies ------------------------------------------------------------------------------

KEY_PARTS = [
    "leads",
    "status",
    "add",
    "update",
    "note",
    "delete",
    "account",
    "subdomain",
    "id",
    "_links",
    "self",
    "0",
    "1",
    "007",
    "99999999999999999999",
    "custom_fields",
    "values",
    "",
    "[",
    "]",
    "x",
    "%5B",
    "%5D",
    "%",
    "%zz",
    "+",
    "é",
    "%FF",
    "\x00",
]
VALUES = [
    "",
    "example",
    "25399013",
    "0",
    "-1",
    "1e3",
    " 42 ",
    "١٢٣",
    "https://example.amocrm.ru",
    "http://[::1",
    "https://evil.test",
    "%",
    "%41",
    "%C3%A9",
    "%FF%FE",
    "+",
    "x" * 300,
]


@st.composite
def bracket_keys(draw: Any) -> str:
    head = draw(st.sampled_from([*KEY_PARTS[:11], "", "x"]))
    segments = draw(st.lists(st.sampled_from(KEY_PARTS), max_size=8))
    brackets = draw(st.booleans())
    return head + "".join(f"[{s}]" if brackets else s for s in segments)


def random_forms() -> st.SearchStrategy[bytes]:
    pair = st.tuples(bracket_keys(), st.one_of(st.sampled_from(VALUES), st.text(max_size=20)))
    return st.lists(pair, max_size=40).map(
        lambda pairs: "&".join(
            f"{k}={v}" if i % 2 else f"{quote_plus(k, safe='[]%')}={quote_plus(v, safe='%')}"
            for i, (k, v) in enumerate(pairs)
        ).encode("utf-8", "surrogatepass")
    )


def truncated() -> st.SearchStrategy[bytes]:
    return st.sampled_from(SAMPLES).flatmap(
        lambda body: st.integers(0, len(body)).map(lambda n: body[:n])
    )


@st.composite
def mutated(draw: Any) -> bytes:
    body = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.integers(0, len(body)))
        kind = draw(st.sampled_from(["replace", "insert", "delete", "duplicate"]))
        chunk = draw(
            st.one_of(
                st.binary(min_size=1, max_size=4),
                st.sampled_from([b"%", b"[", b"]", b"&", b"=", b"%5B", b"%00"]),
            )
        )
        if kind == "replace":
            body[where : where + len(chunk)] = chunk
        elif kind == "insert":
            body[where:where] = chunk
        elif kind == "delete":
            del body[where : where + draw(st.integers(1, 16))]
        else:
            body[where:where] = body[max(0, where - 40) : where]
    return bytes(body)


@st.composite
def huge(draw: Any) -> bytes:
    """Bodies around the field limit (10k fields), valid account block included."""
    count = draw(st.sampled_from([MAX_FIELDS - 10, MAX_FIELDS - 4, MAX_FIELDS + 1, 12_000]))
    action = draw(st.sampled_from(["status", "add", "other"]))
    fields = "&".join(f"leads%5B{action}%5D%5B{i}%5D%5Bid%5D={1000 + i}" for i in range(count))
    return (fields + "&" + ACCOUNT.decode()).encode()


@st.composite
def deeply_nested(draw: Any) -> bytes:
    depth = draw(st.integers(1, 400))
    where = draw(st.sampled_from(["leads[status][0]", "account", "x"]))
    key = where + "[a]" * depth
    tail = draw(st.sampled_from([b"", b"&" + ACCOUNT]))
    return quote_plus(key).encode() + b"=1" + tail


@st.composite
def wrong_encoding(draw: Any) -> bytes:
    """Real bodies with non-ASCII text in a codec other than UTF-8, raw or percent-encoded."""
    text = draw(st.sampled_from([STATUS_LEAD, UPDATE_WITH_CUSTOM_FIELDS]))
    text = text.replace("Order #1042", draw(st.sampled_from(["Заказ №1042", "Café ünï", "订单"])))
    codec = draw(st.sampled_from(["latin-1", "cp1251", "utf-16", "utf-16-le", "utf-32", "koi8-r"]))
    raw = "&".join(f"{k}={v}" for k, v in lines(text)).encode(codec, errors="replace")
    if draw(st.booleans()):
        # percent-encode the foreign bytes, as a form encoder in that codec would
        return b"".join(bytes([c]) if c < 128 else b"%%%02X" % c for c in raw)
    return raw


CONTENT_TYPES = [
    FORM,
    FORM + "; charset=utf-8",
    FORM + "; charset=utf-16",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "application/json",
    "text/plain",
    "multipart/form-data; boundary=xyz",
    "",
    "text/html; charset=cp1251",
    "application/x-www-form-urlencoded;;;",
    "*/*",
]

ANY_BODY = st.one_of(
    st.binary(max_size=2048),
    random_forms(),
    truncated(),
    mutated(),
    deeply_nested(),
    wrong_encoding(),
)


# ---- fixtures --------------------------------------------------------------------------------


class _Unexpected(logging.Handler):
    """Collects the intake's catch-all log lines (a bug answered as 503)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "unexpected" in record.getMessage():
            self.records.append(record)


@pytest.fixture
def intake() -> Iterator[Any]:
    """A test client whose event API accepts everything; checks every answer it gets."""

    def accept(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        events = json.loads(request.body or b"[]")
        return (
            200,
            {},
            json.dumps({"ids": [f"01R{i:08d}" for i in range(len(events))], "status": 200}),
        )

    handler = _Unexpected()
    logger = logging.getLogger("prometei.web.intake")
    logger.addHandler(handler)
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            mock.add_callback(responses.POST, re.compile(r"https://inn\.gs/e/.*"), callback=accept)
            client = create_webhook_app().test_client()

            def post(body: bytes, content_type: str = FORM, url: str = URL) -> Any:
                before = len(handler.records)
                response = client.post(url, data=body, content_type=content_type)
                check_answer(response, body)
                new = handler.records[before:]
                assert not new, (
                    f"the intake's catch-all fired (a bug answered as 503) for body "
                    f"{body[:200]!r}: {new[0].getMessage()} {new[0].exc_info!r}"
                )
                return response

            yield post
    finally:
        logger.removeHandler(handler)


def check_answer(response: Any, body: bytes) -> None:
    shown = body[:200]
    assert response.status_code in DOCUMENTED, (response.status_code, shown, response.data[:300])
    payload = response.get_json(silent=True)
    assert isinstance(payload, dict), ("not a JSON object", response.status_code, shown)
    if response.status_code == 200:
        assert set(payload) >= {"accepted", "ignored", "event_ids"}, payload
        assert len(payload["event_ids"]) == payload["accepted"]
    else:
        assert isinstance(payload.get("error"), str) and payload["error"].strip(), payload


# ---- the parser, directly --------------------------------------------------------------------


def _parse_or_input_error(body: bytes | str) -> None:
    try:
        tree = parse_form(body)
    except InputError as exc:
        assert exc.message
        return
    assert isinstance(tree, dict)
    try:
        parse_webhook(body)
    except InputError as exc:
        assert exc.message


@examples(1500)
@given(ANY_BODY)
def test_parser_raises_only_input_error_on_bytes(body: bytes) -> None:
    _parse_or_input_error(body)


@examples(500)
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=300))
def test_parser_raises_only_input_error_on_any_text(body: str) -> None:
    _parse_or_input_error(body)  # surrogates and control characters included


@examples(12)
@given(huge())
def test_parser_on_10k_field_bodies(body: bytes) -> None:
    count = body.count(b"&") + 1
    if count > MAX_FIELDS:
        with pytest.raises(InputError, match="fields"):
            parse_form(body)
    else:
        _parse_or_input_error(body)


@examples(150)
@given(deeply_nested())
def test_parser_depth_limit(body: bytes) -> None:
    key = body.split(b"=", 1)[0].decode()
    depth = key.count("%5B") + 1
    if depth > MAX_DEPTH:
        with pytest.raises(InputError):
            parse_form(body)
    else:
        _parse_or_input_error(body)


def test_real_samples_parse() -> None:
    for body in SAMPLES:
        payload = parse_webhook(body)
        assert payload.account.subdomain == "example"


# ---- the endpoint ----------------------------------------------------------------------------


@examples(1200)
@given(ANY_BODY)
def test_intake_answers_a_documented_status_for_any_body(intake: Any, body: bytes) -> None:
    intake(body)


@examples(300)
@given(
    st.sampled_from([*SAMPLES, b"", b"a=1", b"\xff\xfe"]),
    st.one_of(
        st.sampled_from(CONTENT_TYPES),
        # what can travel in an HTTP header: latin-1, no CR/LF
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=40),
    ),
)
def test_intake_with_any_content_type(intake: Any, body: bytes, content_type: str) -> None:
    response = intake(body, content_type=content_type)
    if "urlencoded" not in content_type.lower():
        assert response.status_code == 415


@examples(8)
@given(huge())
def test_intake_on_10k_field_bodies(intake: Any, body: bytes) -> None:
    response = intake(body)
    if body.count(b"&") + 1 > MAX_FIELDS:
        assert response.status_code == 400


@examples(200)
@given(wrong_encoding())
def test_intake_on_wrongly_encoded_bodies(intake: Any, body: bytes) -> None:
    intake(body)


@examples(60)
@given(st.one_of(st.none(), st.text(max_size=40), st.just(TEST_SECRETS["AMOCRM_WEBHOOK_SECRET"])))
def test_intake_token_variants(intake: Any, token: str | None) -> None:
    url = "/api/webhook" if token is None else f"/api/webhook?token={quote_plus(token)}"
    response = intake(SAMPLES[0], url=url)
    if token != TEST_SECRETS["AMOCRM_WEBHOOK_SECRET"]:
        assert response.status_code == 401


def test_intake_refuses_an_oversized_body(intake: Any) -> None:
    response = intake(b"a=" + b"x" * (MAX_BODY_BYTES + 10))
    assert response.status_code == 413
