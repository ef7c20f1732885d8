"""The click map in a real browser (Playwright with Debian's Chromium against the live
test server): log in, open the demo campaign's click map, switch every selector, toggle
mobile, use Preview for, locate a link, download CSV and Excel — the numbers in the
page and in both files are the query module's. Saves the README's screenshots."""

import csv
import io
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import openpyxl
import pytest
from django.contrib.auth import get_user_model
from django.http import QueryDict
from django_scopes import scope, scopes_disabled

from campaigns.models import Campaign, Customer, Segment
from clickmap import exports, metrics
from clickmap.dashboard import Selection, link_rows, shown_version
from clickmap.demo import seed_demo
from clickmap.models import Preview

SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
PASSWORD = "browser-test-password-1"
COL = {name: i for i, name in enumerate(exports.HEADER)}


def expected(workspace, campaign, url):
    """(rows, totals) the query module gives for the page's current URL."""
    query = QueryDict(urlsplit(url).query)
    with scope(workspace=workspace):
        selection = Selection.from_query(campaign, query)
        rows = link_rows(selection, shown_version(selection))
        totals = metrics.email_totals(selection.scope())
        by_link = {m.link.pk: m for m in metrics.link_metrics(selection.scope())}
    return selection, rows, totals, by_link


def page_numbers(page):
    """(total, unique, rate) of each row of the link list, in page order."""
    rows = []
    for row in page.locator("table.links tbody tr").all():
        cells = [c.inner_text().strip() for c in row.locator("td").all()]
        if len(cells) < 6:
            continue
        rows.append(
            (
                int(cells[2].replace(",", "")),
                int(cells[3].replace(",", "")),
                float(cells[4].rstrip(" %")),
            )
        )
    return rows


def assert_page_matches(page, workspace, campaign):
    _, rows, totals, _ = expected(workspace, campaign, page.url)
    assert page_numbers(page) == [(r.total, r.unique, round(r.rate, 2)) for r in rows]
    clickers = page.locator(".summary div", has_text="Clickers").locator("strong").inner_text()
    assert int(clickers.replace(",", "")) == totals.clickers
    return rows


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


def wait_for_preview(page):
    page.wait_for_selector(".preview-frame img", timeout=60_000)
    page.wait_for_function("document.querySelector('.preview-frame img').complete", timeout=30_000)


@pytest.mark.browser
def test_click_map_in_the_browser(transactional_db, live_server, browser, eager_tasks, tmp_path):
    login = seed_demo(PASSWORD, customers=300)
    workspace = login.workspace
    with scopes_disabled():
        campaign = Campaign.objects.get(name__startswith="Black Friday")
        scenario = Campaign.objects.get(name="Welcome series")
        segment = Segment.objects.get(name="Germany")
        variant_b = campaign.nodes.get().variants.get(name="B")
        someone = Customer.objects.filter(deliveries__node__campaign=campaign).first()
    # Playwright's wait_for_function runs its predicate with eval inside the page, which the
    # Content-Security-Policy refuses; test_csp_browser opens the pages under the policy.
    context = browser.new_context(
        viewport={"width": 1440, "height": 1000}, accept_downloads=True, bypass_csp=True
    )
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", login.username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/w/demo/campaigns/")
        page.click(f"text={campaign.name}")
        page.click("a.button:has-text('Click map')")
        page.wait_for_url("**/clickmap/")
        wait_for_preview(page)
        assert page.locator(".preview-frame .box").count() > 0
        assert_page_matches(page, workspace, campaign)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "clickmap-desktop.png")

        for name, value in [
            ("metric", "unique"),
            ("metric", "total"),
            ("metric", "share"),
            ("variant", str(variant_b.pk)),
            ("reliable", "1"),
            ("device", "mobile"),
            ("segment", str(segment.pk)),
            ("from", "2000-01-01"),
            ("palette", "colourblind"),
        ]:
            choose(page, name, value)
            assert_page_matches(page, workspace, campaign)

        before = page_numbers(page)
        choose(page, "view", "mobile")
        wait_for_preview(page)
        assert page_numbers(page) == before  # the picture changes, the numbers do not
        assert page.locator(".preview-mobile").count() == 1
        page.set_viewport_size({"width": 900, "height": 1000})
        page.screenshot(path=SCREENSHOTS / "clickmap-mobile.png")
        page.set_viewport_size({"width": 1440, "height": 1000})

        page.go_back()  # the URL always states the view: back returns to desktop
        page.wait_for_function("!location.search.includes('view=mobile')")

        # Locate: the list's link scrolls the preview to the box and marks it.
        wait_for_preview(page)
        locate = page.locator("a.locate").first
        target = locate.get_attribute("href")
        locate.click()
        assert page.evaluate("location.hash") == target
        assert page.locator(f"{target}:target").count() == 1

        # Downloads: the current selection, as CSV and as Excel.
        _, rows, _, by_link = expected(workspace, campaign, page.url)
        with page.expect_download() as csv_download:
            page.click("a:has-text('CSV')")
        table = list(csv.reader(io.StringIO(Path(csv_download.value.path()).read_text())))
        with page.expect_download() as xlsx_download:
            page.click("a:has-text('Excel')")
        assert xlsx_download.value.suggested_filename.endswith(".xlsx")
        xlsx_download.value.save_as(tmp_path / "clickmap.xlsx")
        sheet = openpyxl.load_workbook(tmp_path / "clickmap.xlsx")["Links"]
        xlsx = [[c.value for c in r] for r in sheet.iter_rows(min_row=2)]
        assert len(table) - 1 == len(xlsx) == len(by_link)
        want = sorted((m.total, m.unique) for m in by_link.values())
        assert (
            sorted((int(r[COL["Total clicks"]]), int(r[COL["Unique clicks"]])) for r in table[1:])
            == want
        )
        assert sorted((r[COL["Total clicks"]], r[COL["Unique clicks"]]) for r in xlsx) == want

        # Preview for: that customer's own email and clicks.
        page.fill("input[name=for]", someone.email)
        with page.expect_response(lambda r: "for=" in r.url):
            page.press("input[name=for]", "Enter")
        page.wait_for_selector(f"text=Showing {someone.email}")
        assert parse_qs(urlsplit(page.url).query)["for"] == [someone.email]
        assert_page_matches(page, workspace, campaign)
        page.fill("input[name=for]", "nobody@example.invalid")
        page.press("input[name=for]", "Enter")
        page.wait_for_selector("text=No customer with the email address or cookie id")

        # A scenario: each email, and the AMP variant of the first.
        page.goto(f"{live_server.url}/w/demo/campaigns/{scenario.pk}/clickmap/")
        with scopes_disabled():
            nodes = list(scenario.nodes.order_by("position").values_list("pk", flat=True))
        choose(page, "node", str(nodes[1]))
        assert_page_matches(page, workspace, scenario)
        choose(page, "node", str(nodes[0]))
        choose(page, "format", "amp")
        wait_for_preview(page)
        assert re.search(r"Start shopping", page.content())
        assert_page_matches(page, workspace, scenario)
    finally:
        context.close()
    assert get_user_model().objects.filter(username="demo").exists()
    with scopes_disabled():
        failed = list(Preview.objects.filter(status="failed").values_list("error", flat=True))
    assert failed == []
