"""The template report (Altcraft's): a version's click map summed over every campaign and
scenario email that sent it, the template's totals, the campaigns that used it, the
version page's "Sent by", thumbnails and the editor's live preview.

Expected numbers are recounted here in plain Python from the raw rows (deliveries,
click and open events), never asked of clickmap.metrics."""

import base64
import csv
import io
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django_scopes import scope as tenant_scope
from django_scopes import scopes_disabled
from PIL import Image

from campaigns.models import Campaign, Delivery, EmailNode, Role, Segment, Variant
from campaigns.services import template_create, template_version_save
from clickmap.rollups import aggregate
from tests.conftest import PASSWORD
from tests.factories import customers
from tracking.models import ClickEvent, EventChange, OpenEvent

HTML_1 = """<p><a href="https://shop.example/new">New in</a>
<a href="https://shop.example/sale">Sale</a> <a href="https://shop.example/help">Help</a></p>"""
HTML_2 = """<p><a href="https://shop.example/sale">Sale</a>
<a href="https://shop.example/boots">Boots</a></p>"""
DAY = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)  # clicks on DAY, DAY + 1 and DAY + 2


@pytest.fixture(autouse=True)
def _unscoped():
    """The tests read rows across the scope (the views set their own)."""
    with scopes_disabled():
        yield


@dataclass
class World:
    workspace: object
    other: object  # another workspace with a template of its own
    owner: object
    template: object
    v1: object
    v2: object
    other_template: object
    campaigns: dict
    nodes: dict  # name -> EmailNode
    people: list


def _deliver(workspace, node, variant, person, status="sent"):
    return Delivery.objects.create(
        workspace=workspace,
        node=node,
        variant=variant,
        customer=person,
        template_version=variant.template_version,
        format=variant.format,
        status=status,
        sent_at=DAY - timedelta(hours=1),
    )


def _click(delivery, ordinal, day, reliable=True, device="desktop"):
    link = delivery.template_version.links.get(format="html", ordinal=ordinal)
    ClickEvent.objects.create(
        event_id=uuid.uuid4(),
        workspace=delivery.workspace,
        delivery=delivery,
        link=link,
        url=link.href,
        at=DAY + timedelta(days=day, minutes=ordinal),
        reliable=reliable,
        device=device,
    )
    EventChange.objects.create(kind="c", delivery=delivery, link=link)


def _open(delivery, day):
    OpenEvent.objects.create(
        event_id=uuid.uuid4(),
        workspace=delivery.workspace,
        delivery=delivery,
        at=DAY + timedelta(days=day),
        reliable=True,
        device="desktop",
    )
    EventChange.objects.create(kind="o", delivery=delivery)


@pytest.fixture
def world(make_workspace, make_user):
    """Template "Autumn" v1 sent by two campaigns (one with two variants of v1) and the
    first email of a scenario; v2 by the scenario's second email and a third campaign;
    another template by a fourth campaign; another workspace with a template."""
    owner = make_user("owner")
    ws = make_workspace("Shop", owner=owner)
    other = make_workspace("Elsewhere")
    people = customers(ws, [(f"c{i}", f"c{i}@example.test", {}) for i in range(7)])
    with tenant_scope(workspace=other):
        other_template = template_create(workspace=other, name="Secret", html=HTML_1).template
    with tenant_scope(workspace=ws):
        v1 = template_create(workspace=ws, name="Autumn", html=HTML_1)
        template = v1.template
        v2, _ = template_version_save(template=template, html=HTML_2, author=owner, note="v2")
        unrelated = template_create(workspace=ws, name="Unrelated", html=HTML_1)
        campaigns, nodes = {}, {}

        def campaign(name, kind=Campaign.Kind.CAMPAIGN):
            campaigns[name] = Campaign.objects.create(workspace=ws, name=name, kind=kind)
            return campaigns[name]

        def node(c, name, position=1):
            nodes[name] = EmailNode.objects.create(campaign=c, name=name, position=position)
            return nodes[name]

        spring = node(campaign("Spring"), "Spring email")
        summer = node(campaign("Summer"), "Summer email")
        scenario = campaign("Onboarding", Campaign.Kind.SCENARIO)
        day1 = node(scenario, "Day 1", 1)
        day3 = node(scenario, "Day 3", 2)
        fall = node(campaign("Fall"), "Fall email")
        misc = node(campaign("Misc"), "Misc email")

        def variant(n, name, version):
            return Variant.objects.create(node=n, name=name, subject="s", template_version=version)

        spring_a = variant(spring, "A", v1)
        summer_a, summer_b = variant(summer, "A", v1), variant(summer, "B", v1)
        day1_a, day3_a = variant(day1, "A", v1), variant(day3, "A", v2)
        fall_a = variant(fall, "A", v2)
        misc_a = variant(misc, "A", unrelated)

        p = people
        d = {}
        d["spring0"] = _deliver(ws, spring, spring_a, p[0])
        d["spring1"] = _deliver(ws, spring, spring_a, p[1])
        d["spring2"] = _deliver(ws, spring, spring_a, p[2], status="bounced")
        d["summer0"] = _deliver(ws, summer, summer_a, p[0])  # c0 receives v1 twice
        d["summer3"] = _deliver(ws, summer, summer_b, p[3])
        d["summer4"] = _deliver(ws, summer, summer_a, p[4])
        d["day1_5"] = _deliver(ws, day1, day1_a, p[5])
        d["day1_1"] = _deliver(ws, day1, day1_a, p[1])
        d["day3_5"] = _deliver(ws, day3, day3_a, p[5])
        d["day3_6"] = _deliver(ws, day3, day3_a, p[6])
        d["fall0"] = _deliver(ws, fall, fall_a, p[0])
        d["misc6"] = _deliver(ws, misc, misc_a, p[6])

        # (delivery, link ordinal, day, reliable[, device])
        for name, ordinal, day, reliable, *device in [
            ("spring0", 0, 0, True),
            ("spring0", 0, 1, True),
            ("spring0", 1, 2, False),
            ("spring1", 1, 0, True),
            ("summer0", 0, 1, True),  # c0 clicks "New in" in two campaigns: one clicker
            ("summer3", 2, 2, True),
            ("summer3", 1, 0, False),
            ("day1_5", 1, 1, True),
            ("day1_1", 1, 2, True),
            ("day3_5", 0, 0, True),
            ("day3_6", 1, 1, True),
            ("day3_6", 1, 2, False),
            ("day1_1", 0, 1, True, "mobile"),
            ("fall0", 0, 2, True),
            ("misc6", 0, 0, True),
        ]:
            _click(d[name], ordinal, day, reliable, *device)
        _open(d["summer4"], 1)  # an opener who never clicked
        _open(d["spring1"], 0)
        aggregate()
    return World(ws, other, owner, template, v1, v2, other_template, campaigns, nodes, people)


def recount(
    versions,
    *,
    node=None,
    date_from=None,
    date_to=None,
    reliable_only=False,
    customers=None,
    device=None,
):
    """The figures of docs/metrics.md from raw rows: deliveries that pinned one of
    ``versions`` (HTML), optionally of one node and to some ``customers`` (ids), and
    their events in the period (on ``device``)."""
    with scopes_disabled():
        deliveries = {
            d.pk: d
            for d in Delivery.objects.filter(template_version__in=versions, format="html")
            if (node is None or d.node_id == node.pk)
            and (customers is None or d.customer_id in customers)
        }

        def in_period(event):
            day = event.at.astimezone(UTC).date()
            return (
                (date_from is None or day >= date_from)
                and (date_to is None or day <= date_to)
                and (device is None or event.device == device)
            )

        clicks = [
            e for e in ClickEvent.objects.all() if e.delivery_id in deliveries and in_period(e)
        ]
        opens = [e for e in OpenEvent.objects.all() if e.delivery_id in deliveries and in_period(e)]
    chosen = [e for e in clicks if e.reliable or not reliable_only]
    who = {pk: d.customer_id for pk, d in deliveries.items()}
    delivered = {d.customer_id for d in deliveries.values() if d.status in ("sent", "delivered")}
    sent = {d.customer_id for d in deliveries.values()}
    per_link = defaultdict(lambda: [0, set()])
    for e in chosen:
        per_link[e.link_id][0] += 1
        per_link[e.link_id][1].add(who[e.delivery_id])
    clickers = {who[e.delivery_id] for e in chosen}
    openers = {who[e.delivery_id] for e in opens + clicks}

    def pct(part, whole):
        return round(100 * part / whole, 4) if whole else 0.0

    return {
        "links": {
            link: (total, len(people), pct(len(people), len(delivered)))
            for link, (total, people) in per_link.items()
        },
        "sent": len(sent),
        "delivered": len(delivered),
        "clickers": len(clickers),
        "unique_opens": len(openers),
        "total_clicks": len(chosen),
        "ctr": pct(len(clickers), len(delivered)),
        "ctor": pct(len(clickers), len(openers)),
    }


TOTALS = ("sent", "delivered", "clickers", "unique_opens", "total_clicks", "ctr", "ctor")


def _totals(totals):
    return {name: getattr(totals, name) for name in TOTALS}


def _links(rows):
    return {row.link.pk: (row.total, row.unique, row.rate) for row in rows if row.total}


def report_url(world, template=None):
    template = template or world.template
    return f"/w/{world.workspace.slug}/templates/{template.pk}/report/"


def test_numbers_equal_a_recount_over_every_campaign_that_sent_each_version(world, client_for):
    client = client_for(world.owner)
    for version in (world.v1, world.v2):
        page = client.get(report_url(world), {"version": version.number})
        assert page.status_code == 200
        want = recount([version])
        assert _totals(page.context["totals"]) == pytest.approx({k: want[k] for k in TOTALS}), (
            version
        )
        assert _links(page.context["rows"]) == want["links"], version
        # Every link of the version is listed, clicked or not, and only its links.
        assert {row.link.pk for row in page.context["rows"]} == set(
            version.links.values_list("pk", flat=True)
        )
    # Hand-checked for v1: c0 (twice), c1 (twice), c3, c4, c5 delivered; c2 bounced.
    v1 = client.get(report_url(world), {"version": 1}).context
    assert (v1["totals"].sent, v1["totals"].delivered, v1["totals"].clickers) == (6, 5, 4)
    assert v1["totals"].total_clicks == 10
    assert [u.campaign.name for u in v1["uses_of_version"]] == ["Onboarding", "Summer", "Spring"]
    new_in = next(row for row in v1["rows"] if row.link.ordinal == 0)
    assert (new_in.total, new_in.unique, new_in.rate) == (4, 2, 40.0)


def test_the_template_totals_count_every_version_and_each_customer_once(world, client_for):
    context = client_for(world.owner).get(report_url(world)).context
    want = recount([world.v1, world.v2])
    assert _totals(context["template_totals"]) == pytest.approx({k: want[k] for k in TOTALS})
    rows = {row.version.number: row for row in context["version_rows"]}
    for version in (world.v1, world.v2):
        recounted = recount([version])
        assert _totals(rows[version.number].totals) == pytest.approx(
            {k: recounted[k] for k in TOTALS}
        )
    assert (rows[1].emails, rows[2].emails) == (3, 2)
    # v2 is the newest version sent: the report opens on it.
    assert context["version"] == world.v2


def test_the_period_selector_counts_only_the_period(world, client_for):
    client = client_for(world.owner)
    start = end = (DAY + timedelta(days=1)).date()
    page = client.get(report_url(world), {"version": 1, "from": start, "to": end})
    want = recount([world.v1], date_from=start, date_to=end)
    assert _totals(page.context["totals"]) == pytest.approx({k: want[k] for k in TOTALS})
    assert _links(page.context["rows"]) == want["links"]
    assert page.context["totals"].total_clicks == 4  # spring0, summer0, day1_5, day1_1
    # Open-ended periods and reliable clicks only.
    page = client.get(report_url(world), {"version": 1, "from": end, "reliable": "1"})
    want = recount([world.v1], date_from=end, reliable_only=True)
    assert _links(page.context["rows"]) == want["links"]
    assert page.context["totals"].clickers == want["clickers"]
    # Each campaign's row uses the same period.
    uses = {u.node.pk: u for u in page.context["uses"]}
    for node in (world.nodes["Spring email"], world.nodes["Day 3"]):
        version = world.v1 if node.name == "Spring email" else world.v2
        mine = recount([version], node=node, date_from=end, reliable_only=True)
        assert uses[node.pk].totals.total_clicks == mine["total_clicks"]
        assert uses[node.pk].totals.clickers == mine["clickers"]


def test_bad_selectors_are_explained_not_a_500(world, client_for):
    client = client_for(world.owner)
    page = client.get(report_url(world), {"version": "99", "from": "soon", "to": "2026-01-01"})
    assert page.status_code == 200
    text = unescape(page.content.decode())
    assert "has no version 99" in text
    assert "“soon” is not a date" in text
    assert page.context["version"] == world.v2
    page = client.get(report_url(world), {"from": "2026-10-09", "to": "2026-10-01"})
    assert "ends before it starts" in unescape(page.content.decode())


def test_each_campaign_email_is_listed_with_a_link_to_its_own_map(world, client_for):
    client = client_for(world.owner)
    page = client.get(report_url(world), {"version": 1})
    uses = page.context["uses"]
    listed = {(u.campaign.name, u.node.name, u.version.number) for u in uses}
    assert listed == {
        ("Spring", "Spring email", 1),
        ("Summer", "Summer email", 1),
        ("Onboarding", "Day 1", 1),
        ("Onboarding", "Day 3", 2),
        ("Fall", "Fall email", 2),
    }
    html = page.content.decode()
    table = html[html.index('id="campaign-uses"') :]
    hrefs = [unescape(h) for h in re.findall(r'class="map-link" href="([^"]+)"', table)]
    assert len(hrefs) == 5
    for use, href in zip(uses, hrefs, strict=True):
        assert href.startswith(f"/w/{world.workspace.slug}/campaigns/{use.campaign.pk}/clickmap/")
        # The campaign's own map shows that email and the numbers the report lists for it.
        mapped = client.get(href)
        assert mapped.status_code == 200
        assert mapped.context["selection"].node_id == use.node.pk
        want = recount([use.version], node=use.node)
        assert _totals(mapped.context["totals"]) == pytest.approx({k: want[k] for k in TOTALS})
        assert _totals(use.totals) == pytest.approx({k: want[k] for k in TOTALS})
    # Summer's two variants both send v1: its map opens on "All variants", summed.
    summer = next(u for u in uses if u.campaign.name == "Summer")
    assert [v.name for v in summer.variants] == ["A", "B"]
    assert "variant=" not in summer.map_query
    assert "Misc" not in html and "Secret" not in html


def test_an_email_whose_other_variant_sends_another_template_links_to_its_own_variant(
    world, client_for
):
    """Two variants send Autumn v1 and a third sends another template: that email's map
    cannot sum "All variants", so its link names one of the template's variants, and
    the map it opens shows that variant, not the other template's."""
    with tenant_scope(workspace=world.workspace):
        mixed = EmailNode.objects.create(
            campaign=Campaign.objects.create(workspace=world.workspace, name="Mixed"),
            name="Mixed email",
        )
        ours = [
            Variant.objects.create(node=mixed, name=n, subject="s", template_version=world.v1)
            for n in ("A", "B")
        ]
        other = template_create(workspace=world.workspace, name="Winter", html=HTML_2)
        Variant.objects.create(node=mixed, name="C", subject="s", template_version=other)
        for variant, person in zip([*ours, ours[0]], world.people, strict=False):
            _click(_deliver(world.workspace, mixed, variant, person), 1, 0)
        aggregate()
    client = client_for(world.owner)
    uses = client.get(report_url(world), {"version": 1}).context["uses"]
    use = next(u for u in uses if u.node == mixed)
    assert [v.name for v in use.variants] == ["A", "B"]
    assert f"variant={ours[0].pk}" in use.map_query
    mapped = client.get(f"{mixed.campaign.get_absolute_url()}clickmap/?{use.map_query}")
    assert mapped.status_code == 200
    assert mapped.context["selection"].variant_id == ours[0].pk


def test_the_export_agrees_with_the_page(world, client_for):
    client = client_for(world.owner)
    query = {"version": 1, "metric": "total", "from": DAY.date().isoformat()}
    page = client.get(report_url(world), query)
    response = client.get(report_url(world) + "export/", {**query, "export": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "template-" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    shown = {row.link.ordinal + 1: row for row in page.context["rows"]}
    assert len(rows) == len(shown) == 3
    for row in rows:
        mine = shown[int(row["Link #"])]
        assert int(row["Rank"]) == mine.rank
        assert (int(row["Total clicks"]), int(row["Unique clicks"])) == (mine.total, mine.unique)
        assert float(row["Click rate %"]) == pytest.approx(mine.rate, abs=1e-4)
        assert row["Template version"] == "Autumn v1"
    xlsx = client.get(report_url(world) + "export/", {**query, "export": "xlsx"})
    assert xlsx.status_code == 200
    assert b"".join(xlsx.streaming_content)[:2] == b"PK"
    assert client.get(report_url(world) + "export/", {"export": "pdf"}).status_code == 404


def test_the_version_page_lists_the_emails_that_sent_it_and_links_the_report(world, client_for):
    client = client_for(world.owner)
    base = f"/w/{world.workspace.slug}/templates/{world.template.pk}/versions/"
    html = unescape(client.get(f"{base}1/").content.decode())
    sent_by = html[
        html.index('id="version-uses"') : html.index("</ul>", html.index("version-uses"))
    ]
    assert [m for m in re.findall(r">(Spring|Summer|Onboarding|Fall|Misc)<", sent_by)] == [
        "Onboarding",
        "Summer",
        "Spring",
    ]
    for name in ("Spring", "Summer", "Onboarding"):
        c = world.campaigns[name]
        assert f"/w/{world.workspace.slug}/campaigns/{c.pk}/clickmap/?node=" in sent_by
    assert f"/templates/{world.template.pk}/report/?version=1" in html
    html = unescape(client.get(f"{base}2/").content.decode())
    assert "Fall" in html and "Day 3" in html and "Spring" not in html


def test_the_template_list_loads_thumbnails_and_links_reports(world, client_for):
    html = client_for(world.owner).get(f"/w/{world.workspace.slug}/templates/").content.decode()
    slug, pk = world.workspace.slug, world.template.pk
    assert f'hx-get="/w/{slug}/templates/{pk}/versions/2/thumbnail/"' in html
    assert 'hx-trigger="revealed"' in html
    assert f'href="/w/{slug}/templates/{pk}/report/"' in html


def test_another_workspaces_template_answers_404(world, client_for):
    client = client_for(world.owner)
    slug, pk = world.workspace.slug, world.other_template.pk
    for url in (
        f"/w/{slug}/templates/{pk}/report/",
        f"/w/{slug}/templates/{pk}/report/preview/",
        f"/w/{slug}/templates/{pk}/report/export/?export=csv",
        f"/w/{slug}/templates/{pk}/versions/1/thumbnail/",
        f"/w/{slug}/templates/{pk}/versions/1/thumbnail.png",
    ):
        assert client.get(url).status_code == 404, url
    response = client.post(
        f"/w/{slug}/templates/draft-preview/", {"html": "<p>x</p>", "template": pk}
    )
    assert response.status_code == 404
    # And the other workspace's slug, for a member of this one only.
    assert client.get(f"/w/{world.other.slug}/templates/{pk}/report/").status_code == 404


RED_TOP = """<html><body style="margin:0;background:#ffffff">
<div style="background:#d01010;height:400px"><a href="https://x.example/">Go</a></div>
<p style="height:640px;margin:0">Below</p></body></html>"""


@pytest.mark.browser
def test_the_thumbnail_is_a_png_of_the_chromium_rendered_version(
    make_workspace, make_user, client_for, eager_tasks, django_capture_on_commit_callbacks
):
    owner = make_user()
    ws = make_workspace(owner=owner)
    with tenant_scope(workspace=ws):
        version = template_create(workspace=ws, name="Red", html=RED_TOP)
    client = client_for(owner)
    base = f"/w/{ws.slug}/templates/{version.template_id}/versions/1/"
    with django_capture_on_commit_callbacks(execute=True):
        first = client.get(base + "thumbnail/").content.decode()
    # The first ask queues the render and answers a placeholder that polls; the render
    # ran (eager tasks), so the poll gets the image.
    assert 'hx-trigger="every 2s"' in first and "thumbnail.png" not in first
    fragment = client.get(base + "thumbnail/").content.decode()
    assert f'src="{base}thumbnail.png?v=' in fragment, fragment
    response = client.get(base + "thumbnail.png")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
    picture = Image.open(io.BytesIO(response.content)).convert("RGB")
    # 1280 CSS px wide at desktop, 1040 px tall: scaled by 240 / 1280 to 240 × 195.
    assert picture.size == (240, 195)
    assert re.search(r'width="240" height="195"', fragment)
    r, g, b = picture.getpixel((200, 20))  # inside the red block (0–75 px after scaling)
    assert r > 180 and g < 60 and b < 60
    assert picture.getpixel((200, 150)) == (255, 255, 255)  # below it: the white page
    # Cached: the same bytes again.
    assert client.get(base + "thumbnail.png").content == response.content

    # An email 640 px wide centred on a grey page: the thumbnail is the email's columns.
    with tenant_scope(workspace=ws):
        centred = template_create(workspace=ws, name="Centred", html=CENTRED)
    base = f"/w/{ws.slug}/templates/{centred.template_id}/versions/1/"
    with django_capture_on_commit_callbacks(execute=True):
        client.get(base + "thumbnail/")
    picture = Image.open(io.BytesIO(client.get(base + "thumbnail.png").content)).convert("RGB")
    # 640 CSS px scaled to 240: 1000 px tall becomes 375, cut at 300.
    assert picture.size == (240, 300)
    for x in (1, 120, 238):
        r, g, b = picture.getpixel((x, 10))  # the red header spans the email's width
        assert r > 180 and g < 60 and b < 60, x
    assert picture.getpixel((120, 200)) == (255, 255, 255)


CENTRED = """<html><body style="margin:0;background:#808080">
<div style="width:640px;margin:0 auto;background:#ffffff">
<div style="background:#d01010;height:100px"></div><div style="height:900px"></div></div>
</body></html>"""

GREEN = """<meta name="viewport" content="width=device-width">
<div style="background:#10b010;height:300px">{{ customer.first_name }}</div>"""


@pytest.mark.browser
def test_the_editor_previews_unsaved_html_rendered_by_chromium(world, client_for, add_member):
    client = client_for(world.owner)
    url = f"/w/{world.workspace.slug}/templates/draft-preview/"
    editor = client.get(f"/w/{world.workspace.slug}/templates/{world.template.pk}/edit/")
    html = editor.content.decode()
    assert f'hx-post="{url}"' in html
    assert "keyup changed delay:1500ms from:#id_html" in html
    response = client.post(url, {"html": GREEN, "device": "mobile", "template": world.template.pk})
    assert response.status_code == 200
    found = re.search(r'src="data:image/png;base64,([^"]+)"', response.content.decode())
    assert found, response.content
    picture = Image.open(io.BytesIO(base64.b64decode(found.group(1)))).convert("RGB")
    # Chromium's mobile profile: 390 CSS px wide, drawn at its pixel ratio.
    assert 'width="390"' in response.content.decode()
    assert picture.width > 2 * 390
    r, g, b = picture.getpixel((100, 100))
    assert g > 150 and r < 60 and b < 60
    # Bad input: a message, never a 500; reading roles cannot post; GET is refused.
    empty = client.post(url, {"html": "   "})
    assert empty.status_code == 200 and "no HTML to preview" in empty.content.decode()
    amp = client.post(url, {"html": GREEN, "amp_html": "", "part": "amp"})
    assert "no AMP part to preview" in amp.content.decode()
    assert client.post(url, {"html": GREEN, "template": "x"}).status_code == 404
    assert client.get(url).status_code == 405
    viewer = client_for(add_member(world.workspace, Role.VIEWER))
    assert viewer.post(url, {"html": GREEN}).status_code == 403


def test_a_template_nobody_sent_shows_its_links_with_zeros(world, client_for):
    with tenant_scope(workspace=world.workspace):
        fresh = template_create(workspace=world.workspace, name="Fresh", html=HTML_2)
    page = client_for(world.owner).get(report_url(world, fresh.template))
    assert page.status_code == 200
    assert [(row.total, row.unique) for row in page.context["rows"]] == [(0, 0), (0, 0)]
    assert page.context["uses"] == []
    assert "No campaign or scenario email has sent this template yet" in page.content.decode()


BLUE = (
    '<meta name="viewport" content="width=device-width">'
    '<div style="background:#1030d0;height:300px">'
)


@pytest.mark.browser
def test_typing_in_the_editor_renders_the_draft_beside_it(
    transactional_db, live_server, browser, eager_tasks, make_user, make_workspace
):
    owner = make_user("editor")
    ws = make_workspace("Studio", owner=owner)
    with tenant_scope(workspace=ws):
        version = template_create(workspace=ws, name="Live", html=GREEN)
    # wait_for_function evaluates in the page, which the CSP refuses (test_csp_browser
    # opens the editor under the policy).
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, bypass_csp=True)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", "editor")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/w/**")
        page.goto(f"{live_server.url}/w/{ws.slug}/templates/{version.template_id}/edit/")
        # The saved source's preview appears as the editor opens.
        page.wait_for_selector("#draft-preview img", timeout=60_000)
        first = page.get_attribute("#draft-preview img", "src")

        def colour(src):
            data = base64.b64decode(src.split(",", 1)[1])
            return Image.open(io.BytesIO(data)).convert("RGB").getpixel((50, 50))

        r, g, b = colour(first)
        assert g > 150 and r < 60 and b < 60
        # Typing: one render once the keys stop, of what is in the textarea now.
        page.fill("#id_html", "")
        with page.expect_response(lambda r: r.url.endswith("/draft-preview/")) as rendered:
            page.locator("#id_html").press_sequentially(BLUE)
        posted = rendered.value.request.post_data
        assert "1030d0" in unescape(posted.replace("%23", "#"))
        page.wait_for_function(
            "src => document.querySelector('#draft-preview img')?.src !== src", arg=first
        )
        r, g, b = colour(page.get_attribute("#draft-preview img", "src"))
        assert b > 150 and r < 60 and g < 80
        # Nothing was saved.
        with scopes_disabled():
            assert version.template.versions.count() == 1
    finally:
        context.close()


def test_selectors_swap_the_report_and_the_pending_preview_polls_its_own_url(world, client_for):
    client = client_for(world.owner)
    full = client.get(report_url(world), {"version": 1}).content.decode()
    assert "<html" in full and 'hx-target="#clickmap"' in full
    partial = client.get(report_url(world), {"version": 1}, HTTP_HX_REQUEST="true")
    assert "<html" not in partial.content.decode()
    assert 'id="campaign-uses"' in partial.content.decode()
    # No worker ran the render (tasks queue on commit): the preview polls the report's
    # own preview URL with the page's selection, which answers the panel.
    poll = re.search(r'hx-get="([^"]*/report/preview/[^"]*)"', full)
    assert poll, "the pending preview does not poll the report's preview"
    assert "version=1" in unescape(poll.group(1))
    panel = client.get(unescape(poll.group(1)))
    assert panel.status_code == 200
    assert 'id="preview-a"' in panel.content.decode()


def test_segment_and_device_filters_count_their_customers_and_clicks(world, client_for):
    with scopes_disabled():
        members = [world.people[i] for i in (0, 1, 5)]
        segment = Segment.objects.create(workspace=world.workspace, name="Picked")
        segment.members.set(members)
    ids = {p.pk for p in members}
    client = client_for(world.owner)
    for query, want in [
        ({"segment": segment.pk}, {"customers": ids}),
        ({"device": "mobile"}, {"device": "mobile"}),
        ({"segment": segment.pk, "device": "desktop"}, {"customers": ids, "device": "desktop"}),
    ]:
        page = client.get(report_url(world), {"version": 1, **query})
        expected = recount([world.v1], **want)
        assert _totals(page.context["totals"]) == pytest.approx({k: expected[k] for k in TOTALS}), (
            query
        )
        assert _links(page.context["rows"]) == expected["links"], query
        for use in page.context["uses"]:
            mine = recount([use.version], node=use.node, **want)
            assert (use.totals.delivered, use.totals.clickers, use.totals.total_clicks) == (
                mine["delivered"],
                mine["clickers"],
                mine["total_clicks"],
            ), (query, use.node.name)
    # Hand-checked: on mobile only c1's "New in" click in the scenario's first email.
    mobile = client.get(report_url(world), {"version": 1, "device": "mobile"}).context
    assert mobile["totals"].total_clicks == 1 and mobile["totals"].clickers == 1


def test_who_clicked_a_link_lists_its_clickers_from_every_email(world, client_for):
    client = client_for(world.owner)
    sale = world.v1.links.get(ordinal=1)
    url = f"{report_url(world)}links/{sale.pk}/clickers/"
    page = client.get(url, {"version": 1})
    assert page.status_code == 200
    with scopes_disabled():
        want = {
            e.delivery.customer.email
            for e in ClickEvent.objects.filter(link=sale).select_related("delivery__customer")
        }
    # c0 (Spring), c1 (Spring, and the scenario's first email), c3 (Summer), c5 (scenario)
    assert want == {f"c{i}@example.test" for i in (0, 1, 3, 5)}
    listed = {row["delivery__customer__email"] for row in page.context["page"].object_list}
    assert listed == want
    report = client.get(report_url(world), {"version": 1}).content.decode()
    assert f"/report/links/{sale.pk}/clickers/?version=1" in unescape(report)
    rows = list(
        csv.DictReader(
            io.StringIO(
                b"".join(
                    client.get(url, {"version": 1, "export": "csv"}).streaming_content
                ).decode()
            )
        )
    )
    assert {row["Email"] for row in rows} == want
    assert sum(int(row["Clicks"]) for row in rows) == 5  # spring0, spring1, summer3, day1_5, day1_1
    # A link of another version than the one shown is not in the report.
    assert client.get(url, {"version": 2}).status_code == 404
