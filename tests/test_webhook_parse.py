"""amoCRM bracket-form webhook parsing: reference bodies, shapes amoCRM sends, bad input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prometei.amocrm.webhook import (
    MAX_DEPTH,
    MAX_FIELDS,
    WebhookPayload,
    parse_form,
    parse_webhook,
)
from prometei.errors import InputError
from tests.fixtures.amocrm_bodies import (
    ACCOUNT_LINES,
    ADD_TWO_LEADS,
    CONTACT_AND_TASK,
    STATUS_LEAD,
    UPDATE_WITH_CUSTOM_FIELDS,
    encode,
)

ACCOUNT_WIRE = encode(ACCOUNT_LINES)


def body(*lines: str, account: bool = True) -> bytes:
    """Wire body from decoded `key=value` lines, with the standard account block appended."""
    text = "\n".join(lines + ((ACCOUNT_LINES,) if account else ()))
    return encode(text)


# ---- the reference bodies (amocrm.md §1.6) -----------------------------------------------


def test_status_change_body_a() -> None:
    payload = parse_webhook(encode(STATUS_LEAD))

    assert payload.account.subdomain == "example"
    assert payload.account.id == 29085955
    assert payload.account.self_host == "example.amocrm.ru"
    assert len(payload.leads) == 1
    lead = payload.leads[0]
    assert (lead.action, lead.id) == ("status", 25399013)
    assert (lead.pipeline_id, lead.status_id) == (7012345, 142)
    assert (lead.old_pipeline_id, lead.old_status_id) == (7012345, 32392156)
    # Raw fields stay strings, as amoCRM sent them; '+' and %23 were decoded.
    assert lead.fields["name"] == "Order #1042"
    assert lead.fields["price"] == "15000"
    assert lead.fields["updated_at"] == "1712056800"
    assert payload.ignored == {}


def test_two_added_leads_body_b_keep_their_order() -> None:
    payload = parse_webhook(encode(ADD_TWO_LEADS))

    assert [(lead.action, lead.index, lead.id) for lead in payload.leads] == [
        ("add", "0", 25400001),
        ("add", "1", 25400002),
    ]
    second = payload.leads[1]
    assert second.fields == {
        "id": "25400002",
        "name": "Phone call",
        "status_id": "53861254",
        "pipeline_id": "6254262",
    }
    assert second.old_status_id is None and second.old_pipeline_id is None


def test_update_with_tags_and_custom_fields_body_c() -> None:
    lead = parse_webhook(encode(UPDATE_WITH_CUSTOM_FIELDS)).leads[0]

    assert lead.action == "update"
    assert lead.fields["tags"] == {"0": {"id": "80147", "name": "repeat customer"}}
    custom = lead.fields["custom_fields"]
    assert custom["0"] == {
        "id": "66339",
        "name": "Source",
        "values": {"0": {"value": "Website", "enum": "139517"}},
    }
    # Date custom fields carry the timestamp directly at values[0], without [value].
    assert custom["1"]["values"] == {"0": "1742067200"}
    assert custom["2"]["values"]["1"] == {"value": "Option3", "enum": "2479776"}


# ---- other shapes amoCRM sends -------------------------------------------------------------


def test_several_entity_action_groups_in_one_body() -> None:
    payload = parse_webhook(
        body(
            "leads[status][0][id]=1",
            "leads[status][0][status_id]=142",
            "leads[status][0][pipeline_id]=7",
            "leads[status][1][id]=2",
            "leads[update][0][id]=3",
            "contacts[update][0][id]=500",
            "leads[responsible][0][id]=4",
            "leads[responsible][0][old_responsible_user_id]=11",
        )
    )

    assert [(lead.action, lead.id) for lead in payload.leads] == [
        ("status", 1),
        ("status", 2),
        ("update", 3),
        ("responsible", 4),
    ]
    assert payload.ignored == {"contacts": 1}


def test_sparse_indices_come_out_in_numeric_order() -> None:
    payload = parse_webhook(
        body("leads[add][10][id]=110", "leads[add][2][id]=102", "leads[add][9][id]=109")
    )

    assert [(lead.index, lead.id) for lead in payload.leads] == [
        ("2", 102),
        ("9", 109),
        ("10", 110),
    ]


def test_id_keyed_maps_are_kept_as_sent() -> None:
    lead = parse_webhook(
        body(
            "leads[update][0][id]=7",
            "leads[update][0][linked_leads_id][25399013][ID]=25399013",
            "leads[update][0][linked_leads_id][25400001][ID]=25400001",
        )
    ).leads[0]

    assert lead.fields["linked_leads_id"] == {
        "25399013": {"ID": "25399013"},
        "25400001": {"ID": "25400001"},
    }


def test_non_lead_entities_are_only_counted() -> None:
    payload = parse_webhook(encode(CONTACT_AND_TASK))

    assert payload.leads == []
    assert payload.ignored == {"contacts": 2, "companies": 1, "task": 1}
    assert payload.ignored_count == 4


def test_unknown_lead_action_is_counted_not_parsed() -> None:
    payload = parse_webhook(body("leads[frobnicate][0][id]=oops", "leads[add][0][id]=5"))

    assert [lead.id for lead in payload.leads] == [5]
    assert payload.ignored == {"leads[frobnicate]": 1}


def test_note_item_takes_the_lead_id_from_element_id() -> None:
    lead = parse_webhook(
        body(
            "leads[note][0][note][id]=9001",
            "leads[note][0][note][element_id]=25399013",
            "leads[note][0][note][element_type]=2",
            "leads[note][0][note][text]=called back",
        )
    ).leads[0]

    assert (lead.action, lead.id) == ("note", 25399013)
    assert lead.fields["note"]["text"] == "called back"


@pytest.mark.parametrize(
    "lines",
    [
        ("leads[delete][0][id]=25399013",),
        ("leads[delete]=25399013",),
        ("leads[delete][0]=25399013",),
    ],
)
def test_delete_item_in_every_documented_shape(lines: tuple[str, ...]) -> None:
    payload = parse_webhook(body(*lines))

    assert [(lead.action, lead.id) for lead in payload.leads] == [("delete", 25399013)]


def test_old_bodies_with_only_a_subdomain_are_accepted() -> None:
    payload = parse_webhook(encode("leads[add][0][id]=5\naccount[subdomain]=Example"))

    assert payload.account.subdomain == "example"
    assert payload.account.id is None and payload.account.self_host is None


def test_wire_decoding_plus_percent_and_utf8() -> None:
    raw = (
        "leads%5Badd%5D%5B0%5D%5Bid%5D=5"
        "&leads%5Badd%5D%5B0%5D%5Bname%5D=%D0%97%D0%B0%D0%BA%D0%B0%D0%B7+%E2%84%96+7%2B1"
    )
    lead = parse_webhook(raw.encode() + b"&" + ACCOUNT_WIRE).leads[0]

    assert lead.fields["name"] == "Заказ № 7+1"


def test_unencoded_brackets_and_empty_values_parse_too() -> None:
    tree = parse_form(b"leads[add][0][id]=5&leads[add][0][name]=&&flag")

    assert tree == {"leads": {"add": {"0": {"id": "5", "name": ""}}}, "flag": ""}


def test_repeated_key_keeps_the_last_value() -> None:
    assert parse_form(b"a[b]=1&a[b]=2") == {"a": {"b": "2"}}


def test_limits_are_inclusive() -> None:
    many = "&".join(f"x[{i}]=1" for i in range(MAX_FIELDS)).encode()
    assert len(parse_form(many)["x"]) == MAX_FIELDS

    deep_key = "a" + "[k]" * (MAX_DEPTH - 1)
    assert parse_form(f"{deep_key}=v".encode())["a"]["k"]["k"]


# ---- malformed input: InputError saying what is wrong ---------------------------------------


MALFORMED: list[tuple[bytes, str]] = [
    (b"leads[add][0][id]=%zz", "percent-encoding"),
    (b"leads[add][0][id]=5%4", "percent-encoding"),
    (b"leads[add][0][na%me]=x", "percent-encoding"),
    (b"leads[add][0][name]=%ff%fe", "UTF-8"),
    (b"leads[add][0][name]=\xc3\x28", "UTF-8"),
    (b"leads[add][0][id]=5&leads[add][0][id][x]=6", "both a value and a group"),
    (b"leads[add][0][id][x]=6&leads[add][0][id]=5", "both a value and a group"),
    (b"leads[add][0]=5&leads[add][0][id]=5", "both a value and a group"),
    (b"leads[add][0][id=5", "malformed"),
    (b"leads[add]]0[=5", "malformed"),
    (b"leads[add][0]x[id]=5", "malformed"),
    (b"=5", "malformed"),
    (b"leads[add][][id]=5", "empty []"),
    (b"leads[add][0][id]=abc", "leads[add][0][id] must be a number"),
    (b"leads[add][0][id]=-5", "must be a number"),
    (b"leads[add][0][id]=0", "positive"),
    (b"leads[add][0][id]=" + b"9" * 40, "must be a number"),
    (b"leads[add][0][id][0]=5", "not a group"),
    (b"leads[add][0][name]=x", "leads[add][0][id] is missing"),
    (b"leads[note][0][note][id]=1", "[note][element_id] is missing"),
    (b"leads[status][0][id]=5&leads[status][0][status_id]=new", "[status_id] must be a number"),
    (b"leads=5", "'leads' must be a group"),
]


@pytest.mark.parametrize(("raw", "expected"), MALFORMED)
def test_malformed_bodies_raise_input_error(raw: bytes, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_webhook(raw + b"&" + ACCOUNT_WIRE)

    assert expected in caught.value.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"leads[add][0][id]=5", "no account block"),
        (b"leads[add][0][id]=5&account=example", "no account block"),
        (b"leads[add][0][id]=5&account[id]=29085955", "account[subdomain] is missing"),
        (b"account[subdomain]=example&account[id]=twelve", "account[id] must be a number"),
        (b"account[subdomain]=example&account[_links][self]=http://[", "not a URL"),
        (b"account[subdomain]=example&account[_links][self]=not-a-url", "not a URL"),
        (b"account[subdomain]=example&account[_links][self][x]=1", "must be a URL"),
    ],
)
def test_bad_account_block(raw: bytes, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_webhook(raw)

    assert expected in caught.value.message


def test_too_many_fields() -> None:
    raw = "&".join(f"x[{i}]=1" for i in range(MAX_FIELDS + 1)).encode()

    with pytest.raises(InputError, match="at most 10000"):
        parse_form(raw)


def test_too_deep() -> None:
    key = "a" + "[k]" * MAX_DEPTH

    with pytest.raises(InputError, match="levels deep"):
        parse_form(f"{key}=v".encode())


def test_error_message_shortens_a_huge_field_name() -> None:
    raw = b"a" * 5000 + b"["

    with pytest.raises(InputError) as caught:
        parse_form(raw)

    assert len(caught.value.message) < 300


# ---- any input: a payload or an InputError, nothing else -------------------------------------

_PARTS = "leads add status note 0 1 id [ ] account subdomain _links self % %5B %5D + = \u00e9"
_keys = st.lists(
    st.sampled_from([*_PARTS.split(" "), ""]),
    max_size=8,
).map(lambda parts: "".join(f"[{p}]" if i else p for i, p in enumerate(parts)))


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    try:
        assert isinstance(parse_webhook(raw), WebhookPayload)
    except InputError as exc:
        assert exc.message


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_keys, st.text(max_size=20)), max_size=12))
def test_arbitrary_bracket_forms_never_crash(pairs: list[tuple[str, str]]) -> None:
    raw = encode(pairs) + b"&" + ACCOUNT_WIRE
    try:
        assert isinstance(parse_webhook(raw), WebhookPayload)
    except InputError as exc:
        assert exc.message
