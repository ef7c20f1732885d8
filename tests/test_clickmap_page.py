"""The click-map page (test client): every selector parses, every number on the page is a
recount of the raw clicks (tests/clickmap_truth.py, not the query module), bad input
falls back with a message, and the defects found by a new user stay fixed."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.templatetags.static import static
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_scopes import scope, scopes_disabled
from lxml import html as lxml_html

from campaigns.models import (
    Campaign,
    Customer,
    Delivery,
    EmailNode,
    Role,
    Segment,
    TemplateLink,
    Variant,
)
from clickmap.models import Preview
from clickmap.previews import preview_document, sample_customer
from clickmap.rollups import aggregate
from tests.clickmap_truth import recount
from tests.demo_world import number, page_table, page_url, summary, variant_named
from tracking.models import ClickEvent, EventChange, Unsubscribe


def assert_page_is_the_recount(html, truth):
    shown = page_table(html)
    assert shown, "the page lists the links"
    assert set(shown) == set(truth.rows)
    for link_id, (_rank, total, unique, rate, share) in shown.items():
        want = truth.rows[link_id]
        assert (total, unique) == (want.total, want.unique), link_id
        assert rate == pytest.approx(want.rate, abs=0.006), link_id
        assert share == pytest.approx(want.share, abs=0.06), link_id
    numbers = summary(html)
    assert number(numbers["Clickers"]) == truth.clickers
    assert number(numbers["Delivered"]) == truth.delivered
    assert number(numbers["CTR"]) == pytest.approx(truth.ctr, abs=0.006)


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"metric": "unique"},
        {"metric": "total", "reliable": "1"},
        {"metric": "share", "device": "mobile"},
        {"view": "mobile"},
        {"from": "2000-01-01", "to": "2100-01-01"},
        {"palette": "colourblind", "display": "colours"},
        {"segment": "Germany", "reliable": "1"},
    ],
)
def test_every_number_on_the_page_is_a_recount_of_the_raw_clicks(demo, client, query):
    workspace, campaign, _ = demo
    segment = None
    if "segment" in query:
        with scopes_disabled():
            segment = Segment.objects.get(workspace=workspace, name=query["segment"])
        query = {**query, "segment": segment.pk}
    html = client.get(page_url(workspace, campaign), query).content.decode()
    a = variant_named(campaign, "A")
    with scopes_disabled():
        truth = recount(
            [a.pk],
            reliable="reliable" in query,
            device=query.get("device"),
            segment=segment,
        )
    if not query:
        assert truth.total_clicks, "the demo has clicks"
    assert_page_is_the_recount(html, truth)


def test_a_period_counts_the_clicks_of_its_days_only(demo, client):
    workspace, campaign, _ = demo
    with scopes_disabled():
        a = variant_named(campaign, "A")
        first = ClickEvent.objects.filter(delivery__variant=a).order_by("at")[0]
        late = ClickEvent.objects.create(  # a late click, three days after the first
            event_id=uuid.uuid4(),
            workspace=workspace,
            delivery=first.delivery,
            link=first.link,
            url=first.url,
            at=first.at + timedelta(days=3),
            device="mobile",
        )
        EventChange.objects.create(kind="c", delivery=late.delivery, link=late.link)
    aggregate()
    day = first.at.date()
    html = client.get(
        page_url(workspace, campaign), {"from": day.isoformat(), "to": day.isoformat()}
    ).content.decode()
    with scopes_disabled():
        truth = recount([variant_named(campaign, "A").pk], date_from=day, date_to=day)
        everything = recount([variant_named(campaign, "A").pk])
    assert 0 < truth.total_clicks < everything.total_clicks
    assert_page_is_the_recount(html, truth)


# --- Variants ------------------------------------------------------------------------------


@pytest.fixture
def subject_test(demo):
    """Two variants of one template version (a subject-line test), both clicked."""
    workspace, campaign, _ = demo
    with scope(workspace=workspace):
        version = variant_named(campaign, "A").template_version
        test = Campaign.objects.create(workspace=workspace, name="Subject line test")
        node = EmailNode.objects.create(campaign=test, name="Email", position=1)
        a = Variant.objects.create(node=node, name="A", subject="One", template_version=version)
        b = Variant.objects.create(node=node, name="B", subject="Two", template_version=version)
        people = list(Customer.objects.order_by("pk")[:40])
        links = list(TemplateLink.objects.filter(version=version, mso=False).order_by("ordinal"))
        for i, person in enumerate(people):
            variant = (a, b)[i % 2]
            delivery = Delivery.objects.create(
                workspace=workspace,
                node=node,
                variant=variant,
                customer=person,
                template_version=version,
                status="sent",
                sent_at=timezone.now() - timedelta(days=2),
            )
            for n in range(i % 4):
                link = links[(i + n) % len(links)]
                ClickEvent.objects.create(
                    event_id=uuid.uuid4(),
                    workspace=workspace,
                    delivery=delivery,
                    link=link,
                    url=link.href,
                    at=timezone.now() - timedelta(days=1, minutes=i),
                    device="desktop",
                )
                EventChange.objects.create(kind="c", delivery=delivery, link=link)
    aggregate()
    return test, a, b


def test_all_variants_is_offered_for_variants_of_one_version_and_sums_them(
    demo, client, subject_test
):
    workspace = demo[0]
    test, a, b = subject_test
    html = client.get(page_url(workspace, test)).content.decode()
    assert '<option value="">All variants (A + B)</option>' in html
    with scopes_disabled():
        both = recount([a.pk, b.pk])
        only_a = recount([a.pk])
    assert both.total_clicks > only_a.total_clicks > 0
    assert_page_is_the_recount(html, both)


def test_variants_of_different_templates_are_shown_one_at_a_time(demo, client):
    workspace, campaign, _ = demo
    html = client.get(page_url(workspace, campaign), {"variant": ""}).content.decode()
    assert "All variants" not in html
    assert "one variant is shown at a time" in html
    a, b = variant_named(campaign, "A"), variant_named(campaign, "B")
    with scopes_disabled():
        assert_page_is_the_recount(html, recount([a.pk]))
        b_links = set(
            TemplateLink.objects.filter(version=b.template_version, mso=False).values_list(
                "pk", flat=True
            )
        )
    html_b = client.get(page_url(workspace, campaign), {"variant": b.pk}).content.decode()
    with scopes_disabled():
        assert_page_is_the_recount(html_b, recount([b.pk]))
    assert set(page_table(html_b)) <= b_links  # B's own links, with B's numbers


def test_an_amp_variant_shows_its_own_format_whatever_the_format_asked(demo, client):
    workspace, _, scenario = demo
    amp = variant_named(scenario, "AMP")
    html = client.get(
        page_url(workspace, scenario), {"variant": amp.pk, "format": "html"}
    ).content.decode()
    assert "This email has no links" not in html
    assert number(summary(html)["Sent"]) > 0
    with scopes_disabled():
        assert_page_is_the_recount(html, recount([amp.pk], "amp"))
    assert "Start shopping" in html


def test_the_format_switch_shows_that_format_s_variants(demo, client):
    workspace, _, scenario = demo
    html = client.get(page_url(workspace, scenario)).content.decode()
    tree = lxml_html.fromstring(html)
    (amp_link,) = [a for a in tree.cssselect("nav.segmented a") if a.text_content() == "AMP"]
    html = client.get(amp_link.get("href")).content.decode()
    assert "Start shopping" in html
    with scopes_disabled():
        assert_page_is_the_recount(html, recount([variant_named(scenario, "AMP").pk], "amp"))


# --- Preview for, sample customer ----------------------------------------------------------


def test_preview_for_a_customer_shows_their_own_clicks(demo, client):
    workspace, campaign, _ = demo
    with scopes_disabled():
        customer = Customer.objects.filter(
            deliveries__node__campaign=campaign,
            deliveries__variant__name="A",
            deliveries__in=Delivery.objects.filter(pk__in=ClickEvent.objects.values("delivery_id")),
        ).first()
    html = client.get(page_url(workspace, campaign), {"for": customer.email}).content.decode()
    assert f"Showing <strong>{customer.email}</strong>" in html
    with scopes_disabled():
        truth = recount([variant_named(campaign, "A").pk], customer=customer)
    assert truth.clickers == 1
    assert_page_is_the_recount(html, truth)


def test_preview_for_someone_who_never_received_the_email_says_so(demo, client):
    workspace, campaign, scenario = demo
    with scope(workspace=workspace):
        stranger = Customer.objects.create(
            workspace=workspace, external_id="stranger", email="stranger@example.test"
        )
    html = client.get(page_url(workspace, campaign), {"for": stranger.email}).content.decode()
    assert "stranger@example.test did not receive this email" in html
    assert "Showing <strong>" not in html
    with scopes_disabled():
        assert_page_is_the_recount(html, recount([variant_named(campaign, "A").pk]))


def test_unknown_customer_and_bad_dates_say_so_and_fall_back(demo, client):
    workspace, campaign, _ = demo
    html = client.get(
        page_url(workspace, campaign), {"for": "nobody@nowhere.test", "from": "yesterday"}
    ).content.decode()
    assert "No customer with the email address or cookie id" in html
    assert "is not a date" in html
    assert page_table(html) == page_table(
        client.get(page_url(workspace, campaign)).content.decode()
    )


# --- Empty states and the period -----------------------------------------------------------


def test_an_empty_period_says_so_and_every_figure_follows_it(demo, client):
    workspace, campaign, _ = demo
    with scopes_disabled():
        assert Unsubscribe.objects.filter(delivery__node__campaign=campaign).exists()
    html = client.get(
        page_url(workspace, campaign), {"from": "2001-01-01", "to": "2001-01-31"}
    ).content.decode()
    assert "No clicks in this period" in html
    numbers = summary(html)
    for figure in ("Clickers", "Unique opens", "Unsubscribes", "CTR", "CTOR"):
        assert number(numbers[figure]) == 0, figure
    assert all(row[1:] == (0, 0, 0.0, 0.0) for row in page_table(html).values())


def test_unsubscribes_are_counted_in_the_period_they_happened(demo, client):
    workspace, campaign, _ = demo
    month_ago = timezone.now() - timedelta(days=30)
    with scopes_disabled():
        deliveries = Delivery.objects.filter(variant=variant_named(campaign, "A"), status="sent")
        for delivery in deliveries.exclude(pk__in=Unsubscribe.objects.values("delivery_id"))[:2]:
            Unsubscribe.objects.create(
                workspace=workspace,
                delivery=delivery,
                customer_id=delivery.customer_id,
                method="page",
                at=month_ago,
            )
        total = Unsubscribe.objects.filter(delivery__in=deliveries).count()
    day = month_ago.date().isoformat()
    inside = client.get(page_url(workspace, campaign), {"from": day, "to": day}).content.decode()
    everything = client.get(page_url(workspace, campaign)).content.decode()
    assert number(summary(inside)["Unsubscribes"]) == 2
    assert number(summary(everything)["Unsubscribes"]) == total > 2


def test_a_campaign_without_clicks_says_so(demo, client):
    workspace, campaign, _ = demo
    with scopes_disabled():
        ClickEvent.objects.filter(delivery__node__campaign=campaign).delete()
        EventChange.objects.all().delete()
    from django.core.management import call_command

    call_command("recompute")
    html = client.get(page_url(workspace, campaign)).content.decode()
    assert "No clicks yet" in html


# --- The legend, the list, the charts ------------------------------------------------------

# What each palette's band swatches look like, named by hand from their hex colours.
SWATCH_NAMES = {
    "classic": ["Red", "Orange", "Yellow", "Green", "Blue"],
    "colourblind": ["Purple", "Blue", "Teal", "Green", "Yellow"],  # viridis
}


@pytest.mark.parametrize("palette", ["classic", "colourblind"])
def test_the_legend_names_the_colour_each_swatch_shows(demo, client, palette):
    workspace, campaign, _ = demo
    html = client.get(page_url(workspace, campaign), {"palette": palette}).content.decode()
    tree = lxml_html.fromstring(html)
    items = tree.cssselect("ol.legend li")
    labels = [li.text_content().split(":")[0].strip() for li in items[:-1]]
    bands = [li.cssselect(".swatch")[0].get("class").split("band-")[1] for li in items[:-1]]
    order = ["red", "orange", "yellow", "green", "blue"]
    assert labels == [SWATCH_NAMES[palette][order.index(band)] for band in bands]
    assert labels


@pytest.mark.parametrize(
    "sort", ["rank", "position", "text", "total", "unique", "rate", "share", "-total", "-position"]
)
def test_the_link_list_sorts_by_each_column_and_by_position(demo, client, sort):
    workspace, campaign, _ = demo
    html = client.get(page_url(workspace, campaign), {"sort": sort}).content.decode()
    tree = lxml_html.fromstring(html)
    rows = tree.cssselect("table.links tbody tr[id^=row-a-]")
    cells = [[td.text_content().strip() for td in tr.cssselect("td")] for tr in rows]
    key = sort.lstrip("-")
    column = {"rank": 0, "position": 2, "total": 3, "unique": 4, "rate": 5, "share": 6}
    if key == "text":
        values = [c[1].split("\n")[0].strip().casefold() for c in cells]
        assert values == sorted(values)
    else:
        values = [number(c[column[key]]) for c in cells]
        ascending = key in ("rank", "position")
        if sort.startswith("-"):
            ascending = not ascending
        assert values == sorted(values, reverse=not ascending)
    assert len(values) > 3
    header = tree.cssselect(f"table.links th.col-{key}")[0]
    assert header.get("aria-sort") in ("ascending", "descending")


def test_charts_have_axis_values_and_link_names(demo, client):
    workspace, campaign, _ = demo
    html = client.get(page_url(workspace, campaign)).content.decode()
    tree = lxml_html.fromstring(html)
    per_link, per_day = tree.cssselect("svg.chart")
    names = [t.text_content() for t in per_link.cssselect("text.tick")]
    with scopes_disabled():
        top = max(recount([variant_named(campaign, "A").pk]).rows.values(), key=lambda r: r.total)
        text = TemplateLink.objects.get(pk=top.link).text
    assert any(text[:20] in name for name in names), names
    assert str(top.total) in names  # the bar's value
    assert "0" in names  # the value axis starts at 0
    day_ticks = [t.text_content() for t in per_day.cssselect("text.tick")]
    assert "0" in day_ticks and any(len(t) == 6 and t[2] == " " for t in day_ticks), day_ticks


def test_colours_only_mode_draws_no_numbers_on_the_map(demo, client, settings):
    workspace, campaign, _ = demo
    numbers = client.get(page_url(workspace, campaign)).content.decode()
    colours = client.get(page_url(workspace, campaign), {"display": "colours"}).content.decode()
    assert 'value="colours" checked' in colours
    assert "display=colours" in lxml_html.fromstring(colours).cssselect("a.button")[0].get("href")
    assert "num-badge" not in colours
    assert page_table(numbers) == page_table(colours)


def test_htmx_swap_returns_the_partial_with_the_same_numbers(demo, client):
    workspace, campaign, _ = demo
    full = client.get(page_url(workspace, campaign), {"metric": "total"}).content.decode()
    partial = client.get(
        page_url(workspace, campaign), {"metric": "total"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert "<html" in full and "<html" not in partial
    assert page_table(full) == page_table(partial)


def test_who_clicked_lists_customers_and_exports_them(demo, client):
    workspace, campaign, _ = demo
    with scopes_disabled():
        truth = recount([variant_named(campaign, "A").pk])
    top = max(truth.rows.values(), key=lambda r: (r.unique, -r.link))
    url = reverse("clickmap:clickers", args=[workspace.slug, campaign.pk, top.link])
    html = client.get(url).content.decode()
    assert f"{top.unique} customer" in html
    csv = b"".join(client.get(url, {"export": "csv"}).streaming_content).decode()
    assert len(csv.strip().splitlines()) == top.unique + 1


def test_viewer_sees_the_click_map(demo, add_member, client_for):
    workspace, campaign, _ = demo
    viewer = client_for(add_member(workspace, Role.VIEWER))
    assert viewer.get(page_url(workspace, campaign)).status_code == 200


def test_the_site_has_a_favicon(db):
    client = Client()
    html = client.get(reverse("login")).content.decode()
    assert 'rel="icon"' in html
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"] == static("favicon.ico")
    with open(finders.find("favicon.ico"), "rb") as icon:
        assert icon.read(4) == b"\x00\x00\x01\x00"  # an ICO file
    with open(finders.find("favicon.svg")) as svg:
        assert svg.read().startswith("<svg")


def test_no_shared_preview_of_a_demo_email_shows_raw_personalisation(demo):
    workspace = demo[0]
    with scopes_disabled():
        sample = sample_customer(workspace.pk)
        variants = list(
            Variant.objects.filter(node__campaign__workspace=workspace).select_related(
                "template_version"
            )
        )
        assert len(variants) >= 8 and sample is not None
        for variant in variants:
            version = variant.template_version
            assert "{{" in version.html  # the demo's emails are personalised
            for who in (sample, None):  # the first customer, and one with no data at all
                preview = Preview(
                    version=version, format=variant.format, device="desktop", customer=who
                )
                html = preview_document(preview)
                assert "{{" not in html and "{%" not in html, (variant, who)
                if who is not None and variant.format == "html":
                    assert sample.attributes["first_name"] in html
