"""The click-map page (test client): every selector parses, the numbers are the query
module's, bad input falls back with a message, and the htmx partial stays in step."""

import re

import pytest
from django.urls import reverse
from django_scopes import scope, scopes_disabled

from campaigns.models import Campaign, Customer, Role
from clickmap import metrics
from clickmap.dashboard import Selection, link_rows, shown_version
from clickmap.demo import seed_demo


@pytest.fixture
def demo(db):
    login = seed_demo("pw-for-tests-123", customers=150, render_previews=False)
    with scopes_disabled():
        campaign = Campaign.objects.get(name__startswith="Black Friday")
        scenario = Campaign.objects.get(name="Welcome series")
    return login.workspace, campaign, scenario


@pytest.fixture
def client(demo, client_for):
    from django.contrib.auth import get_user_model

    return client_for(get_user_model().objects.get(username="demo"))


def page_url(workspace, campaign):
    return reverse("clickmap:page", args=[workspace.slug, campaign.pk])


def table_rows(html):
    """(total, unique, rate) of each link row, in page order."""
    return [
        (int(t.replace(",", "")), int(u.replace(",", "")), float(r))
        for t, u, r in re.findall(r"<td>([\d,]+)</td><td>([\d,]+)</td><td>([\d.]+) %</td>", html)
    ]


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"metric": "unique"},
        {"metric": "total", "reliable": "1"},
        {"metric": "share", "device": "mobile"},
        {"view": "mobile"},
        {"from": "2000-01-01", "to": "2100-01-01"},
        {"palette": "colourblind"},
    ],
)
def test_numbers_in_the_page_are_the_query_modules(demo, client, query):
    workspace, campaign, _ = demo
    html = client.get(page_url(workspace, campaign), query).content.decode()
    with scope(workspace=workspace):
        selection = Selection.from_query(campaign, query)
        rows = link_rows(selection, shown_version(selection))
        totals = metrics.email_totals(selection.scope())
    assert table_rows(html) == [(r.total, r.unique, round(r.rate, 2)) for r in rows]
    assert f"<span>Clickers</span><strong>{totals.clickers:,}</strong>" in html
    assert any(r.total for r in rows), "the demo has clicks"


def test_mobile_preview_changes_the_picture_not_the_numbers(demo, client):
    workspace, campaign, _ = demo
    desktop = client.get(page_url(workspace, campaign)).content.decode()
    mobile = client.get(page_url(workspace, campaign), {"view": "mobile"}).content.decode()
    assert table_rows(desktop) == table_rows(mobile)


def test_reliable_only_removes_bot_clicks_from_every_number(demo, client):
    workspace, campaign, _ = demo
    everything = table_rows(client.get(page_url(workspace, campaign)).content.decode())
    reliable = table_rows(
        client.get(page_url(workspace, campaign), {"reliable": "1"}).content.decode()
    )
    assert sum(r[0] for r in reliable) < sum(r[0] for r in everything)


def test_scenario_shows_each_email_and_the_amp_format(demo, client):
    workspace, _, scenario = demo
    with scopes_disabled():
        nodes = list(scenario.nodes.order_by("position"))
    html = client.get(page_url(workspace, scenario), {"node": nodes[2].pk}).content.decode()
    assert f'<option value="{nodes[2].pk}" selected>3. Invite your team' in html
    first = client.get(page_url(workspace, scenario), {"format": "amp"}).content.decode()
    assert 'value="amp" checked' in first
    assert "Start shopping" in first  # the AMP part's link


def test_preview_for_a_customer_shows_their_own_clicks(demo, client):
    workspace, campaign, _ = demo
    with scopes_disabled():
        customer = Customer.objects.filter(
            deliveries__node__campaign=campaign, deliveries__variant__name="A"
        ).first()
    html = client.get(page_url(workspace, campaign), {"for": customer.email}).content.decode()
    assert f"Showing <strong>{customer.email}</strong>" in html
    with scope(workspace=workspace):
        selection = Selection.from_query(campaign, {"for": customer.email})
        assert selection.customer == customer
        mine = link_rows(selection, shown_version(selection))
    assert table_rows(html) == [(r.total, r.unique, round(r.rate, 2)) for r in mine]


def test_unknown_customer_and_bad_dates_say_so_and_fall_back(demo, client):
    workspace, campaign, _ = demo
    html = client.get(
        page_url(workspace, campaign), {"for": "nobody@nowhere.test", "from": "yesterday"}
    ).content.decode()
    assert "No customer with the email address or cookie id" in html
    assert "is not a date" in html
    assert table_rows(html) == table_rows(
        client.get(page_url(workspace, campaign)).content.decode()
    )


def test_htmx_swap_returns_the_partial_with_the_same_numbers(demo, client):
    workspace, campaign, _ = demo
    full = client.get(page_url(workspace, campaign), {"metric": "total"}).content.decode()
    partial = client.get(
        page_url(workspace, campaign), {"metric": "total"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert "<html" in full and "<html" not in partial
    assert table_rows(full) == table_rows(partial)


def test_who_clicked_lists_customers_and_exports_them(demo, client):
    workspace, campaign, _ = demo
    with scope(workspace=workspace):
        selection = Selection.from_query(campaign, {})
        top = link_rows(selection, shown_version(selection))[0]
    url = reverse("clickmap:clickers", args=[workspace.slug, campaign.pk, top.link.pk])
    html = client.get(url).content.decode()
    assert f"{top.unique} customer" in html
    csv = b"".join(client.get(url, {"export": "csv"}).streaming_content).decode()
    assert len(csv.strip().splitlines()) == top.unique + 1


def test_viewer_sees_the_click_map(demo, add_member, client_for):
    workspace, campaign, _ = demo
    viewer = client_for(add_member(workspace, Role.VIEWER))
    assert viewer.get(page_url(workspace, campaign)).status_code == 200
