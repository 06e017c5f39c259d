"""The keyset listing against a fake amoCRM that pages like the real one while leads change.

First the defect it replaces, reproduced at the fake: offset pages over "last updated" skip a
lead when another one is edited mid-run. Then the listing under the same edits (and many
more), in both readings of the undocumented range bounds, through a second crowded with more
leads than a page, and its cost in requests.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest
import responses

from prometei.amocrm.client import AmoCRMClient, LeadQuery
from prometei.amocrm.models import LeadSnapshot
from prometei.errors import UpstreamProtocolError
from prometei.sync.listing import Cursor, LeadFilter, LeadListing
from tests.fakes.amocrm import server_error
from tests.support.amo_listing import AMO_URL, BASE_TIME, Tokens, WiredAmo, fake_amo


@pytest.fixture
def wired() -> Iterator[WiredAmo]:
    with fake_amo() as wired:
        yield wired


def listed(listing: LeadListing, start: int = 0, wanted: LeadFilter | None = None) -> list:
    return [
        lead for batch in listing.batches(start, wanted or LeadFilter()) for lead in batch.leads
    ]


def versions(leads: list[LeadSnapshot]) -> list[tuple[int, int]]:
    return [(lead.id, lead.updated_at or 0) for lead in leads]


def test_offset_pages_skip_a_lead_when_another_is_edited_the_defect_at_the_fake(wired) -> None:
    """The issue's report, at the fake: 100 leads, pages of 10, lead 5 edited after page 2."""
    wired.add_leads(100)
    wired.amo.after_list = lambda n: wired.amo.touch(5) if n == 2 else None
    client = wired.client()
    seen: list[int] = []
    for page in range(1, 12):
        answer = client.list_leads(LeadQuery(order=("updated_at", "asc")), page=page, limit=10)
        seen += [lead.id for lead in answer.leads]
        if answer.next_page is None:
            break
    assert 21 not in seen  # shifted from page 3 onto page 2 after it had been read
    assert seen.count(5) == 2
    assert len(seen) == 100


@pytest.mark.parametrize("exclusive_bounds", [False, True], ids=["inclusive", "exclusive"])
def test_every_lead_is_listed_while_managers_edit_leads(wired, exclusive_bounds) -> None:
    wired.add_leads(100)
    wired.amo.exclusive_updated_range = exclusive_bounds
    edits = random.Random(13)
    edited: list[int] = []

    def manager_at_work(answer: int) -> None:
        # After every list answer someone edits a lead: listed already or not yet.
        lead_id = edits.randint(1, 100)
        wired.amo.touch(lead_id, name=f"edited after answer {answer}")
        edited.append(lead_id)

    wired.amo.after_list = manager_at_work
    listing = LeadListing(wired.client(), page_size=10)

    got = versions(listed(listing))

    assert {lead_id for lead_id, _ in got} == set(range(1, 101))  # nobody skipped
    assert len(got) == len(set(got))  # no lead version handed out twice
    assert got == sorted(got, key=lambda v: (v[1], v[0]))  # oldest first
    assert edited, "nothing was edited during the run"
    # A lead edited before the listing reached its new time is listed in its new version.
    final = {lead.id: lead.updated_at for lead in wired.amo.leads.values()}
    newest_listed = max(updated for _, updated in got)
    for lead_id, updated in final.items():
        if updated <= newest_listed:
            assert (lead_id, updated) in got


def crowded_account(wired: WiredAmo) -> None:
    """Leads 1-5 (seconds 0..4), 100-134 all updated at second 10 (more than a page of 10),
    then 200-202 at seconds 11..13."""
    wired.add_leads(5)
    crowded = BASE_TIME + 10
    for lead_id in range(100, 135):
        wired.amo.add_lead(lead_id, updated_at=crowded)
    wired.add_leads(3, first=200, spacing=1)
    for n, lead_id in enumerate(range(200, 203)):
        wired.amo.touch_at(lead_id, crowded + 1 + n)


@pytest.mark.parametrize("exclusive_bounds", [False, True], ids=["inclusive", "exclusive"])
def test_a_second_crowded_with_more_leads_than_a_page_is_listed_whole(
    wired, exclusive_bounds
) -> None:
    wired.amo.exclusive_updated_range = exclusive_bounds
    crowded_account(wired)
    # While the crowded second is listed by id, one of its leads is edited (it leaves the
    # second, the id pages shift): the next pass notices and lists again.
    wired.amo.after_list = lambda n: wired.amo.touch(110) if n == 4 else None
    listing = LeadListing(wired.client(), page_size=10)

    got = versions(listed(listing))
    ids = {lead_id for lead_id, _ in got}

    assert ids == set(range(1, 6)) | set(range(100, 135)) | set(range(200, 203))
    assert (110, wired.amo.leads[110].updated_at) in got  # its new version, later
    assert len(got) == len(set(got))  # the second pass hands out nothing twice
    assert listing.inclusive is not exclusive_bounds  # learnt from the answers


@pytest.mark.parametrize("exclusive_bounds", [False, True], ids=["inclusive", "exclusive"])
def test_leads_deleted_while_listing_leave_the_list_and_skip_nobody(
    wired, exclusive_bounds
) -> None:
    """amoCRM lists deleted leads only under `with=only_deleted` (reference §3.1), so a lead
    deleted mid-run leaves the list: by-updated pages cannot shift, by-id pages can."""
    wired.amo.exclusive_updated_range = exclusive_bounds
    crowded_account(wired)
    deletions = {1: (130, 201), 3: (101,)}  # after answer 3 (the first by-id page) ids shift
    wired.amo.after_list = lambda n: [wired.amo.delete_lead(i) for i in deletions.get(n, ())]
    listing = LeadListing(wired.client(), page_size=10)

    got = versions(listed(listing))
    ids = [lead_id for lead_id, _ in got]

    gone_before_listed = {130, 201}
    assert set(ids) == (set(range(1, 6)) | set(range(100, 135)) | {200, 202}) - gone_before_listed
    assert 101 in ids  # listed before it was deleted, and once
    assert 110 in ids  # shifted onto the by-id page already read: the second pass has it
    assert len(ids) == len(set(ids))


def test_a_thousand_leads_cost_five_requests_and_a_quiet_account_one(wired) -> None:
    wired.add_leads(1000)
    listing = LeadListing(wired.client(), page_size=250)

    got = listed(listing)

    assert len(got) == 1000
    assert listing.requests <= 5  # one per 250 leads (the boundary second comes again), + 1
    newest = max(lead.updated_at or 0 for lead in got)
    quiet = LeadListing(wired.client(), page_size=250)
    again = list(quiet.batches(newest, LeadFilter()))
    assert quiet.requests == 1
    assert [lead.id for batch in again for lead in batch.leads] == [1000]


def test_several_stages_are_asked_by_pipeline_and_checked_here(wired) -> None:
    wired.add_leads(6, pipeline_id=77, status_id=142)
    for lead_id in (2, 4):
        wired.amo.leads[lead_id].status_id = 143
    wired.amo.leads[6].status_id = 999
    wanted = LeadFilter(pipeline_id=77, status_ids=(142, 143))
    listing = LeadListing(wired.client())

    got = listed(listing, wanted=wanted)

    [request] = wired.amo.log
    assert request.query["filter[pipeline_id]"] == ["77"]
    assert not any(key.startswith("filter[statuses]") for key in request.query)
    assert [lead.id for lead in got if wanted.wants(lead)] == [1, 2, 3, 4, 5]
    one = LeadFilter(pipeline_id=77, status_ids=(142,))
    LeadListing(wired.client()).batches(0, one).__next__()
    assert wired.amo.log[-1].query["filter[statuses][0][status_id]"] == ["142"]


def test_an_amocrm_504_halves_the_page_and_the_listing_goes_on(wired) -> None:
    wired.add_leads(30)
    wired.amo.fail_next(server_error(504))
    listing = LeadListing(wired.client(), page_size=100, sleep=wired.clock.sleep)

    assert len(listed(listing)) == 30
    assert listing.page_size == 50
    assert [entry.query["limit"] for entry in wired.amo.log] == [["100"], ["50"]]


def _static_page(leads: list[dict], *, more: bool) -> dict:
    links = {"self": {"href": "..."}, **({"next": {"href": "..."}} if more else {})}
    return {"_page": 1, "_links": links, "_embedded": {"leads": leads}}


@pytest.mark.parametrize(
    ("stamps", "problem"),
    [
        ([BASE_TIME + 2, BASE_TIME + 1], "did not sort the leads by updated_at"),
        ([BASE_TIME, BASE_TIME], "ignored filter[updated_at][from]"),
    ],
)
def test_an_answer_that_ignores_the_query_stops_the_listing(stamps, problem) -> None:
    leads = [{"id": n + 1, "updated_at": stamp} for n, stamp in enumerate(stamps)]
    with responses.RequestsMock() as mock:
        mock.get(AMO_URL, json=_static_page(leads, more=True))
        client = AmoCRMClient(Tokens(), expected_subdomain="example")
        listing = LeadListing(client, page_size=2)
        with pytest.raises(UpstreamProtocolError, match=re.escape(problem)) as caught:
            listed(listing, start=BASE_TIME + 100)
    assert not caught.value.retryable
    assert listing.requests == 1  # stopped at once: no loop over the same answer


@pytest.mark.parametrize(
    ("ignored", "problem"),
    [
        ("filter[updated_at]", "ignored filter[updated_at]"),
        ("order", "did not sort the leads by updated_at"),
    ],
)
def test_an_account_that_ignores_the_assumed_time_filter_or_order_stops_the_listing(
    wired, ignored, problem
) -> None:
    """`filter[updated_at]` and `order[...]` come from Kommo's public pages, not from our
    reference (it documents `limit` and `page`). An account that ignores them is caught
    within a few requests, before anything is skipped or listed in a loop."""
    for n in range(30):  # ids run against time: id order is not time order
        wired.amo.add_lead(100 - n, updated_at=BASE_TIME + n)
    wired.amo.ignored_list_params = {ignored}
    listing = LeadListing(wired.client(), page_size=10)

    with pytest.raises(UpstreamProtocolError, match=re.escape(problem)) as caught:
        listed(listing, start=BASE_TIME + 5)

    assert not caught.value.retryable
    assert listing.requests <= 3
    assert any(key.startswith(ignored) for key in wired.amo.log[0].query)  # asked, ignored


@pytest.mark.parametrize(
    ("ignored", "wanted"),
    [
        ("filter[pipeline_id]", LeadFilter(pipeline_id=77)),
        ("filter[statuses]", LeadFilter(pipeline_id=77, status_ids=(142,))),
    ],
)
def test_an_account_that_ignores_the_pipeline_or_stage_filter_still_lists_the_right_leads(
    wired, ignored, wanted
) -> None:
    wired.add_leads(20, pipeline_id=77)
    for lead_id in range(1, 21, 2):
        wired.amo.leads[lead_id].pipeline_id = 88
    wired.amo.leads[2].status_id = 143
    wired.amo.ignored_list_params = {ignored}

    got = listed(LeadListing(wired.client(), page_size=5), wanted=wanted)

    assert any(key.startswith(ignored) for key in wired.amo.log[0].query)  # asked, ignored
    assert len(got) == 20  # every lead of the account came back
    expected = [n for n in range(2, 21, 2) if wanted.status_ids == () or n != 2]
    assert [lead.id for lead in got if wanted.wants(lead)] == expected  # dropped here


def test_cursor_covers_the_leads_behind_it() -> None:
    cursor = Cursor(100, frozenset({7}))
    lead = LeadSnapshot(id=7, updated_at=100)
    assert cursor.covers(LeadSnapshot(id=1, updated_at=99))
    assert cursor.covers(lead) and not cursor.covers(LeadSnapshot(id=8, updated_at=100))
    assert cursor.past(LeadSnapshot(id=8, updated_at=100)) == Cursor(100, frozenset({7, 8}))
    assert cursor.past(LeadSnapshot(id=2, updated_at=101)) == Cursor(101, frozenset({2}))
    assert Cursor.from_json(cursor.as_json()) == cursor
    assert Cursor.from_json({"second": "x"}) is None
