"""RecordWriter: one ERP record per lead, checked against the entity and typed.

Two kinds of tests: recorded answers (`responses` queues, exact request order) for the lookup
path, with the schema already warm; and the stateful fake (tests.fakes.rukovoditel, which
behaves like the live 3.6.2 server) for everything that depends on what Rukovoditel stores.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import requests
import responses

from prometei.config import settings_from_mapping
from prometei.erp.records import RecordIdentity, RecordWriter, WriteResult
from prometei.erp.schema import EntitySchema, SchemaCache, parse_choices, parse_entity_fields
from prometei.erp.values import SourceValue
from prometei.errors import (
    ConfigError,
    InputError,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from prometei.store.base import StateStore
from prometei.store.file import FileStateStore
from tests.fakes.rukovoditel import FakeField, FakeRukovoditel
from tests.fixtures import rukovoditel as ruko
from tests.test_erp_client import (
    ENTITY,
    ERP_URL,
    ITEMS,
    LEAD,
    LOOKUP,
    make_client,
    reply,
    sent_json,
)

MSK = timezone(timedelta(hours=3))


class WarmSchemas(SchemaCache):
    """Entity 70 as ruko.ENTITY_FIELDS_70 describes it, already cached: no schema request."""

    def __init__(self) -> None:
        super().__init__(make_client())

    def _fetch(self, entity_id: int, now: float) -> EntitySchema | None:
        schema = parse_entity_fields(entity_id, json.loads(ruko.ENTITY_FIELDS_70)["data"])
        schema.fetched_at = now
        return schema

    def _fetch_choices(self, entity_id: int, field_id: int) -> Any:
        return parse_choices(json.loads(ruko.CHOICES_1042)["data"])


class NoStore:
    """What `services.state` does on Vercel without KV."""

    def __call__(self) -> StateStore:
        raise ConfigError("no shared state store on Vercel (connect KV)")


def text_values(items: dict[str, str]) -> list[SourceValue]:
    return [SourceValue(key, f"test {key}", "any", value) for key, value in items.items()]


def warm_writer(memory: Any = None) -> RecordWriter:
    return RecordWriter(make_client(), WarmSchemas(), memory=memory or NoStore(), tz=UTC)


def upsert(lookup: int | None = LOOKUP, writer: RecordWriter | None = None) -> WriteResult:
    identity = RecordIdentity("lead", LEAD, lookup) if lookup else None
    return (writer or warm_writer()).write(ENTITY, text_values(ITEMS), identity, what="lead")


# ---- the lookup path, against recorded answers --------------------------------------------
@responses.activate
def test_without_identity_it_is_one_insert() -> None:
    reply(ruko.INSERT_OK)
    result = upsert(lookup=None)
    assert result.as_output() == {
        "action": "inserted",
        "record_id": "812",
        "entity_id": ENTITY,
        "duplicates": [],
    }
    assert len(responses.calls) == 1
    assert sent_json(0)["items"] == ITEMS


@responses.activate
def test_plain_insert_reports_a_unique_clash() -> None:
    reply(ruko.INSERT_SKIPPED_UNIQUE)
    with pytest.raises(UpstreamRejected, match="ERP_LEAD_ID_FIELD"):
        upsert(lookup=None)


@responses.activate
def test_lookup_inserts_when_it_finds_nothing() -> None:
    reply(ruko.SELECT_EMPTY)
    reply(ruko.INSERT_OK)
    result = upsert()
    assert (result.action, result.record_id) == ("inserted", "812")
    lookup = sent_json(0)
    assert lookup["action"] == "select"
    assert lookup["filters"] == {"1041": LEAD}
    assert lookup["select_fields"] == "1041"
    assert lookup["limit"] == 2
    assert sent_json(1)["items"] == {**ITEMS, "field_1041": LEAD}


@responses.activate
def test_lookup_updates_the_record_it_found() -> None:
    reply(ruko.SELECT_ONE)
    reply(ruko.UPDATE_OK)
    result = upsert()
    assert (result.action, result.record_id, result.duplicates) == ("updated", "812", [])
    update = sent_json(1)
    assert update["action"] == "update"
    assert update["update_by_field"] == {"id": 812}
    assert update["data"] == {**ITEMS, "field_1041": LEAD}
    assert len(responses.calls) == 2


@responses.activate
def test_lookup_with_duplicates_updates_the_lowest_id_and_reports_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reply(ruko.SELECT_TWO)  # ids 915 and 812, in that order
    reply(ruko.UPDATE_OK)
    with caplog.at_level(logging.WARNING, logger="prometei.erp"):
        result = upsert()
    assert result.as_output() == {
        "action": "updated",
        "record_id": "812",
        "entity_id": ENTITY,
        "duplicates": ["915"],
    }
    assert sent_json(1)["update_by_field"] == {"id": 812}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "915" in warnings[0].getMessage()


@responses.activate
def test_lookup_refuses_rows_from_an_ignored_filter() -> None:
    # Rows whose lead id is not ours prove the server dropped the filter: never update them,
    # and never insert (the real record may exist beyond the two rows returned).
    reply(ruko.SELECT_FILTER_IGNORED)
    with pytest.raises(UpstreamRejected, match="ERP_LEAD_ID_FIELD") as caught:
        upsert()
    assert not caught.value.retryable
    assert len(responses.calls) == 1


@responses.activate
def test_insert_skipped_as_unique_duplicate_looks_up_again_and_updates() -> None:
    reply(ruko.SELECT_EMPTY)
    reply(ruko.INSERT_SKIPPED_UNIQUE)
    reply(ruko.SELECT_ONE)
    reply(ruko.UPDATE_OK)
    result = upsert()
    assert (result.action, result.record_id) == ("updated", "812")
    assert [sent_json(i)["action"] for i in range(4)] == ["select", "insert", "select", "update"]


@responses.activate
def test_record_deleted_between_lookup_and_update_is_retryable() -> None:
    reply(ruko.SELECT_ONE)
    reply(ruko.UPDATE_NOTHING)
    with pytest.raises(UpstreamError) as caught:
        upsert()
    assert caught.value.retryable


# ---- against the stateful fake ----------------------------------------------------------------
@pytest.fixture
def fake(mock: responses.RequestsMock) -> FakeRukovoditel:
    return FakeRukovoditel(ERP_URL).install(mock)


@pytest.fixture
def store(tmp_path: Any) -> FileStateStore:
    return FileStateStore(tmp_path / "state")


def writer_for(
    fake: FakeRukovoditel, store: StateStore | None = None, **kwargs: Any
) -> RecordWriter:
    schemas = SchemaCache(make_client(), **kwargs)
    memory = (lambda: store) if store is not None else NoStore()
    return RecordWriter(make_client(), schemas, memory=memory, tz=MSK)


def lead_values(**sources: Any) -> list[SourceValue]:
    """`field_N=(kind, value)` pairs, labelled like ERP_FIELD_MAP entries."""
    return [
        SourceValue(key, f"ERP_FIELD_MAP {key}", kind, value)
        for key, (kind, value) in sources.items()
    ]


DEFAULT = {"field_1039": ("text", "Заказ #1042"), "field_1040": ("number", Decimal(15000))}


def write(
    writer: RecordWriter, identity: RecordIdentity | None = None, **sources: Any
) -> WriteResult:
    values = lead_values(**(sources or DEFAULT))
    return writer.write(ENTITY, values, identity, what="lead 7")


def test_a_retry_after_a_lost_insert_answer_updates_with_the_lookup_field(fake) -> None:
    fake.fail_next("insert", requests.exceptions.ReadTimeout, after_effect=True)
    writer = writer_for(fake)
    identity = RecordIdentity("lead", LEAD, LOOKUP)
    # Attempt 1: lookup finds nothing, the insert lands, its answer is lost to a timeout.
    with pytest.raises(UpstreamUnavailable):
        write(writer, identity)
    # Inngest retries the step: the lookup now finds the record and updates it.
    result = write(writer, identity)
    assert result.action == "updated"
    assert len(fake.rows[70]) == 1 and len(fake.actions("insert")) == 1


def test_an_unknown_map_key_fails_before_the_update_instead_of_being_dropped(fake) -> None:
    # Rukovoditel's update ignores unknown keys and answers success (T8): check first.
    writer = writer_for(fake)
    identity = RecordIdentity("lead", LEAD, LOOKUP)
    write(writer, identity)
    with pytest.raises(ConfigError) as caught:
        write(writer, identity, field_1039=("text", "x"), field_9999=("text", "lost value"))
    message = caught.value.message
    assert "field_9999 is not a field of entity 70" in message
    assert "ERP_FIELD_MAP field_9999" in message and "erp fields --entity 70" in message
    assert fake.actions("update") == []
    assert not caught.value.retryable


def test_an_unknown_map_key_fails_before_the_insert(fake) -> None:
    with pytest.raises(ConfigError, match="field_9999 is not a field"):
        write(writer_for(fake), None, field_9999=("text", "x"))
    assert fake.actions("insert") == []


@pytest.mark.parametrize(
    ("sources", "words"),
    [
        ({"field_1030": ("id", 7)}, ["field_1030", "(id)", "filled by Rukovoditel"]),
        ({"field_1040": ("text", "Заказ")}, ["text source cannot fill numeric", "field_1040"]),
        ({"field_1042": ("timestamp", 1)}, ["timestamp source cannot fill", "field_1042"]),
        ({"field_1050": ("text", "Иванов")}, ["users", "not supported", "dropdown"]),
    ],
    ids=["system_field", "text_into_numeric", "timestamp_into_dropdown", "users_field"],
)
def test_targets_that_cannot_take_their_source_are_refused(fake, sources, words) -> None:
    fake.add_field(70, FakeField(1050, "users", "Ответственный"))
    with pytest.raises(ConfigError) as caught:
        write(writer_for(fake), None, **sources)
    for word in words:
        assert word in caught.value.message
    assert fake.actions("insert") == []


@pytest.mark.parametrize(
    ("field", "words"),
    [
        (1040, ["ERP_LEAD_ID_FIELD=1040", "input_numeric", "30000009.00"]),
        (1042, ["ERP_LEAD_ID_FIELD=1042", "dropdown", "text (input) field"]),
        (4242, ["ERP_LEAD_ID_FIELD=4242 is not a field of ERP entity 70"]),
    ],
    ids=["numeric", "dropdown", "missing"],
)
def test_a_lookup_field_that_is_not_a_text_input_is_refused_before_any_lookup(
    fake, field, words
) -> None:
    with pytest.raises(ConfigError) as caught:
        write(writer_for(fake), RecordIdentity("lead", LEAD, field))
    for word in words:
        assert word in caught.value.message
    assert [c["action"] for c in fake.calls] == ["get_entity_fields"]


def test_required_fields_must_be_covered_on_insert_but_not_on_update(fake) -> None:
    fake.add_field(70, FakeField(1043, "input", "Телефон", required=True))
    writer = writer_for(fake)
    identity = RecordIdentity("lead", LEAD, LOOKUP)
    with pytest.raises(ConfigError, match='field_1043 "Телефон" \\(input\\) is required and'):
        write(writer, identity)
    with pytest.raises(InputError, match="this record has no value"):
        write(writer, identity, **DEFAULT, field_1043=("text", None))
    assert fake.actions("insert") == []
    write(writer, identity, **DEFAULT, field_1043=("text", "+7 900"))
    # an update needs no required field: the record already has it
    result = write(writer, identity, field_1039=("text", "renamed"))
    assert result.action == "updated" and fake.rows[70][0]["field_1043"] == "+7 900"


def test_an_unknown_entity_fails_naming_erp_entity_id(fake) -> None:
    writer = writer_for(fake)
    with pytest.raises(UpstreamRejected) as caught:
        writer.write(9999, lead_values(**DEFAULT), None, what="lead 7")
    assert "Entity #9999 does not exist" in caught.value.message
    assert "ERP_ENTITY_ID" in caught.value.message
    assert fake.actions("insert") == []


def test_the_schema_is_read_once_per_ttl_and_choices_once_per_schema(fake) -> None:
    now = [1000.0]
    writer = writer_for(fake, ttl_s=600, clock=lambda: now[0])
    for name in ("a", "b", "c"):
        write(writer, None, field_1039=("text", name), field_1042=("text", "Новая"))
    assert len(fake.actions("get_entity_fields")) == 1
    assert len(fake.actions("get_field_choices")) == 1
    now[0] += 601
    write(writer, None, field_1039=("text", "d"))
    assert len(fake.actions("get_entity_fields")) == 2


def test_a_field_added_since_the_schema_was_cached_is_found_by_one_refresh(fake) -> None:
    now = [1000.0]
    writer = writer_for(fake, clock=lambda: now[0])
    write(writer)
    fake.add_field(70, FakeField(1043, "textarea", "Комментарий"))
    now[0] += 1  # within REFRESH_AFTER_SECONDS: a wrong map costs no extra request
    with pytest.raises(ConfigError):
        write(writer, None, field_1043=("text", "x"))
    now[0] += 10
    write(writer, None, field_1043=("text", "x"))
    assert len(fake.actions("get_entity_fields")) == 2
    assert fake.rows[70][-1]["field_1043"] == "x"


def test_a_server_without_get_entity_fields_writes_unchecked_as_before(fake) -> None:
    fake.legacy = True
    writer = writer_for(fake)
    first = write(writer, None, field_1039=("text", "x" * 300), field_1040=("number", None))
    write(writer, None, field_1039=("text", "y"))
    assert fake.rows[70][0]["field_1039"] == "x" * 255
    assert first.warnings == ["field_1039: text cut from 300 to 255 characters"]
    assert len(fake.actions("get_entity_fields")) == 1  # "unsupported" is cached too


# ---- typed values -------------------------------------------------------------------------------
def test_numbers_are_exact_decimals_and_read_back_formatted(fake) -> None:
    big = Decimal(2**60 + 1)
    write(writer_for(fake), None, field_1039=("text", "x"), field_1040=("number", big))
    assert fake.rows[70][0]["field_1040"] == "1152921504606846977"
    row = fake.shown(70, fake.rows[70][0])
    assert row["1040"] == "1152921504606846977.00"


def test_a_number_too_long_for_the_field_is_refused_not_cut(fake) -> None:
    with pytest.raises(InputError, match="301 digits"):
        write(writer_for(fake), None, field_1040=("number", Decimal("1e300")))
    assert fake.actions("insert") == []


def test_long_text_is_cut_to_255_and_the_cut_reported_textarea_keeps_it(fake) -> None:
    fake.add_field(70, FakeField(1043, "textarea", "Комментарий"))
    long = "Я" * 300
    result = write(writer_for(fake), None, field_1039=("text", long), field_1043=("text", long))
    assert fake.rows[70][0]["field_1039"] == "Я" * 255
    assert fake.rows[70][0]["field_1043"] == long
    assert result.as_output()["warnings"] == ["field_1039: text cut from 300 to 255 characters"]


@pytest.mark.parametrize(
    ("given", "stored"),
    [("69", "69"), ("В работе", "69"), ("  в  РАБОТЕ ", "69")],  # noqa: RUF001
)
def test_dropdown_takes_a_choice_id_or_its_label(fake, given, stored) -> None:
    write(writer_for(fake), None, field_1039=("text", "x"), field_1042=("text", given))
    assert fake.rows[70][0]["field_1042"] == stored
    assert fake.shown(70, fake.rows[70][0])["1042"] == "В работе"  # noqa: RUF001


def test_an_unknown_choice_is_refused_listing_the_valid_ones(fake) -> None:
    with pytest.raises(InputError) as caught:
        write(writer_for(fake), None, field_1039=("text", "x"), field_1042=("text", "Won"))
    assert "'Won' is not a choice" in caught.value.message
    assert '68 "Новая"' in caught.value.message and '69 "В работе"' in caught.value.message  # noqa: RUF001
    assert fake.actions("insert") == []


@pytest.mark.parametrize("given", ["Новая", "68"])
def test_an_inactive_choice_is_refused_listing_the_active_ones(fake, given) -> None:
    fake.entities[70].fields[1042].inactive = (68,)
    with pytest.raises(InputError) as caught:
        write(writer_for(fake), None, field_1039=("text", "x"), field_1042=("text", given))
    assert f'{given!r} is not a choice; valid: 69 "В работе"' in caught.value.message  # noqa: RUF001
    assert '"Новая"' not in caught.value.message.split("valid:")[1]
    assert fake.actions("insert") == []


def test_an_amocrm_id_is_refused_by_a_dropdown_even_when_choices_are_unreadable(fake) -> None:
    fake.admin = False  # before: the id went in unchecked and was stored as a wrong choice
    with pytest.raises(ConfigError) as caught:
        write(writer_for(fake), None, field_1039=("text", "x"), field_1042=("id", 142))
    assert "amoCRM ids are not choice ids" in caught.value.message
    assert fake.actions("insert") == []


def test_without_rights_to_read_choices_ids_pass_and_labels_are_refused(fake) -> None:
    fake.admin = False
    writer = writer_for(fake)
    write(writer, None, field_1039=("text", "x"), field_1042=("text", "69"))
    assert fake.rows[70][0]["field_1042"] == "69"
    with pytest.raises(InputError, match="administrators"):
        write(writer, None, field_1039=("text", "x"), field_1042=("text", "В работе"))  # noqa: RUF001


def test_dates_are_written_as_the_erp_reads_them(fake) -> None:
    fake.add_field(70, FakeField(1043, "input_date", "Создана"))
    fake.add_field(70, FakeField(1044, "input_datetime", "Закрыта"))
    # 2026-11-30 22:30 UTC is already December 1st in Moscow (ERP_TIMEZONE +03:00)
    write(
        writer_for(fake),
        None,
        field_1039=("text", "x"),
        field_1043=("timestamp", 1796077800),
        field_1044=("timestamp", 1796077800),
    )
    insert = fake.actions("insert")[0]["items"]
    assert (insert["field_1043"], insert["field_1044"]) == ("2026-12-01", "2026-12-01 01:30")
    shown = fake.shown(70, fake.rows[70][0])
    assert (shown["1043"], shown["1044"]) == ("12/01/2026", "12/01/2026 01:30")


def test_empty_values_never_blank_a_field_on_update(fake) -> None:
    writer = writer_for(fake)
    identity = RecordIdentity("lead", LEAD, LOOKUP)
    write(writer, identity)
    write(writer, identity, field_1039=("text", ""), field_1040=("number", None))
    assert fake.actions("update")[0]["data"] == {"field_1041": LEAD}
    assert fake.rows[70][0]["field_1039"] == "Заказ #1042"


# ---- one record without a lookup field: the record memory --------------------------------------
def test_without_lookup_field_the_store_remembers_the_record(fake, store) -> None:
    writer = writer_for(fake, store)
    identity = RecordIdentity("lead", "25399013")
    results = [write(writer, identity, field_1039=("text", f"v{n}")) for n in range(3)]
    assert [r.action for r in results] == ["inserted", "updated", "updated"]
    assert len(fake.rows[70]) == 1 and fake.rows[70][0]["field_1039"] == "v2"
    assert store.get("erp:record:70:lead:25399013") == json.dumps({"id": results[0].record_id})
    # 1 ERP request per write once the schema is warm
    assert [c["action"] for c in fake.calls[1:]] == ["insert", "update", "update"]


def test_a_remembered_record_deleted_in_the_erp_is_inserted_again(fake, store) -> None:
    writer = writer_for(fake, store)
    identity = RecordIdentity("lead", "7")
    first = write(writer, identity)
    fake.rows[70].clear()
    second = write(writer, identity)
    assert second.action == "inserted" and second.record_id != first.record_id
    assert store.get("erp:record:70:lead:7") == json.dumps({"id": second.record_id})


class CountingStore(FileStateStore):
    """A file store that counts reads, and can be told to fail them."""

    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self.reads = 0
        self.broken = False

    def get(self, key: str) -> str | None:
        self.reads += 1
        if self.broken:
            raise UpstreamUnavailable("kv", "KV is down")
        return super().get(key)


@pytest.fixture
def counting(tmp_path: Any) -> CountingStore:
    return CountingStore(tmp_path / "counted")


def test_setting_the_lookup_field_updates_the_record_memory_mode_wrote(fake, counting) -> None:
    first = write(writer_for(fake, counting), RecordIdentity("lead", LEAD))
    assert "field_1041" not in fake.rows[70][0]
    switched = writer_for(fake, counting)
    calls = len(fake.calls)

    result = write(switched, RecordIdentity("lead", LEAD, LOOKUP))

    assert (result.action, result.record_id) == ("updated", first.record_id)
    assert len(fake.rows[70]) == 1 and fake.rows[70][0]["field_1041"] == LEAD
    actions = [c["action"] for c in fake.calls[calls:] if c["action"] != "get_entity_fields"]
    assert actions == ["select", "update"]
    # From now on the lookup finds it: the store is not read again.
    reads = counting.reads
    assert write(switched, RecordIdentity("lead", LEAD, LOOKUP)).record_id == first.record_id
    assert counting.reads == reads and len(fake.rows[70]) == 1


def test_unsetting_the_lookup_field_updates_the_record_the_lookup_wrote(fake, store) -> None:
    first = write(writer_for(fake, store), RecordIdentity("lead", LEAD, LOOKUP))
    assert first.action == "inserted"

    result = write(writer_for(fake, store), RecordIdentity("lead", LEAD))

    assert (result.action, result.record_id) == ("updated", first.record_id)
    assert len(fake.rows[70]) == 1


def test_with_the_lookup_field_a_found_record_costs_no_store_read(fake, counting) -> None:
    writer = writer_for(fake, counting)
    write(writer, RecordIdentity("lead", LEAD, LOOKUP))
    reads = counting.reads
    for _ in range(3):
        assert write(writer, RecordIdentity("lead", LEAD, LOOKUP)).action == "updated"
    assert counting.reads == reads == 1


def test_a_remembered_record_gone_from_the_erp_is_inserted_with_the_lookup_field(
    fake, store
) -> None:
    write(writer_for(fake, store), RecordIdentity("lead", LEAD))
    fake.rows[70].clear()
    result = write(writer_for(fake, store), RecordIdentity("lead", LEAD, LOOKUP))
    assert result.action == "inserted" and fake.rows[70][0]["field_1041"] == LEAD
    assert store.get(f"erp:record:70:lead:{LEAD}") == json.dumps({"id": result.record_id})


def test_an_unreadable_store_does_not_stop_a_write_with_the_lookup_field(fake, counting) -> None:
    counting.broken = True
    result = write(writer_for(fake, counting), RecordIdentity("lead", LEAD, LOOKUP))
    assert result.action == "inserted" and len(fake.rows[70]) == 1


def test_a_record_id_that_cannot_be_remembered_is_reported_not_retried(fake) -> None:
    class BrokenStore(FileStateStore):
        def put(self, key: str, value: str, *, ttl_s: int | None = None) -> None:
            raise UpstreamUnavailable("kv", "KV is down")

    broken = BrokenStore(__import__("pathlib").Path("/nonexistent-prometei-test"))
    writer = RecordWriter(make_client(), SchemaCache(make_client()), memory=lambda: broken, tz=UTC)
    result = writer.write(ENTITY, lead_values(**DEFAULT), RecordIdentity("lead", "7"), what="x")
    assert result.action == "inserted"
    assert "could not be remembered" in result.warnings[-1] and "KV is down" in result.warnings[-1]
    assert len(fake.rows[70]) == 1


def test_a_lead_without_lookup_field_or_store_is_refused_before_any_write(fake) -> None:
    with pytest.raises(ConfigError) as caught:
        write(writer_for(fake), RecordIdentity("lead", "7"))
    assert "ERP_LEAD_ID_FIELD" in caught.value.message and "KV" in caught.value.message
    assert fake.actions("insert") == []


def test_a_deal_without_lookup_field_or_store_is_a_plain_insert(fake) -> None:
    result = write(writer_for(fake), RecordIdentity("deal", "shop-1"))
    assert result.action == "inserted" and len(fake.rows[70]) == 1


def test_memory_keys_are_safe_for_any_external_id() -> None:
    key = RecordIdentity("deal", "shop/1042#a@b").memory_key(70)
    assert key.startswith("erp:record:70:deal:h") and "/" not in key
    assert RecordIdentity("lead", "7").memory_key(25) == "erp:record:25:lead:7"


def test_settings_build_a_writer_with_the_configured_ttl_and_zone() -> None:
    from prometei.services import Services

    settings = settings_from_mapping(
        {
            "CRM_API_URL": ERP_URL,
            "CRM_API_KEY": "k",
            "CRM_API_USERNAME": "u",
            "CRM_API_PASSWORD": "p",
            "ERP_SCHEMA_TTL": "30",
            "ERP_TIMEZONE": "-05:00",
        }
    )
    services = Services(settings)
    assert services.erp_records.schemas is services.erp_schemas
    assert services.erp_schemas._ttl == 30
    assert services.erp_records._tz.utcoffset(None) == timedelta(hours=-5)
