"""prometei.deals: payload validation, ERP items, event builders and the send helper."""

from __future__ import annotations

from typing import Any

import pytest

from prometei.config import settings_from_mapping
from prometei.deals import (
    BATCH_EVENT,
    CREATE_DEAL_EVENT,
    TASK_CREATE_EVENT,
    DealPayload,
    DealValidationError,
    chunk_events,
    deal_values,
    derived_external_id,
    erp_fields,
    event_size,
    fanout_events,
    parse_batch,
    parse_deal,
    send_deals,
)
from prometei.erp.values import text_of
from prometei.errors import ConfigError, UpstreamUnavailable

EN = "\u2013"  # the en dash used in the messages ("1<EN>255")
NAME_RULE = f"dealName: must be 1{EN}255 characters after trimming"


def problems_of(data: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(DealValidationError) as caught:
        parse_deal(data, **kwargs)
    return caught.value.problems


def settings(**env: str):
    return settings_from_mapping(env)


# ---- one message per bad field --------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, f"dealName: is required (the deal's name, 1{EN}255 characters after trimming)"),
        ({"dealName": "   "}, NAME_RULE),
        ({"dealName": ""}, NAME_RULE),
        ({"dealName": "x" * 256}, NAME_RULE),
        ({"dealName": 42}, f"dealName: must be a string (must be 1{EN}255 characters"),
        ({"dealName": None}, "dealName: must be a string"),
        ({"dealName": "A", "amount": -5}, "amount: must not be negative (got -5)"),
        ({"dealName": "A", "amount": "-5.5"}, "amount: must not be negative (got '-5.5')"),
        ({"dealName": "A", "amount": "abc"}, "amount: must be a non-negative number or numeric"),
        ({"dealName": "A", "amount": "1e5"}, "amount: must be a non-negative number or numeric"),
        ({"dealName": "A", "amount": True}, "amount: must be a non-negative number"),
        ({"dealName": "A", "amount": [1]}, "amount: must be a non-negative number"),
        ({"dealName": "A", "amount": float("nan")}, "amount: must be a non-negative number"),
        ({"dealName": "A", "amount": 10**15}, "amount: is too large"),
        ({"dealName": "A", "entityId": 0}, "entityId: must be a positive integer (got 0)"),
        ({"dealName": "A", "entityId": -3}, "entityId: must be a positive integer (got -3)"),
        ({"dealName": "A", "entityId": "abc"}, "entityId: must be a positive integer"),
        ({"dealName": "A", "entityId": 1.5}, "entityId: must be a positive integer (got 1.5)"),
        ({"dealName": "A", "entityId": True}, "entityId: must be a positive integer (got True)"),
        ({"dealName": "A", "fields": ["x"]}, 'fields: must be an object like {"field_1041"'),
        ({"dealName": "A", "fields": {"colour": "red"}}, "fields.colour: key must look like"),
        (
            {"dealName": "A", "fields": {"field_1041": {"a": 1}}},
            "fields.field_1041: value must be a string or a number",
        ),
        (
            {"dealName": "A", "fields": {"field_1041": "x" * 4001}},
            "fields.field_1041: value must be at most 4000 characters",
        ),
        ({"dealName": "A", "externalId": "O'Brien"}, "externalId: must be 1"),
        ({"dealName": "A", "externalId": "has space"}, "externalId: must be 1"),
        ({"dealName": "A", "externalId": ""}, "externalId: must be 1"),
        ({"dealName": "A", "externalId": "x" * 256}, "externalId: must be 1"),
        ({"dealName": "A", "dealname": "typo"}, "dealname: unknown key (allowed: dealName,"),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, dict) else None,
)
def test_each_bad_field_has_a_readable_message(data: dict[str, Any], expected: str) -> None:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_every_problem_is_listed_at_once() -> None:
    problems = problems_of(
        {
            "dealName": " ",
            "amount": "-1",
            "entityId": 0,
            "fields": {"bad": 1},
            "externalId": "a b",
        }
    )
    assert [p.split(":")[0] for p in problems] == [
        "dealName",
        "amount",
        "entityId",
        "fields.bad",
        "externalId",
    ]
    with pytest.raises(DealValidationError) as caught:
        parse_deal({"dealName": "", "amount": "x"})
    assert str(caught.value).startswith("invalid deal: dealName: must be")
    assert "; amount: must be" in str(caught.value)
    assert caught.value.retryable is False


def test_non_object_payload() -> None:
    assert problems_of("just a name") == [
        'data: must be a JSON object like {"dealName": "Order #1042"}'
    ]


@pytest.mark.parametrize(
    ("amount", "normalised"),
    [
        (15000, "15000"),
        (15000.75, "15000.75"),
        ("15000.50", "15000.5"),
        ("15 000,50", "15000.5"),
        ("0", "0"),
        (0, "0"),
        ("", None),
        (None, None),
    ],
)
def test_amount_is_normalised(amount: Any, normalised: str | None) -> None:
    assert parse_deal({"dealName": "A", "amount": amount}).amount == normalised


def test_valid_payload_is_trimmed_and_typed() -> None:
    deal = parse_deal(
        {
            "dealName": "  Order #1042  ",
            "entityId": "25",
            "externalId": 1042,
            "fields": {"field_1041": 7, "field_1042": "Website"},
            "_inngest": {"source": "invoke"},  # Inngest's own metadata is ignored
        }
    )
    assert deal.deal_name == "Order #1042"
    assert deal.entity_id == 25
    assert deal.external_id == "1042"
    assert deal.to_data() == {
        "dealName": "Order #1042",
        "entityId": 25,
        "fields": {"field_1041": "7", "field_1042": "Website"},
        "externalId": "1042",
    }


# ---- ERP items ------------------------------------------------------------------------------
def deal_items(deal: DealPayload, s: Any) -> dict[str, str]:
    """What would be written (before the entity's schema converts it)."""
    name, price = erp_fields(s)
    values = deal_values(deal, name_field=name, price_field=price, entity_id=s.erp_entity_id)
    return {v.key: text_of(v.value) for v in values if not v.is_empty()}


def test_deal_items_default_fields_and_amount_rules() -> None:
    s = settings()
    assert deal_items(parse_deal({"dealName": "A", "amount": 1500}), s) == {
        "field_1039": "A",
        "field_1040": "1500",
    }
    for empty in (0, "0", "0.00", "", None):
        assert deal_items(parse_deal({"dealName": "A", "amount": empty}), s) == {"field_1039": "A"}


def test_deal_items_follow_erp_field_map_and_add_extra_fields() -> None:
    s = settings(ERP_FIELD_MAP='{"field_213": "name", "field_214": "price", "field_9": "id"}')
    deal = parse_deal({"dealName": "A", "amount": "2.5", "fields": {"field_216": "68"}})
    assert deal_items(deal, s) == {"field_213": "A", "field_214": "2.5", "field_216": "68"}
    # a map without name/price falls back to the defaults
    s2 = settings(ERP_FIELD_MAP='{"field_9": "id"}')
    assert deal_items(parse_deal({"dealName": "A", "amount": 3}), s2) == {
        "field_1039": "A",
        "field_1040": "3",
    }


def test_amount_for_an_entity_without_an_amount_field_is_refused_not_dropped() -> None:
    deal = parse_deal({"dealName": "A", "amount": 5, "entityId": 25})
    with pytest.raises(DealValidationError, match="amount: entity 25 is not ERP_ENTITY_ID"):
        deal_values(deal, name_field="field_213", price_field=None, entity_id=25)
    # an amount of 0 is "no amount" and needs no field
    zero = parse_deal({"dealName": "A", "amount": 0, "entityId": 25})
    values = deal_values(zero, name_field="field_213", price_field=None, entity_id=25)
    assert [v.key for v in values] == ["field_213"]


def test_extra_fields_of_another_entity_are_not_checked_against_erp_entity_id() -> None:
    # field_1039 is ERP_ENTITY_ID's name field, but entity 25's fields are its own business;
    # they are checked against entity 25's schema when the deal is written.
    s = settings(ERP_LEAD_ID_FIELD="1041")
    deal = parse_deal({"dealName": "A", "entityId": 25, "fields": {"field_1039": "x"}}, settings=s)
    assert deal.fields == {"field_1039": "x"}


def test_extra_fields_may_not_overwrite_name_amount_or_lookup_field() -> None:
    s = settings(ERP_LEAD_ID_FIELD="1041")
    problems = problems_of(
        {
            "dealName": "A",
            "fields": {"field_1039": "x", "field_1040": "1", "field_1041": "y", "field_7": "ok"},
        },
        settings=s,
    )
    assert problems == [
        "fields.field_1039: is set from dealName; remove it from fields",
        "fields.field_1040: is set from amount; remove it from fields",
        "fields.field_1041: is set from externalId (ERP_LEAD_ID_FIELD); remove it from fields",
    ]


# ---- batches --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "deals: is required"),
        ({"deals": "x"}, f"deals: must be a list of 1{EN}1000 deal objects"),
        ({"deals": []}, "deals: must hold at least one deal"),
        (
            {"deals": [{"dealName": "A"}] * 1001},
            "deals: must hold at most 1000 deals (got 1001); split larger batches",
        ),
        ({"deals": [{"dealName": "A"}], "extra": 1}, "extra: unknown key (allowed: deals)"),
        ([{"dealName": "A"}], 'data: must be a JSON object like {"deals"'),
    ],
)
def test_batch_container_errors(data: Any, expected: str) -> None:
    with pytest.raises(DealValidationError) as caught:
        parse_batch(data)
    assert caught.value.problems[0].startswith(expected), caught.value.problems
    assert str(caught.value).startswith("invalid batch: ")


def test_batch_keeps_valid_items_and_reports_invalid_ones_by_index() -> None:
    check = parse_batch(
        {
            "deals": [
                {"dealName": "A"},
                {"dealName": "", "amount": "x"},
                "not an object",
                {"dealName": "D", "amount": 5},
            ]
        }
    )
    assert check.total == 4
    assert [i for i, _ in check.valid] == [0, 3]
    assert check.invalid == [
        (1, [NAME_RULE.replace("dealName", "deals[1].dealName"), check.invalid[0][1][1]]),
        (2, ['deals[2]: must be a JSON object like {"dealName": "Order #1042"}']),
    ]
    assert check.invalid[0][1][1].startswith("deals[1].amount: must be a non-negative")


def test_batch_reports_a_repeated_external_id() -> None:
    check = parse_batch(
        {
            "deals": [
                {"dealName": "A", "externalId": "x-1"},
                {"dealName": "B", "externalId": "x-2"},
                {"dealName": "C", "externalId": "x-1"},
            ]
        }
    )
    assert [i for i, _ in check.valid] == [0, 1]
    assert check.invalid == [
        (2, ["deals[2].externalId: 'x-1' is already used by deals[0] in this batch"])
    ]


def test_fanout_events_have_deterministic_ids_and_external_ids() -> None:
    check = parse_batch({"deals": [{"dealName": "A"}, {"dealName": "B", "externalId": "mine-1"}]})
    events = fanout_events("01BATCH", check.valid)
    assert events == [
        {
            "name": CREATE_DEAL_EVENT,
            "id": "01BATCH-0",
            "data": {
                "dealName": "A",
                "externalId": "01BATCH-0",
                "batchId": "01BATCH",
                "batchIndex": 0,
            },
        },
        {
            "name": CREATE_DEAL_EVENT,
            "id": "01BATCH-1",
            "data": {
                "dealName": "B",
                "externalId": "mine-1",  # the sender's own id wins
                "batchId": "01BATCH",
                "batchIndex": 1,
            },
        },
    ]
    assert fanout_events("01BATCH", check.valid) == events
    # every fanned-out event is itself a valid deal payload
    for event in events:
        parse_deal(event["data"])


def test_derived_external_id_stays_in_the_safe_alphabet() -> None:
    weird = derived_external_id("batch with 'quotes' & spaces", 3)
    assert weird.endswith("-3")
    assert weird == derived_external_id("batch with 'quotes' & spaces", 3)
    parse_deal({"dealName": "A", "externalId": weird})


def test_chunks_respect_count_and_bytes() -> None:
    events = [{"name": "x", "id": str(i), "data": {"n": i}} for i in range(250)]
    assert [len(c) for c in chunk_events(events)] == [100, 100, 50]
    assert [e for c in chunk_events(events) for e in c] == events
    big = [{"name": "x", "id": str(i), "data": {"blob": "y" * 1000}} for i in range(10)]
    chunks = chunk_events(big, max_bytes=3 * event_size(big[0]) + 3)
    assert [len(c) for c in chunks] == [3, 3, 3, 1]


# ---- send helper ----------------------------------------------------------------------------
class FakeSender:
    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.fail_on_call = fail_on_call

    def send(self, events: list[dict[str, Any]]) -> list[str]:
        self.calls.append(events)
        if self.fail_on_call == len(self.calls):
            raise UpstreamUnavailable("inngest", "event API answered 502; will retry")
        return [f"internal-{e['id']}" for e in events]


def test_dry_run_validates_and_sends_nothing() -> None:
    sender = FakeSender()
    report = send_deals([{"dealName": "A"}], batch=False, dry_run=True, sender=sender)
    assert report.status == "validated"
    assert report.ok
    assert sender.calls == []
    assert report.events[0]["name"] == CREATE_DEAL_EVENT
    assert report.events[0]["id"].startswith("prometei-deal-")


def test_invalid_input_sends_nothing_and_lists_every_problem() -> None:
    sender = FakeSender()
    report = send_deals(
        [{"dealName": "A"}, {"dealName": " ", "amount": -1}],
        batch=False,
        dry_run=False,
        sender=sender,
    )
    assert report.status == "invalid"
    assert report.problems == [
        NAME_RULE.replace("dealName", "deals[1].dealName"),
        "deals[1].amount: must not be negative (got -1)",
    ]
    assert sender.calls == []


def test_single_mode_sends_one_event_per_deal_with_repeatable_ids() -> None:
    sender = FakeSender()
    deals = [{"dealName": f"D{i}", "amount": i} for i in range(150)]
    report = send_deals(deals, batch=False, dry_run=False, sender=sender)
    assert report.status == "sent"
    assert [len(c) for c in sender.calls] == [100, 50]
    ids = [e["id"] for e in report.events]
    assert len(set(ids)) == 150
    assert len(report.event_ids) == 150
    again = send_deals(deals, batch=False, dry_run=True, sender=sender)
    assert [e["id"] for e in again.events] == ids  # a resend is dropped by Inngest
    keyed = send_deals(deals, batch=False, dry_run=True, key="second-try")
    assert keyed.events[0]["id"] == "prometei-deal-second-try-0"
    task = send_deals(deals[:1], batch=False, dry_run=True, event_name=TASK_CREATE_EVENT)
    assert task.events[0]["name"] == TASK_CREATE_EVENT


def test_batch_mode_sends_one_batch_event() -> None:
    sender = FakeSender()
    report = send_deals(
        [{"dealName": "A"}, {"dealName": "B", "amount": "10"}],
        batch=True,
        dry_run=False,
        sender=sender,
        key="import-1",
    )
    assert report.status == "sent"
    assert sender.calls == [
        [
            {
                "name": BATCH_EVENT,
                "id": "prometei-batch-import-1",
                "data": {"deals": [{"dealName": "A"}, {"dealName": "B", "amount": "10"}]},
            }
        ]
    ]


def test_batch_mode_refuses_more_than_1000_and_bad_keys() -> None:
    report = send_deals([{"dealName": "A"}] * 1001, batch=True, dry_run=True)
    assert report.status == "invalid"
    assert "at most 1000" in report.problems[0]
    bad_key = send_deals([{"dealName": "A"}], batch=True, dry_run=True, key="has space")
    assert bad_key.problems[0].startswith("key: must be")


def test_send_failure_is_reported_with_what_got_through() -> None:
    sender = FakeSender(fail_on_call=2)
    deals = [{"dealName": f"D{i}"} for i in range(150)]
    report = send_deals(deals, batch=False, dry_run=False, sender=sender)
    assert report.status == "failed"
    assert not report.ok
    assert "502" in (report.error or "")
    assert len(report.event_ids) == 100
    assert report.as_dict()["status"] == "failed"


def test_missing_event_key_is_a_config_error(set_env) -> None:
    set_env(INNGEST_EVENT_KEY=None)
    with pytest.raises(ConfigError, match="INNGEST_EVENT_KEY"):
        send_deals([{"dealName": "A"}], batch=False, dry_run=False)
    # a dry run needs no key
    assert send_deals([{"dealName": "A"}], batch=False, dry_run=True).ok
