"""Results where marketers look: the campaign list's figures per row and the campaign
page's summary, A/B verdict and top links, against a brute-force recount in plain
Python over the raw delivery, open and click rows of a hand-built world (never
clickmap.metrics), and p-values computed by hand.

Definitions restated (docs/metrics.md): delivered = distinct customers with a delivery
sent or delivered (sent adds bounced); clickers = distinct customers with a click on a
link; unique opens = distinct customers with an open or a click (a click implies an
open); CTR = clickers ÷ delivered × 100; CTOR = clickers ÷ unique opens × 100.
"""

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_scopes import scope, scopes_disabled
from lxml import html as lxml_html

from campaigns.models import Campaign, Delivery, EmailNode, Variant
from campaigns.services import template_create
from campaigns.views import CAMPAIGNS_PER_PAGE
from clickmap import metrics
from clickmap.rollups import aggregate
from clickmap.significance import verdict
from tests.factories import customers
from tests.rollup_world import T0
from tracking.models import ClickEvent, EventChange, OpenEvent

HX = {"HX-Request": "true"}
HTML_A = """<p><a href="https://shop.example/sale">Shop the sale</a>
<a href="https://shop.example/new">New in</a> <a href="https://shop.example/help">Help</a></p>"""
HTML_B = """<p><a href="https://shop.example/sale">Shop the sale</a>
<a href="https://shop.example/boots">Boots</a> <a href="https://shop.example/help">Help</a></p>"""

# Hand-computed two-proportion z-tests (pooled), CTR = clickers / delivered:
# 10/100 against 30/100: pooled p = 0.2, SE = sqrt(0.2 * 0.8 * (1/100 + 1/100)) = 0.056569,
# z = 0.2 / 0.056569 = 3.5355, two-sided p = 2 * (1 - Phi(3.5355)) = 0.000407.
P_SIGNIFICANT = 0.000407
# 10/100 against 12/100: pooled p = 0.11, SE = sqrt(0.11 * 0.89 * 0.02) = 0.044249,
# z = 0.02 / 0.044249 = 0.4520, two-sided p = 2 * (1 - Phi(0.4520)) = 0.6513.
P_CLOSE = 0.6513


@dataclass
class World:
    workspace: object
    owner: object
    significant: Campaign  # A/B: 10 of 100 clicked against 30 of 100
    close: Campaign  # A/B: 10 of 100 against 12 of 100
    scenario: Campaign  # two emails to overlapping customers
    draft: Campaign  # nothing sent
    foreign: Campaign  # another workspace's A/B campaign


def _event(model, workspace, delivery, at, *, link=None, reliable=True):
    common = dict(
        event_id=uuid.uuid4(),
        workspace=workspace,
        delivery=delivery,
        at=at,
        reliable=reliable,
        device="desktop",
    )
    if model is OpenEvent:
        OpenEvent.objects.create(**common)
        EventChange.objects.create(kind="o", delivery=delivery)
    else:
        ClickEvent.objects.create(link=link, url=link.href, **common)
        EventChange.objects.create(kind="c", delivery=delivery, link=link)


def _deliver(workspace, node, variant, people, status="sent"):
    return [
        Delivery.objects.create(
            workspace=workspace,
            node=node,
            variant=variant,
            customer=person,
            template_version=variant.template_version,
            format=variant.format,
            status=status,
            sent_at=T0,
        )
        for person in people
    ]


def _engage(workspace, deliveries, clickers: int, openers_only: range):
    """The first `clickers` deliveries click (link by position, every third one twice,
    one in four also opens; every fifth click is a scanner's), and those at
    `openers_only` open without clicking."""
    for i, delivery in enumerate(deliveries[:clickers]):
        links = list(delivery.template_version.links.filter(format="html").order_by("ordinal"))
        at = T0 + timedelta(hours=1, minutes=i)
        _event(ClickEvent, workspace, delivery, at, link=links[i % len(links)], reliable=i % 5 != 0)
        if i % 3 == 0:
            _event(ClickEvent, workspace, delivery, at + timedelta(hours=2), link=links[0])
        if i % 4 == 0:
            _event(OpenEvent, workspace, delivery, at - timedelta(minutes=1))
    for i in openers_only:
        _event(OpenEvent, workspace, deliveries[i], T0 + timedelta(hours=3), reliable=i % 2 == 1)


def _ab(workspace, people, name, clicks_a, clicks_b):
    """An A/B campaign: 100 delivered customers per variant (and 2 bounces each)."""
    a = template_create(workspace=workspace, name=f"{name} A", html=HTML_A)
    b = template_create(workspace=workspace, name=f"{name} B", html=HTML_B)
    campaign = Campaign.objects.create(workspace=workspace, name=name, status="sent")
    node = EmailNode.objects.create(campaign=campaign, name="Email", position=1)
    va = Variant.objects.create(node=node, name="A", subject="Sale", template_version=a)
    vb = Variant.objects.create(node=node, name="B", subject="Sale!", template_version=b)
    to_a = _deliver(workspace, node, va, people[:100])
    to_b = _deliver(workspace, node, vb, people[100:200])
    _deliver(workspace, node, va, people[200:202], status="bounced")
    _deliver(workspace, node, vb, people[202:204], status="bounced")
    _engage(workspace, to_a, clicks_a, range(50, 62))
    _engage(workspace, to_b, clicks_b, range(50, 57))
    return campaign


@pytest.fixture
def world(make_workspace, make_user):
    owner = make_user("marketer")
    workspace = make_workspace("Fernhill", owner=owner)
    other = make_workspace("Other shop")
    people = customers(workspace, [(f"c{i}", f"c{i}@example.test", {}) for i in range(204)])
    strangers = customers(other, [(f"s{i}", f"s{i}@example.test", {}) for i in range(204)])
    with scope(workspace=workspace):
        significant = _ab(workspace, people, "Boots launch", 10, 30)
        close = _ab(workspace, people, "Subject test", 10, 12)
        scenario = Campaign.objects.create(
            workspace=workspace, name="Welcome", kind=Campaign.Kind.SCENARIO, status="sent"
        )
        version = template_create(workspace=workspace, name="Welcome", html=HTML_A)
        first = EmailNode.objects.create(campaign=scenario, name="Hello", position=1)
        second = EmailNode.objects.create(campaign=scenario, name="Tips", position=2)
        one = Variant.objects.create(node=first, name="A", subject="Hi", template_version=version)
        two = Variant.objects.create(node=second, name="A", subject="Tip", template_version=version)
        to_first = _deliver(workspace, first, one, people[:50])
        to_second = _deliver(workspace, second, two, people[25:74])
        _deliver(workspace, second, two, people[74:75], status="bounced")
        # Clickers people 0-9 on the first email, 25-39 (again: 25-34 twice) on the second.
        _engage(workspace, to_first, 10, range(30, 40))
        _engage(workspace, to_second, 15, range(40, 45))
        draft = Campaign.objects.create(workspace=workspace, name="Spring draft")
    with scope(workspace=other):
        foreign = _ab(other, strangers, "Their secret test", 10, 30)
    with scopes_disabled():
        aggregate()
    return World(workspace, owner, significant, close, scenario, draft, foreign)


def pct(part, whole):
    return round(100.0 * part / whole, 4) if whole else 0.0


def recount(campaign, variant=None) -> dict:
    """The figures of a campaign (or one variant) from its raw rows."""
    with scopes_disabled():
        deliveries = Delivery.objects.filter(node__campaign=campaign)
        if variant is not None:
            deliveries = deliveries.filter(variant=variant)
        who = {d.pk: d.customer_id for d in deliveries}
        sent = {d.customer_id for d in deliveries if d.status in ("sent", "delivered", "bounced")}
        delivered = {d.customer_id for d in deliveries if d.status in ("sent", "delivered")}
        clicks = ClickEvent.objects.filter(delivery_id__in=who, link__isnull=False)
        clickers = {who[c.delivery_id] for c in clicks}
        openers = {who[o.delivery_id] for o in OpenEvent.objects.filter(delivery_id__in=who)}
        openers |= clickers  # a click implies an open
        unique = {}
        for click in clicks.select_related("link"):
            unique.setdefault(click.link.href, set()).add(who[click.delivery_id])
    return {
        "sent": len(sent),
        "delivered": len(delivered),
        "unique_opens": len(openers),
        "clickers": len(clickers),
        "ctr": pct(len(clickers), len(delivered)),
        "ctor": pct(len(clickers), len(openers)),
        "unique_by_href": {href: len(people) for href, people in unique.items()},
    }


def shown(figure: dict) -> list[str]:
    """A recount as the list's cells show it."""
    return [
        f"{figure['delivered']:,}",
        f"{figure['unique_opens']:,}",
        f"{figure['clickers']:,}",
        f"{figure['ctr']:.2f} %",
        f"{figure['ctor']:.2f} %",
    ]


def figures_url(world, *campaigns):
    ids = "&".join(f"id={c.pk}" for c in campaigns)
    return f"/w/{world.workspace.slug}/campaigns/figures/?{ids}"


def results_url(world, campaign):
    return f"/w/{world.workspace.slug}/campaigns/{campaign.pk}/results/"


def cells(html: str) -> dict[int, list[str]]:
    """campaign id -> its five figure cells from the out-of-band fragment."""
    tree = lxml_html.fromstring(f"<div>{html}</div>")
    found = {}
    for td in tree.iter("td"):
        pk, name = re.fullmatch(r"figures-(\d+)-(\w+)", td.get("id")).groups()
        assert td.get("hx-swap-oob") == "true"
        found.setdefault(int(pk), []).append(td.text_content().strip())
    return found


def test_the_list_figures_equal_a_recount_from_raw_rows(world, client_for):
    client = client_for(world.owner)
    campaigns = [world.significant, world.close, world.scenario, world.draft]
    response = client.get(figures_url(world, *campaigns), headers=HX)
    assert response.status_code == 200
    rows = cells(response.content.decode())
    for campaign in campaigns[:3]:
        assert rows[campaign.pk] == shown(recount(campaign)), campaign.name
    # Written out: 200 delivered (4 bounces are not), 10 + 30 clickers, and unique opens
    # = the 40 clickers plus those who opened without clicking (12 on A, 7 on B).
    assert rows[world.significant.pk] == ["200", "59", "40", "20.00 %", "67.80 %"]
    # The scenario counts a customer once: delivered people 0-73 (74 bounced), clickers
    # 0-9 and 25-39, openers those, 30-39 (who also clicked the second email) and 65-69:
    # 25 / 74 = 33.78 %, 25 / 30 = 83.33 %.
    assert rows[world.scenario.pk] == ["74", "30", "25", "33.78 %", "83.33 %"]
    assert rows[world.draft.pk] == ["—"] * 5  # nothing sent: no zeros that look like results


def test_the_batch_gives_what_email_totals_gives_for_each_campaign(world):
    with scope(workspace=world.workspace):
        campaigns = [world.significant, world.close, world.scenario, world.draft]
        batch = metrics.campaign_figures([c.pk for c in campaigns])
        for campaign in campaigns:
            one = metrics.email_totals(
                metrics.Scope(workspace=world.workspace, campaign_id=campaign.pk)
            )
            got = batch[campaign.pk]
            assert (got.sent, got.delivered, got.unique_opens, got.clickers) == (
                one.sent,
                one.delivered,
                one.unique_opens,
                one.clickers,
            )
            assert (got.ctr, got.ctor) == (one.ctr, one.ctor)
            truth = recount(campaign)
            assert got.ctor == truth["ctor"] and got.ctor <= 100


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url, headers=HX).status_code == 200
    return len(captured)


def test_the_list_asks_one_batch_per_page_whatever_the_number_of_campaigns(world, client_for):
    client = client_for(world.owner)
    with scope(workspace=world.workspace):
        version = world.significant.nodes.get().variants.first().template_version
        more = []
        for i in range(20):
            campaign = Campaign.objects.create(workspace=world.workspace, name=f"Promo {i}")
            node = EmailNode.objects.create(campaign=campaign, name="Email")
            Variant.objects.create(node=node, name="A", subject="s", template_version=version)
            more.append(campaign)
    one = _queries(client, figures_url(world, world.significant))
    many = _queries(client, figures_url(world, world.significant, world.close, *more))
    assert one == many
    mixed = _queries(client, figures_url(world, world.scenario, world.significant))
    assert _queries(client, figures_url(world, world.scenario, world.close, *more)) == mixed
    # Session, user, membership (twice: the view's check and the template's switcher),
    # the ids' check, then the figures: variants, delivery counts, email rollups, and
    # two distinct counts when scenarios are among them. None per campaign.
    assert many == 8 and mixed == many + 2
    # The list page names every campaign of the page in that one request.
    page = client.get(f"/w/{world.workspace.slug}/campaigns/").content.decode()
    tbody = lxml_html.fromstring(page).cssselect("tbody[hx-get]")[0]
    assert tbody.get("hx-trigger") == "load"
    ids = re.findall(r"id=(\d+)", tbody.get("hx-get"))
    assert len(ids) == CAMPAIGNS_PER_PAGE == len(set(ids))  # newest first: the 20 promos
    for pk in ids:
        assert f'id="figures-{pk}-ctor"' in page


def _page(client, world, campaign):
    response = client.get(results_url(world, campaign), headers=HX)
    assert response.status_code == 200
    html = response.content.decode()
    return html, lxml_html.fromstring(html)


def _variant_table(tree) -> dict[str, list[str]]:
    return {
        tr.cssselect("th")[0].text_content().strip(): [
            td.text_content().strip() for td in tr.cssselect("td")
        ]
        for tr in tree.cssselect("table.variants tbody tr")
    }


def test_the_campaign_page_shows_summary_variants_and_top_links_as_recounted(world, client_for):
    client = client_for(world.owner)
    html, tree = _page(client, world, world.significant)
    assert "<html" not in html  # the fragment the campaign page swaps in
    truth = recount(world.significant)
    kpis = {
        div.cssselect("span")[0].text_content().strip(): div.cssselect("strong")[0].text_content()
        for div in tree.cssselect(".kpis > div")
    }
    assert kpis["Delivered"] == str(truth["delivered"]) == "200"
    assert kpis["Unique opens"] == str(truth["unique_opens"])
    assert kpis["Clickers"] == str(truth["clickers"])
    assert kpis["CTR"] == f"{truth['ctr']:.2f} %" and kpis["CTOR"] == f"{truth['ctor']:.2f} %"
    assert "of 204 sent" in html

    with scopes_disabled():
        a, b = world.significant.nodes.get().variants.order_by("name")
    side = {"A": recount(world.significant, a), "B": recount(world.significant, b)}
    table = _variant_table(tree)
    assert table["Delivered"] == ["100", "100"]
    assert table["Clickers"] == ["10", "30"]
    assert table["Unique opens"] == [str(side[v]["unique_opens"]) for v in "AB"]
    assert table["CTR"] == ["10.00 %", "30.00 %"]
    assert table["CTOR"] == [f"{side[v]['ctor']:.2f} %" for v in "AB"]

    # Top links, paired across the two templates by what they are (B's "Boots" stands
    # where A's "New in" does: that link changed): each side's unique clickers of it,
    # and its rate over that side's 100 delivered.
    pairs = {"Shop the sale": ("sale", "sale"), "New in": ("new", "boots"), "Help": ("help",) * 2}
    rows = tree.cssselect("table.toplinks tbody tr")
    assert sorted(tr.cssselect(".linktext")[0].text_content() for tr in rows) == sorted(pairs)
    for tr in rows:
        name = tr.cssselect(".linktext")[0].text_content().strip()
        values = [td.text_content().strip() for td in tr.cssselect("td")[1:5]]
        want = []
        for v, path in zip("AB", pairs[name], strict=True):
            n = side[v]["unique_by_href"][f"https://shop.example/{path}"]
            want += [str(n), f"{pct(n, 100):.2f} %"]
        assert values == want, name
    combined = [
        int(tr.cssselect("td")[1].text_content()) + int(tr.cssselect("td")[3].text_content())
        for tr in rows
    ]
    assert combined == sorted(combined, reverse=True)  # most clicked first
    # By hand: A's clickers 0-9 click by position (sale: 0, 3, 6, 9), B's 0-29 (10 each).
    first = [td.text_content().strip() for td in rows[0].cssselect("td")]
    assert first[0].startswith("Shop the sale") and first[1:5] == ["4", "4.00 %", "10", "10.00 %"]
    assert first[5] == "+6.00 pp"


def test_a_winner_appears_only_once_the_difference_is_significant(world, client_for):
    client = client_for(world.owner)
    html, tree = _page(client, world, world.significant)
    assert "Variant B wins." in html
    winner = tree.cssselect("table.variants thead th.winner")
    assert [th.text_content().split()[:2] for th in winner] == [["Variant", "B"]]
    assert tree.cssselect("th.winner .badge-winner")
    table = _variant_table(tree)
    assert table["p, CTR against the leader"] == [f"{P_SIGNIFICANT:.4f}", "leader"]
    assert "p = 0.0004" in html and "gives p &lt; 0.05." in html

    html, tree = _page(client, world, world.close)
    assert "Variant B wins." not in html and "badge-winner" not in html
    assert "No winner yet." in html and "B leads with a CTR of 12.00 % against 10.00 %" in html
    assert _variant_table(tree)["p, CTR against the leader"] == [f"{P_CLOSE:.4f}", "leader"]


def test_the_verdict_holds_each_variant_to_the_shared_threshold():
    assert verdict([(10, 100), (30, 100)]).winner == 1
    assert verdict([(10, 100), (30, 100)]).tests[0].p_value == pytest.approx(P_SIGNIFICANT, 1e-3)
    assert verdict([(10, 100), (12, 100)]).winner is None
    assert verdict([(10, 100), (12, 100)]).leader == 1
    # 10/100 against 20/100: p = 0.0477, significant alone (below 0.05) …
    assert verdict([(10, 100), (20, 100)]).winner == 1
    # … but not as one of two tests (0.05 / 2 = 0.025), nor beside a close third.
    assert verdict([(10, 100), (20, 100), (10, 100)]).winner is None
    assert verdict([(10, 100), (30, 100), (10, 100)]).winner == 1
    assert verdict([(10, 100), (30, 100), (22, 100)]).winner is None  # p = 0.197 vs 22 %
    assert verdict([(10, 100), (10, 100)]).leader is None  # a tie leads nowhere
    assert verdict([(10, 100), (0, 0)]).winner is None  # B not delivered yet


def test_the_map_links_open_the_click_map_and_the_compare_view(world, client_for):
    client = client_for(world.owner)
    html, tree = _page(client, world, world.significant)
    map_link = tree.cssselect("a.button")[0]
    assert map_link.text_content() == "Open the click map"
    page = client.get(map_link.get("href"))
    assert page.status_code == 200 and "Boots launch" in page.content.decode()
    compare = next(a for a in tree.cssselect("a") if "side by side" in a.text_content())
    page = client.get(compare.get("href").replace("&amp;", "&")).content.decode()
    assert "Variant B against variant A" in page
    for a in tree.cssselect("table.variants thead a"):
        assert client.get(a.get("href")).status_code == 200
    # The campaign page loads the results from this URL.
    detail = client.get(world.significant.get_absolute_url()).content.decode()
    assert f'hx-get="{results_url(world, world.significant)}"' in detail


def test_a_scenario_counts_each_customer_once_and_shows_each_email(world, client_for):
    client = client_for(world.owner)
    html, tree = _page(client, world, world.scenario)
    truth = recount(world.scenario)
    strong = [s.text_content() for s in tree.cssselect(".kpis strong")]
    assert strong[:3] == [str(truth["delivered"]), str(truth["unique_opens"]), "25"]
    assert [h.text_content() for h in tree.cssselect(".email-results h3")] == [
        "Step 1: Hello",
        "Step 2: Tips",
    ]
    with scopes_disabled():
        first, second = world.scenario.nodes.order_by("position")
    lines = [p.text_content() for p in tree.cssselect(".email-line")]
    for line, node in zip(lines, (first, second), strict=True):
        with scopes_disabled():
            step = recount(world.scenario, node.variants.get())
        assert line.startswith(f"{step['delivered']} delivered · {step['unique_opens']} unique")
    assert 'table class="data variants"' not in html  # one variant each: no A/B test


def test_a_draft_says_results_come_once_it_is_sent(world, client_for):
    html, _ = _page(client_for(world.owner), world, world.draft)
    assert "Nothing sent yet" in html and "kpis" not in html


def test_another_workspaces_campaigns_answer_404_and_bad_ids_400(world, client_for):
    client = client_for(world.owner)
    assert client.get(figures_url(world, world.foreign), headers=HX).status_code == 404
    mixed = figures_url(world, world.significant, world.foreign)
    assert client.get(mixed, headers=HX).status_code == 404
    assert client.get(results_url(world, world.foreign), headers=HX).status_code == 404
    base = f"/w/{world.workspace.slug}/campaigns/figures/"
    for query in ("", "?id=x", "?id=-1", f"?id={2**63}", "?" + "&".join(["id=1"] * 101)):
        response = client.get(base + query, headers=HX)
        assert response.status_code == 400, query
        assert b"campaign ids" in response.content
    # Opened by hand, the fragment's URL leads to the list it belongs to.
    response = client.get(figures_url(world, world.significant))
    assert response.status_code == 302 and response["Location"].endswith("/campaigns/")
    # The results fragment has a page of its own.
    page = client.get(results_url(world, world.significant)).content.decode()
    assert "<html" in page and "Variant B wins." in page
