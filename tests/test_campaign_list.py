"""The workspace's campaign list: filter, sort, paginate, htmx partial, empty states."""

import re

import pytest

from campaigns.models import Campaign, Role
from campaigns.views import CAMPAIGNS_PER_PAGE


@pytest.fixture
def ws(make_workspace, make_user):
    owner = make_user("owner")
    return make_workspace("Acme", owner=owner), owner


def names(response):
    pattern = r'<td><a href="/w/[^"]+/campaigns/\d+/">([^<]+)</a></td>'
    return re.findall(pattern, response.content.decode())


def test_filters_by_name_status_and_type(ws, make_campaign, client_for):
    workspace, owner = ws
    make_campaign(workspace, "Black Friday", status="sent")
    make_campaign(workspace, "Black Friday reminder", status="draft")
    make_campaign(workspace, "Welcome series", kind="scenario", status="sent")
    client = client_for(owner)
    url = f"/w/{workspace.slug}/campaigns/"
    black = sorted(names(client.get(url, {"q": "black"})))
    assert black == ["Black Friday", "Black Friday reminder"]
    assert names(client.get(url, {"q": "black", "status": "sent"})) == ["Black Friday"]
    assert names(client.get(url, {"kind": "scenario"})) == ["Welcome series"]
    # A hand-edited URL with an unknown status is ignored rather than failing the page.
    assert len(names(client.get(url, {"status": "nonsense"}))) == 3


def test_sorts_by_name_and_age(ws, make_campaign, client_for):
    workspace, owner = ws
    for name in ["Bravo", "Alpha", "Charlie"]:
        make_campaign(workspace, name)
    client = client_for(owner)
    url = f"/w/{workspace.slug}/campaigns/"
    assert names(client.get(url, {"sort": "name"})) == ["Alpha", "Bravo", "Charlie"]
    assert names(client.get(url, {"sort": "-name"})) == ["Charlie", "Bravo", "Alpha"]
    assert names(client.get(url, {"sort": "oldest"})) == ["Bravo", "Alpha", "Charlie"]
    assert names(client.get(url)) == ["Charlie", "Alpha", "Bravo"]  # newest first


def test_paginates_and_keeps_the_filters_in_page_links(ws, make_campaign, client_for):
    workspace, owner = ws
    total = CAMPAIGNS_PER_PAGE + 5
    for i in range(total):
        make_campaign(workspace, f"Promo {i:02d}")
    client = client_for(owner)
    url = f"/w/{workspace.slug}/campaigns/"
    first = client.get(url, {"q": "promo", "sort": "name"})
    assert len(names(first)) == CAMPAIGNS_PER_PAGE
    assert "?q=promo&amp;sort=name&amp;page=2" in first.content.decode()
    second = client.get(url, {"q": "promo", "sort": "name", "page": 2})
    assert names(second) == [f"Promo {i:02d}" for i in range(CAMPAIGNS_PER_PAGE, total)]
    assert f"{total} campaigns" in second.content.decode()


def test_htmx_request_gets_only_the_table_partial(ws, make_campaign, client_for):
    workspace, owner = ws
    make_campaign(workspace, "Only one")
    client = client_for(owner)
    full = client.get(f"/w/{workspace.slug}/campaigns/")
    partial = client.get(f"/w/{workspace.slug}/campaigns/", headers={"HX-Request": "true"})
    assert b"<html" in full.content and b'id="campaign-table"' in full.content
    assert b"<html" not in partial.content and b"Only one" in partial.content


def test_list_page_query_count_does_not_grow_with_campaigns(
    ws, make_campaign, client_for, django_assert_max_num_queries
):
    workspace, owner = ws
    for i in range(15):
        make_campaign(workspace, f"C{i}")
    client = client_for(owner)
    with django_assert_max_num_queries(8):
        assert client.get(f"/w/{workspace.slug}/campaigns/").status_code == 200


def test_empty_states_say_what_to_do_next(ws, add_member, make_campaign, client_for):
    workspace, owner = ws
    page = client_for(owner).get(f"/w/{workspace.slug}/campaigns/").content.decode()
    assert "No campaigns yet" in page and "New campaign" in page
    viewer = client_for(add_member(workspace, Role.VIEWER))
    page = viewer.get(f"/w/{workspace.slug}/campaigns/").content.decode()
    assert "No campaigns yet" in page and "analyst or owner" in page
    make_campaign(workspace, "Something")
    page = viewer.get(f"/w/{workspace.slug}/campaigns/", {"q": "zzz"}).content.decode()
    assert "No campaign matches these filters" in page and "Clear the filters" in page


def test_campaign_detail_shows_the_campaign(ws, make_campaign, client_for):
    workspace, owner = ws
    campaign = make_campaign(workspace, "Detail me", kind=Campaign.Kind.SCENARIO)
    page = client_for(owner).get(campaign.get_absolute_url()).content.decode()
    assert "Detail me" in page and "Scenario" in page
