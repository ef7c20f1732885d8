"""The click map in a real browser (Playwright with Debian's Chromium against the live
test server): log in, open the demo's click map, switch every selector, toggle mobile,
compare variants, use Preview for, locate a link, download CSV and Excel; badges never
hide a link on any corpus or demo email; dates, the list, small screens. The numbers in
the page are raw-click recounts (tests/clickmap_truth.py). Saves the README's
screenshots."""

import csv
import io
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import openpyxl
import pytest
from django.contrib.auth import get_user_model
from django_scopes import scope, scopes_disabled

from campaigns.models import Campaign, Customer, EmailNode, Segment, TemplateLink, Variant
from campaigns.services import template_create
from clickmap.demo import DEMO_TEMPLATES, demo_email, seed_demo
from clickmap.models import Preview
from tests.clickmap_truth import recount
from tests.conftest import PASSWORD as USER_PASSWORD

SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
PASSWORD = "browser-test-password-1"

pytestmark = pytest.mark.browser

# Every badge placed, none overlapping another badge or another link's box (1 px slack
# for anti-aliased edges).
OVERLAPS_JS = """() => {
  const problems = [];
  const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1 &&
    Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  for (const frame of document.querySelectorAll('.preview-frame')) {
    const badges = [...frame.querySelectorAll('.num-badge')];
    const boxes = [...frame.querySelectorAll('.box')];
    const frameRect = frame.getBoundingClientRect();
    for (const badge of badges) {
      if (!badge.classList.contains('placed')) {
        problems.push('unplaced ' + badge.dataset.link);
        continue;
      }
      const r = badge.getBoundingClientRect();
      if (r.left < frameRect.left - 1 || r.right > frameRect.right + 1 ||
          r.top < frameRect.top - 1 || r.bottom > frameRect.bottom + 1) {
        problems.push('outside ' + badge.dataset.link);
      }
      for (const other of badges) {
        if (other !== badge && overlap(r, other.getBoundingClientRect())) {
          problems.push('badge ' + badge.dataset.link + ' on badge ' + other.dataset.link);
        }
      }
      for (const box of boxes) {
        const other = box.dataset.link !== badge.dataset.link;
        if (other && overlap(r, box.getBoundingClientRect())) {
          problems.push('badge ' + badge.dataset.link + ' on box ' + box.dataset.link);
        }
      }
    }
  }
  return problems;
}"""


def log_in(page, live_server, username="demo"):
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/campaigns/")


def number(text: str) -> float:
    return float(text.replace(",", "").replace("%", "").strip())


def page_rows(page):
    """(link id, total, unique, rate) of each row of the link list, in page order."""
    rows = []
    for row in page.locator("table.links tbody tr[id^=row-a-]").all():
        cells = [c.inner_text().strip() for c in row.locator("td").all()]
        link = int(row.get_attribute("id").rsplit("-", 1)[1])
        rows.append((link, int(number(cells[3])), int(number(cells[4])), number(cells[5])))
    return rows


def assert_page_is_a_recount(page, variant_ids, **filters):
    with scopes_disabled():
        truth = recount(variant_ids, **filters)
    shown = page_rows(page)
    assert {link for link, *_ in shown} == set(truth.rows)
    for link, total, unique, rate in shown:
        want = truth.rows[link]
        assert (total, unique) == (want.total, want.unique)
        assert rate == pytest.approx(want.rate, abs=0.006)
    clickers = page.locator(".summary div", has_text="Clickers").locator("strong").inner_text()
    assert number(clickers) == truth.clickers


def choose(page, name, value):
    """Change one selector and wait for htmx to swap the map and push the URL."""
    with page.expect_response(lambda r: "/clickmap/" in r.url and r.request.method == "GET"):
        if page.locator(f"select[name={name}]").count():
            page.select_option(f"select[name={name}]", value)
        elif page.locator(f"input[type=radio][name={name}][value='{value}']").count():
            page.check(f"input[type=radio][name={name}][value='{value}']")
        elif page.locator(f"input[type=checkbox][name={name}]").count():
            page.check(f"input[type=checkbox][name={name}]")
        else:
            page.fill(f"input[name={name}]", value)
            page.dispatch_event(f"input[name={name}]", "change")
    page.wait_for_function(f"new URLSearchParams(location.search).get('{name}') === '{value}'")
    page.wait_for_load_state("networkidle")


def wait_for_map(page):
    page.wait_for_selector(".preview-frame img", timeout=90_000)
    page.wait_for_function(
        "[...document.querySelectorAll('.preview-frame img')].every(i => i.complete) && "
        "[...document.querySelectorAll('.preview-frame')]"
        ".every(f => f.classList.contains('laid-out'))",
        timeout=60_000,
    )


@pytest.fixture
def demo_site(transactional_db, live_server, browser, eager_tasks, settings, spool_dir):
    # The demo as `make run` serves it (README's screenshots): tasks run inline, and so
    # does ingestion, so an idle map with nothing waiting reads "Up to date".
    settings.TRACKING_INGEST_INLINE = True
    login = seed_demo(PASSWORD, customers=300)
    # Playwright's wait_for_function runs its predicate with eval inside the page, which the
    # Content-Security-Policy refuses; test_csp_browser opens the pages under the policy.
    context = browser.new_context(
        viewport={"width": 1440, "height": 1000}, accept_downloads=True, bypass_csp=True
    )
    page = context.new_page()
    log_in(page, live_server)
    yield login.workspace, page
    context.close()


def test_click_map_in_the_browser(demo_site, live_server, tmp_path):
    workspace, page = demo_site
    with scopes_disabled():
        campaign = Campaign.objects.get(name__startswith="Black Friday — 30%")
        scenario = Campaign.objects.get(name="Welcome series")
        segment = Segment.objects.get(name="Germany")
        a, b = (campaign.nodes.get().variants.get(name=n) for n in "AB")
        someone = Customer.objects.filter(deliveries__variant=a).first()
    page.click(f"text={campaign.name}")
    page.click("a.button:has-text('Click map')")
    page.wait_for_url("**/clickmap/")
    wait_for_map(page)
    assert page.locator(".preview-frame .box").count() > 0
    assert page.evaluate(OVERLAPS_JS) == []
    assert_page_is_a_recount(page, [a.pk])
    assert page.locator(".freshness").inner_text().strip() == "Up to date"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "clickmap-desktop.png")

    for name, value in [
        ("metric", "unique"),
        ("metric", "total"),
        ("metric", "share"),
        ("variant", str(b.pk)),
        ("reliable", "1"),
        ("device", "mobile"),
        ("segment", str(segment.pk)),
        ("palette", "colourblind"),
    ]:
        choose(page, name, value)
    with scopes_disabled():
        segment_obj = Segment.objects.get(pk=segment.pk)
    assert_page_is_a_recount(page, [b.pk], reliable=True, device="mobile", segment=segment_obj)

    before = page_rows(page)
    choose(page, "view", "mobile")
    wait_for_map(page)
    assert page_rows(page) == before  # the picture changes, the numbers do not
    assert page.locator(".preview-mobile").count() == 1
    assert page.evaluate(OVERLAPS_JS) == []
    page.set_viewport_size({"width": 900, "height": 1000})
    page.screenshot(path=SCREENSHOTS / "clickmap-mobile.png")
    page.set_viewport_size({"width": 1440, "height": 1000})

    page.go_back()  # the URL always states the view: back returns to desktop
    page.wait_for_function("!location.search.includes('view=mobile')")
    page.reload()
    wait_for_map(page)

    # Colours only: no numbers on the map, and the URL says so.
    choose(page, "display", "colours")
    wait_for_map(page)
    assert page.locator(".num-badge").count() == 0 and page.locator(".box").count() > 0
    choose(page, "display", "numbers")
    wait_for_map(page)

    # Downloads: the current selection, as CSV and as Excel, the rows the page lists.
    listed = [(total, unique) for _, total, unique, _ in page_rows(page)]
    with page.expect_download() as csv_download:
        page.click("a:has-text('CSV')")
    table = list(csv.reader(io.StringIO(Path(csv_download.value.path()).read_text())))
    with page.expect_download() as xlsx_download:
        page.click("a:has-text('Excel')")
    assert xlsx_download.value.suggested_filename.endswith(".xlsx")
    xlsx_download.value.save_as(tmp_path / "clickmap.xlsx")
    sheet = openpyxl.load_workbook(tmp_path / "clickmap.xlsx")["Links"]
    xlsx = [[c.value for c in r] for r in sheet.iter_rows(min_row=2)]
    assert [(int(r[11]), int(r[12])) for r in table[1:]] == listed
    assert [(r[11], r[12]) for r in xlsx] == listed

    # Compare: both variants' maps side by side, and the comparison table.
    choose(page, "compare", str(a.pk))
    wait_for_map(page)
    assert page.locator(".preview-frame").count() == 2
    assert page.locator("table.compare tbody tr").count() > 3
    assert page.evaluate(OVERLAPS_JS) == []
    page.screenshot(path=tmp_path / "compare.png")

    # Preview for: that customer's own email and clicks.
    page.goto(f"{live_server.url}/w/demo/campaigns/{campaign.pk}/clickmap/")
    page.fill("input[name=for]", someone.email)
    with page.expect_response(lambda r: "for=" in r.url):
        page.press("input[name=for]", "Enter")
    page.wait_for_selector(f"text=Showing {someone.email}")
    assert parse_qs(urlsplit(page.url).query)["for"] == [someone.email]
    assert_page_is_a_recount(page, [a.pk], customer=someone)
    page.fill("input[name=for]", "nobody@example.invalid")
    page.press("input[name=for]", "Enter")
    page.wait_for_selector("text=No customer with the email address or cookie id")

    # A scenario: each email, and the AMP variant of the first.
    page.goto(f"{live_server.url}/w/demo/campaigns/{scenario.pk}/clickmap/")
    with scopes_disabled():
        nodes = list(scenario.nodes.order_by("position"))
        amp = nodes[0].variants.get(name="AMP")
        second = nodes[1].variants.get()
    choose(page, "node", str(nodes[1].pk))
    assert_page_is_a_recount(page, [second.pk])
    choose(page, "node", str(nodes[0].pk))
    choose(page, "variant", str(amp.pk))
    wait_for_map(page)
    assert "Start shopping" in page.content() or page.locator("table.links").count()
    assert_page_is_a_recount(page, [amp.pk], fmt="amp")
    assert get_user_model().objects.filter(username="demo").exists()
    with scopes_disabled():
        failed = list(Preview.objects.filter(status="failed").values_list("error", flat=True))
    assert failed == []


def test_locate_shows_the_link_and_its_card_closes(demo_site, live_server):
    workspace, page = demo_site
    with scopes_disabled():
        campaign = Campaign.objects.get(name__startswith="Black Friday — 30%")
    page.goto(f"{live_server.url}/w/demo/campaigns/{campaign.pk}/clickmap/")
    wait_for_map(page)
    locate = page.locator("a.locate").nth(2)
    target = locate.get_attribute("href")
    locate.click()
    assert page.evaluate("location.hash") == target
    assert page.locator(f"{target}:target").count() == 1
    card = page.locator(".box-card.pinned")
    card.wait_for(state="visible")
    link_id = target.rsplit("-", 1)[1]
    with scopes_disabled():
        text = TemplateLink.objects.get(pk=link_id).text
    assert text[:20] in card.inner_text()
    card.locator(".card-close").click()
    assert page.locator(".box-card").is_hidden()
    locate.click()  # again; then Escape closes it, and so does a click elsewhere
    card.wait_for(state="visible")
    page.keyboard.press("Escape")
    assert page.locator(".box-card").is_hidden()
    locate.click()
    card.wait_for(state="visible")
    page.click("h1")
    assert page.locator(".box-card").is_hidden()


def test_typing_a_date_keeps_it_and_reloads_the_map_once(demo_site, live_server):
    workspace, page = demo_site
    with scopes_disabled():
        campaign = Campaign.objects.get(name__startswith="Black Friday — 30%")
    page.goto(f"{live_server.url}/w/demo/campaigns/{campaign.pk}/clickmap/")
    wait_for_map(page)
    requests = []
    page.on("request", lambda r: "/clickmap/?" in r.url and requests.append(r.url))
    page.focus("input[name=from]")
    with page.expect_response(lambda r: "from=2026-11-03" in r.url):
        page.keyboard.type("11032026")  # mm dd yyyy, one keystroke at a time
        assert requests == []  # not while typing (each keystroke made a valid date)
    page.wait_for_load_state("networkidle")
    assert len(requests) == 1
    assert page.input_value("input[name=from]") == "2026-11-03"
    assert parse_qs(urlsplit(page.url).query)["from"] == ["2026-11-03"]
    # Enter takes the date at once; so does leaving the field.
    page.focus("input[name=to]")
    with page.expect_response(lambda r: "to=2026-11-09" in r.url):
        page.keyboard.type("11092026")
        page.keyboard.press("Enter")
    page.wait_for_load_state("networkidle")
    assert len(requests) == 2
    assert page.input_value("input[name=to]") == "2026-11-09"


def test_the_link_list_is_readable_at_1280_px_with_25_links(demo_site, live_server):
    workspace, page = demo_site
    with scopes_disabled():
        campaign = Campaign.objects.get(name__startswith="Black Friday — 30%")
        links = TemplateLink.objects.filter(
            version=campaign.nodes.get().variants.get(name="A").template_version, mso=False
        ).count()
    assert links >= 25
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/w/demo/campaigns/{campaign.pk}/clickmap/")
    wait_for_map(page)
    assert page.locator("table.links tbody tr").count() >= 25
    clipped = page.evaluate(
        """() => {
      const wrap = document.querySelector('.listcol .tablewrap');
      const table = wrap.querySelector('table');
      const edge = wrap.getBoundingClientRect().right + 0.5;
      const out = [...table.querySelectorAll('th, td')]
        .filter(c => c.getBoundingClientRect().right > edge);
      return {overflow: table.scrollWidth - wrap.clientWidth, cells: out.length};
    }"""
    )
    assert clipped == {"overflow": 0, "cells": 0}
    # Sorting by a column header re-orders the list and says so.
    with page.expect_response(lambda r: "sort=total" in r.url):
        page.click("table.links th.col-total a")
    page.wait_for_load_state("networkidle")
    totals = [total for _, total, _, _ in page_rows(page)]
    assert totals == sorted(totals, reverse=True)
    assert page.get_attribute("table.links th.col-total", "aria-sort") == "descending"
    with page.expect_response(lambda r: "sort=position" in r.url):
        page.click("table.links th.col-position a")
    page.wait_for_load_state("networkidle")
    positions = [
        int(c.inner_text()) for c in page.locator("table.links tbody td.col-position").all()
    ]
    assert positions == sorted(positions)


def test_the_page_works_on_a_390_px_screen(demo_site, live_server):
    workspace, page = demo_site
    with scopes_disabled():
        campaign = Campaign.objects.get(name__startswith="Black Friday — 30%")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/w/demo/campaigns/{campaign.pk}/clickmap/?view=mobile")
    wait_for_map(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    for selector in ("select[name=metric]", "input[name=from]", ".summary", ".preview-frame"):
        box = page.locator(selector).first.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
    assert page.evaluate(OVERLAPS_JS) == []
    choose(page, "metric", "total")
    assert page.locator("table.links tbody tr").count() > 5
    icon = page.evaluate("document.querySelector('link[rel=icon]').href")
    assert page.request.get(icon).status == 200


def _email_campaign(workspace, name, html, assets=None):
    with scope(workspace=workspace):
        version = template_create(workspace=workspace, name=name, html=html, assets=assets)
        campaign = Campaign.objects.create(workspace=workspace, name=name)
        node = EmailNode.objects.create(campaign=campaign, name="Email", position=1)
        Variant.objects.create(node=node, name="A", subject="s", template_version=version)
    return campaign


@pytest.mark.parametrize("device", ["desktop", "mobile"])
def test_badges_never_hide_a_link_on_any_corpus_or_demo_email(
    transactional_db, live_server, browser, eager_tasks, make_user, make_workspace, device
):
    owner = make_user("owner")
    workspace = make_workspace("Badges", owner=owner)
    emails = [(p.name, p.read_text(encoding="utf-8"), None) for p in sorted(CORPUS.glob("*.html"))]
    emails += [(name, *demo_email(file)) for name, file in DEMO_TEMPLATES.items()]
    campaigns = [_email_campaign(workspace, name, html, assets) for name, html, assets in emails]
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, bypass_csp=True)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", "owner")
        page.fill("#id_password", USER_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"**/w/{workspace.slug}/**")
        problems = {}
        badges = 0
        for campaign in campaigns:
            page.goto(
                f"{live_server.url}/w/{workspace.slug}/campaigns/{campaign.pk}/clickmap/"
                f"?view={device}"
            )
            wait_for_map(page)
            badges += page.locator(".num-badge").count()
            found = page.evaluate(OVERLAPS_JS)
            if found:
                problems[campaign.name] = found
        assert problems == {}
        assert badges > 200  # every drawn link has its number, 0 included
    finally:
        context.close()
