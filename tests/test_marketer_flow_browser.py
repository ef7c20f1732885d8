"""The whole flow in the browser, as a marketer runs a campaign (issue 18's headline
acceptance test): Playwright with Debian's Chromium against the live test server, a real
Celery worker and a real celery beat over Redis, a real SMTP server (aiosmtpd).

Signed in, the marketer creates a workspace from the switcher, sets its time zone,
imports a customer CSV with three bad rows (reported with their line numbers, downloaded
as CSV), builds a segment whose live count equals a recount of the CSV, uploads a
template as a zip with its images, creates an A/B campaign, sends a test (received,
marked, and no number moves), schedules the real send to the segment for the next
minute in the workspace's time zone and watches beat fire it (exactly the segment's
members receive it), clicks links in the received messages over real HTTP, and reads
the campaign list, the campaign page, the click map and the template report: each equals
clickmap.metrics and a brute-force count of the clicks made. The exports (click map CSV
and Excel, template report CSV, customer list CSV) carry the same figures."""

import csv
import http.client
import io
import os
import re
import time
import zipfile
import zoneinfo
from collections import Counter, defaultdict
from contextlib import ExitStack
from datetime import timedelta
from urllib.parse import urlsplit

import openpyxl
import pytest
from django.utils import timezone
from django_scopes import scope, scopes_disabled
from PIL import Image

from campaigns.models import Campaign, Customer, Delivery, Segment, Template, Workspace
from clickmap import metrics
from tests.conftest import PASSWORD, database_url
from tests.test_csp_browser import Watcher
from tests.test_scheduled_sends import celery_beat
from tests.test_send_and_click import DESKTOP_CHROME
from tests.test_send_queues import celery_worker
from tracking.hotpath import DEDUP_SECONDS
from tracking.models import ClickEvent

pytestmark = pytest.mark.browser

ZONE = "Asia/Kolkata"  # UTC+05:30: a schedule read as UTC would be hours off
BAD_LINES = {4: "orders", 9: "signed_up", 15: "email"}  # CSV line -> what is wrong


def customer_csv() -> tuple[str, list[dict]]:
    """24 data rows (lines 2-25), three of them bad; returns the text and the good rows."""
    lines, good = ["email,first name,plan,orders,signed up"], []
    for i in range(24):
        line = i + 2
        row = {
            "email": f"c{i:02d}@example.test",
            "first_name": f"Name{i}",
            "plan": "pro" if i % 3 != 1 else "free",
            "orders": str(i % 5),
            "signed_up": f"2024-0{1 + i % 9}-1{i % 10}",
        }
        if BAD_LINES.get(line) == "orders":
            row["orders"] = "lots"
        elif BAD_LINES.get(line) == "signed_up":
            row["signed_up"] = "2024-02-30"
        elif BAD_LINES.get(line) == "email":
            row["email"] = "not-an-address"
        else:
            good.append(row)
        lines.append(",".join(row.values()))
    return "\r\n".join(lines) + "\r\n", good


def png(colour: tuple, size=(120, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


TEMPLATE_HTML = """<!doctype html>
<html><body style="margin:0">
<table width="600" cellpadding="0" cellspacing="0" align="center"><tr><td>
<img src="images/hero.png" width="600" height="200" alt="Spring sale">
<h1>Hello {{ customer.first_name }}</h1>
<p>Our spring sale starts now.</p>
<p><a href="https://shop.example/sale">Shop the sale</a></p>
<p><a href="https://shop.example/guide">Read the guide</a></p>
<p><img src="images/logo.png" width="120" height="60" alt="Logo"></p>
<p><a href="https://shop.example/stores">Find a store</a></p>
</td></tr></table>
</body></html>
"""
LINK_TEXTS = ["Shop the sale", "Read the guide", "Find a store"]


def template_zip(path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("spring/spring.html", TEMPLATE_HTML)
        z.writestr("spring/images/hero.png", png((200, 60, 60), (600, 200)))
        z.writestr("spring/images/logo.png", png((40, 90, 200)))


def tracked_links(message) -> dict[str, str]:
    """Link text -> tracked URL, from a received message's HTML part."""
    html = message.get_body(preferencelist=("html",)).get_content()
    return {
        text.strip(): href.replace("&amp;", "&")
        for href, text in re.findall(r'<a [^>]*href="([^"]+)"[^>]*>([^<]+)</a>', html)
    }


def open_pixel(message) -> str:
    html = message.get_body(preferencelist=("html",)).get_content()
    return re.search(r'<img [^>]*src="([^"]*/o/[^"]+)"', html).group(1).replace("&amp;", "&")


def fetch(url: str) -> tuple[int, str]:
    """One GET as the recipient's desktop browser does it (redirects not followed)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers={"User-Agent": DESKTOP_CHROME, "Accept": "text/html"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Location", "")
    finally:
        conn.close()


def settle(state, wanted, what: str, timeout: float = 180.0) -> None:
    """Wait until `state()` equals `wanted`, polling gently (the queries are not free on
    a loaded machine); the last state seen is in the failure's message."""
    deadline = time.monotonic() + timeout
    while (seen := state()) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {seen} != {wanted}")
        time.sleep(0.5)


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f} %" if whole else "0.00 %"


def texts(locator) -> list[str]:
    """The texts of `locator`'s elements, white space collapsed."""
    return [" ".join(t.split()) for t in locator.all_inner_texts()]


@pytest.mark.django_db(transaction=True)
def test_a_marketer_runs_a_campaign_from_start_to_finish_in_the_browser(
    live_server,
    browser,
    make_user,
    make_workspace,
    smtp_server,
    spool_dir,
    redis_client,
    settings,
    tmp_path,
):
    shots = tmp_path / "shots"
    shots.mkdir()
    settings.TRACKING_BASE_URL = live_server.url
    settings.TRACKING_INGEST_INLINE = False  # the worker ingests the spool, as in production
    settings.CUSTOMER_IMPORT_DIR = tmp_path / "imports"
    user = make_user("marketer")
    make_workspace("Old shop", owner=user)  # so the switcher is there to offer a new one
    text, good = customer_csv()
    source = tmp_path / "customers.csv"
    source.write_text(text, encoding="utf-8")
    zipped = tmp_path / "spring.zip"
    template_zip(zipped)

    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        EMAIL_URL=f"smtp://127.0.0.1:{settings.EMAIL_PORT}",
        TRACKING_SPOOL_DIR=str(spool_dir),
        TRACKING_BASE_URL=live_server.url,
        TRACKING_INGEST_INLINE="0",
        CUSTOMER_IMPORT_DIR=str(settings.CUSTOMER_IMPORT_DIR),
    )
    with ExitStack() as stack:
        stack.enter_context(
            celery_worker("pipeline,clickmap,send,previews", env, tmp_path / "worker.log")
        )
        stack.enter_context(celery_beat(env, tmp_path))
        context = browser.new_context(
            viewport={"width": 1440, "height": 1000}, accept_downloads=True
        )
        stack.callback(context.close)
        context.set_default_timeout(60_000)
        watcher = Watcher(context)  # the strict CSP holds on every page of the flow
        page = context.new_page()
        watcher.watch(page)
        server_errors = []
        page.on("response", lambda r: server_errors.append(r.url) if r.status >= 500 else None)
        run_the_flow(page, live_server.url, smtp_server, good, source, zipped, shots, tmp_path)
        assert watcher.take() == []
        assert server_errors == []


def run_the_flow(page, base, smtp, good, source, zipped, shots, tmp_path):
    # 1. Sign in and create a workspace from the switcher.
    page.goto(f"{base}/login/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/w/**")
    page.click(".switcher summary")
    page.click("text=+ New workspace")
    page.fill("#id_name", "Spring shop")
    page.click("button >> text=Create workspace")
    page.wait_for_url("**/w/**")
    with scopes_disabled():
        workspace = Workspace.objects.get(name="Spring shop")
        assert workspace.memberships.get().role == "owner"
    assert f"/w/{workspace.slug}/" in page.url
    page.click(".switcher summary")
    assert texts(page.locator(".switcher li a"))[:2] == ["Old shop Owner", "Spring shop Owner"]
    page.click("nav.mainnav >> text=Settings")
    page.select_option("#id_time_zone", ZONE)
    page.fill("#id_bot_min_seconds_after_delivery", "0")
    page.click("button >> text=Save settings")
    page.wait_for_selector(".msg")
    workspace.refresh_from_db()
    assert workspace.time_zone == ZONE and workspace.bot_min_seconds_after_delivery == 0

    # 2. Import customers: three bad rows reported, the others imported.
    page.click("nav.mainnav >> text=Customers")
    page.click("text=Import customers")
    page.set_input_files("#id_file", str(source))
    page.click("button[type=submit] >> text=Upload and map columns")
    page.wait_for_selector("#mapping")
    assert page.input_value("select[name=field_0]") == "email"
    page.select_option("select[name=type_3]", "number")
    page.select_option("select[name=type_4]", "date")
    page.click("#mapping-form button[type=submit]")
    page.wait_for_selector("text=Import finished", timeout=120_000)  # the worker's task
    summary = {n: page.inner_text(f"#import-{n}") for n in ("created", "updated", "skipped")}
    summary["failed"] = page.inner_text("#import-failed")
    assert summary == {"created": str(len(good)), "updated": "0", "skipped": "0", "failed": "3"}
    shown_lines = [
        int(t) for t in texts(page.locator("#import-errors tbody tr td.line"))
    ]  # the bad rows, on the page
    assert shown_lines == sorted(BAD_LINES)
    page.screenshot(path=shots / "import.png", full_page=True)
    with page.expect_download() as download:
        page.click("text=Download the rows not imported (CSV)")
    with open(download.value.path(), encoding="utf-8", newline="") as f:
        errors = list(csv.reader(f))[1:]
    assert [int(r[0]) for r in errors] == sorted(BAD_LINES)
    for row, (line, what) in zip(errors, sorted(BAD_LINES.items()), strict=True):
        assert what in row[1] or (what == "email" and "email address" in row[1]), (line, row)
    with scopes_disabled():
        stored = {c.email: c.attributes for c in Customer.objects.filter(workspace=workspace)}
    assert set(stored) == {r["email"] for r in good}

    # 3. A segment: the pro plan. Its live count is the CSV's good pro rows.
    pro = sorted(r["email"] for r in good if r["plan"] == "pro")
    page.click("nav.mainnav >> text=Segments")
    page.locator("text=New segment").first.click()
    page.fill("#id_name", "Pro plan")
    page.fill("#c-0-attribute", "plan")
    page.fill("#c-0-value", "pro")
    page.wait_for_function(
        "n => document.querySelector('#segment-preview .member-count')?.dataset.count === n",
        arg=str(len(pro)),
    )
    page.click("button[value=save]")
    page.wait_for_url("**/segments/*/")
    with scopes_disabled():
        segment = Segment.objects.get(workspace=workspace, name="Pro plan")

    # 4. The template, uploaded as a zip with its images.
    page.click("nav.mainnav >> text=Templates")
    page.locator("text=New template").first.click()
    page.fill("#id_name", "Spring sale")
    page.set_input_files("#id_html_file", str(zipped))
    page.click("button >> text=Save template")
    page.wait_for_url("**/templates/*/**")
    with scopes_disabled():
        template = Template.objects.get(workspace=workspace, name="Spring sale")
        version = template.versions.get()
        images = dict(version.images.values_list("src", "status"))
    assert images == {"images/hero.png": "stored", "images/logo.png": "stored"}

    # 5. An A/B campaign: two variants of the template, different subjects.
    page.click("nav.mainnav >> text=Campaigns")
    page.locator("text=New campaign").first.click()
    page.fill("#id_name", "Spring sale launch")
    page.click("button >> text=Save")
    page.wait_for_url("**/campaigns/*/")
    subjects = {"A": "Spring sale: 20% off", "B": "{{ customer.first_name }}, spring is here"}
    for name, subject in subjects.items():
        if not page.locator("details:has(> summary:text('Add a variant'))[open]").count():
            page.click("summary >> text=Add a variant")
        page.fill("#id_node_name", "Email")
        page.fill("#id_name", name)
        page.fill("#id_subject", subject)
        page.click("button >> text=Add variant")
        page.wait_for_selector(f"td >> text='{name}'")
    with scopes_disabled():
        campaign = Campaign.objects.get(workspace=workspace, name="Spring sale launch")
    assert campaign.status == "draft"

    def figures():
        with scope(workspace=workspace):
            totals = metrics.email_totals(metrics.Scope(workspace, campaign_id=campaign.pk))
            listed = metrics.campaign_figures([campaign.pk])[campaign.pk]
            return totals, listed, Delivery.objects.filter(node__campaign=campaign).count()

    # 6. A test send: received, marked as a test, and no number moves.
    before = figures()
    page.click("summary >> text=Send a test")
    page.fill("#id_addresses", "boss@example.test")
    page.click("button >> text=Send test")
    page.wait_for_selector("text=Test sent to boss@example.test")
    # One message per variant, marked, and untracked: a test can never reach a number.
    test_messages = smtp.messages()
    assert sorted(m["X-Clickmap-Test"] is not None for m in test_messages) == [True, True]
    assert {m["To"] for m in test_messages} == {"boss@example.test"}
    test_subjects = sorted(m["Subject"] for m in test_messages)
    assert test_subjects[0].startswith("[Test] Name") and test_subjects[0].endswith(
        ", spring is here"
    )
    assert test_subjects[1] == f"[Test] {subjects['A']}"
    for message in test_messages:
        html = message.get_body(preferencelist=("html",)).get_content()
        assert "https://shop.example/sale" in html and "/c/" not in html and "/o/" not in html
    assert figures() == before
    with scopes_disabled():
        assert Campaign.objects.get(pk=campaign.pk).status == "draft"

    # 7. Schedule the real send to the segment for the next whole minute (the form's
    # precision) at least 30 s away, entered in the workspace's time zone.
    at = (timezone.now() + timedelta(seconds=90)).replace(second=0, microsecond=0)
    local = at.astimezone(zoneinfo.ZoneInfo(ZONE))
    page.select_option("#id_segment", str(segment.pk))
    page.select_option("#id_when", "later")
    page.fill("#id_date", local.date().isoformat())
    page.fill("#id_time", local.strftime("%H:%M"))
    page.click("text=Review and confirm…")
    page.wait_for_selector(".recipients")
    assert page.locator(".recipients strong").get_attribute("data-count") == str(len(pro))
    assert f"{at:%Y-%m-%d %H:%M} UTC" in page.inner_text(".confirm")
    page.click("button[name=confirm]")
    page.wait_for_url(f"**/campaigns/{campaign.pk}/")
    page.wait_for_selector("#send-progress[data-status=scheduled]")
    with scopes_disabled():
        assert Campaign.objects.get(pk=campaign.pk).scheduled_at == at
    assert len(smtp.messages()) == 2  # nothing before its time
    page.wait_for_selector("#send-progress[data-status=sent]", timeout=240_000)
    with scopes_disabled():
        first_sent = min(Delivery.objects.filter(node__campaign=campaign).values_list("sent_at"))
    assert first_sent[0] >= at  # never before its time
    assert page.locator('#send-progress [data-n="sent"]').inner_text() == str(len(pro))
    page.screenshot(path=shots / "sent.png", full_page=True)
    received = {m["To"]: m for m in smtp.messages()[2:]}
    assert sorted(received) == pro  # exactly the segment's members, once each
    assert len(smtp.messages()) == 2 + len(pro)
    first_names = {r["email"]: r["first_name"] for r in good}
    variant_of = {}
    for to, message in received.items():
        if message["Subject"] == subjects["A"]:
            variant_of[to] = "A"
        else:
            assert message["Subject"] == f"{first_names[to]}, spring is here"
            variant_of[to] = "B"
    assert set(variant_of.values()) == {"A", "B"}

    # 8. Recipients click: every second one the sale, every fourth the guide too, one
    # clicks the sale twice; two who click nothing open the email.
    clicks = []  # (recipient, link text)
    for i, to in enumerate(pro):
        if i % 2 == 0:
            clicks.append((to, "Shop the sale"))
        if i % 4 == 0:
            clicks.append((to, "Read the guide"))
    openers_only = [pro[1], pro[3]]
    for to, text in clicks:
        status, location = fetch(tracked_links(received[to])[text])
        assert status == 302 and location.startswith("https://shop.example/"), (status, text)
    first_round = time.monotonic()
    for to in openers_only:
        assert fetch(open_pixel(received[to]))[0] == 200
    # The first recipient comes back to the sale later: a second click, counted in the
    # total (the tracker folds repeats within DEDUP_SECONDS into one: a double click).
    while time.monotonic() < first_round + DEDUP_SECONDS + 0.2:
        time.sleep(0.05)
    clicks.append((pro[0], "Shop the sale"))
    assert fetch(tracked_links(received[pro[0]])["Shop the sale"])[0] == 302

    # Brute force over the clicks made.
    clickers = {to for to, _ in clicks}
    openers = clickers | set(openers_only)
    per_link_total = Counter(text for _, text in clicks)
    per_link_unique = {t: len({to for to, x in clicks if x == t}) for t in LINK_TEXTS}
    by_variant = defaultdict(lambda: {"delivered": 0, "clickers": set(), "openers": set()})
    for to, v in variant_of.items():
        by_variant[v]["delivered"] += 1
        by_variant[v]["clickers"] |= {to} & clickers
        by_variant[v]["openers"] |= {to} & openers
    delivered = len(pro)

    def state():
        totals, listed, _ = figures()
        return (
            ClickEvent.objects.filter(workspace=workspace).count(),
            totals.total_clicks,
            totals.clickers,
            listed.clickers,
            totals.unique_opens,
            listed.unique_opens,
        )

    wanted = (len(clicks), len(clicks), len(clickers), len(clickers), len(openers), len(openers))
    with scopes_disabled():
        settle(state, wanted, "ingestion and aggregation of the clicks and opens")
    totals, listed, deliveries = figures()
    assert deliveries == delivered
    assert (totals.sent, totals.delivered, listed.delivered) == (delivered,) * 3

    # 9. The campaign list, the campaign page, the click map and the template report.
    page.click("nav.mainnav >> text=Campaigns")
    page.wait_for_selector("#campaign-table .pending", state="detached")
    row = page.locator("#campaign-table tbody tr", has_text="Spring sale launch")
    expected_row = [
        f"{delivered}",
        f"{len(openers)}",
        f"{len(clickers)}",
        pct(len(clickers), delivered),
        pct(len(clickers), len(openers)),
    ]
    assert texts(row.locator("td.figure")) == expected_row
    assert expected_row[3] == f"{listed.ctr:.2f} %" and expected_row[4] == f"{listed.ctor:.2f} %"
    page.screenshot(path=shots / "campaign-list.png", full_page=True)

    page.click("text=Spring sale launch")
    page.wait_for_selector("#campaign-results .kpis")
    kpis = texts(page.locator("#campaign-results .kpis strong"))
    assert kpis[:5] == expected_row
    assert f"{totals.ctr:.2f} %" == expected_row[3]
    for i, v in enumerate(["A", "B"]):
        side = by_variant[v]
        for figure, value in (
            ("delivered", side["delivered"]),
            ("unique_opens", len(side["openers"])),
            ("clickers", len(side["clickers"])),
        ):
            cell = page.locator(f'table.variants td[data-figure="{figure}"]').nth(i)
            assert cell.inner_text().strip() == str(value), (v, figure)

    # Top links: each clicked link once, A's and B's unique clickers side by side.
    def unique_of(variant, text):
        return len({to for to, x in clicks if x == text and variant_of[to] == variant})

    top = [texts(tr.locator("td")) for tr in page.locator("table.toplinks tbody tr").all()]
    assert [(row[0], row[1], row[3]) for row in top] == [
        (text, str(unique_of("A", text)), str(unique_of("B", text)))
        for text in ("Shop the sale", "Read the guide")  # by unique clicks, most first
    ]
    page.screenshot(path=shots / "campaign-page.png", full_page=True)

    page.click("a.button >> text=Click map")
    page.wait_for_selector("#clickmap .summary")
    summary = texts(page.locator("#clickmap .summary strong"))
    assert summary == [
        str(delivered),
        str(delivered),
        str(len(openers)),
        str(len(clickers)),
        pct(len(clickers), delivered),
        pct(len(clickers), len(openers)),
        "0",
    ]
    with scope(workspace=workspace):
        table = metrics.link_table(metrics.Scope(workspace, campaign_id=campaign.pk))
    module = {r.link.text: (r.total, r.unique) for r in table}
    truth = {t: (per_link_total[t], per_link_unique[t]) for t in LINK_TEXTS}
    assert module == truth
    map_rows = {}
    for tr in page.locator("#clickmap table.links tbody tr").all():
        cells = texts(tr.locator("td"))
        map_rows[tr.locator(".linktext").inner_text().strip()] = (int(cells[3]), int(cells[4]))
    assert map_rows == truth
    # The map's badges (the rendered email, numbers are click rates) say the same.
    page.wait_for_selector("#clickmap .num-badge.placed", timeout=120_000)
    for row in table:
        badge = page.locator(f'#clickmap .num-badge[data-link="{row.link.pk}"]')
        want = f"{100 * per_link_unique[row.link.text] / delivered:.1f} %"
        assert badge.inner_text().strip() == want, row.link.text
    page.screenshot(path=shots / "clickmap.png", full_page=True)

    # 10a. The click map's exports.
    with page.expect_download() as download:
        page.click("#clickmap a.button >> text=CSV")
    with open(download.value.path(), encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["Text"]: (int(r["Total clicks"]), int(r["Unique clicks"])) for r in rows} == truth
    with page.expect_download() as download:
        page.click("#clickmap a.button >> text=Excel")
    assert download.value.suggested_filename.endswith(".xlsx")
    with open(download.value.path(), "rb") as f:
        sheet = openpyxl.load_workbook(f).active
    header, *body = [list(r) for r in sheet.iter_rows(values_only=True)]
    at_ = {name: header.index(name) for name in ("Text", "Total clicks", "Unique clicks")}
    assert {
        r[at_["Text"]]: (r[at_["Total clicks"]], r[at_["Unique clicks"]]) for r in body
    } == truth

    # The template report: the version summed over every email that sent it.
    page.click("nav.mainnav >> text=Templates")
    page.click("tr:has-text('Spring sale') >> text=Report")
    page.wait_for_selector("#report-links")
    report_summary = texts(page.locator(".summary strong"))
    assert report_summary == summary
    report_rows = {}
    for tr in page.locator("#report-links tbody tr").all():
        cells = texts(tr.locator("td"))
        report_rows[tr.locator(".linktext").inner_text().strip()] = (int(cells[3]), int(cells[4]))
    assert report_rows == truth
    with scope(workspace=workspace):
        by_template = metrics.email_totals(
            metrics.Scope(workspace, template_id=template.pk, version_id=version.pk)
        )
    assert (by_template.clickers, by_template.total_clicks) == (len(clickers), len(clicks))
    everything = [delivered, delivered, len(openers), len(clickers), len(clicks)]
    assert texts(page.locator("#version-totals tbody tr td")) == [
        "1",
        *map(str, everything),
        f"{100 * len(clickers) / delivered:.2f}",
        f"{100 * len(clickers) / len(openers):.2f}",
        "0",
    ]
    (use,) = page.locator("#campaign-uses tbody tr").all()  # the campaigns that sent it
    assert texts(use.locator("td.num")) == [
        str(delivered),
        str(len(clickers)),
        str(len(clicks)),
        f"{100 * len(clickers) / delivered:.2f}",
    ]
    assert texts(use.locator("td").nth(3)) == ["A, B"]
    page.screenshot(path=shots / "template-report.png", full_page=True)
    with page.expect_download() as download:
        page.click("a.button >> text=CSV")
    with open(download.value.path(), encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["Text"]: (int(r["Total clicks"]), int(r["Unique clicks"])) for r in rows} == truth

    # 10b. The customer list's export: every imported customer with their attributes.
    page.click("nav.mainnav >> text=Customers")
    with page.expect_download() as download:
        page.click("a.button >> text=Export CSV")
    with open(download.value.path(), encoding="utf-8-sig", newline="") as f:
        exported = list(csv.DictReader(f))
    assert len(exported) == len(good)
    email_column = next(k for k in exported[0] if k.lower() == "email")
    by_email = {r[email_column]: r for r in exported}
    assert set(by_email) == {r["email"] for r in good}
    for row in good:
        out = by_email[row["email"]]
        assert out["plan"] == row["plan"] and out["first_name"] == row["first_name"]
        assert float(out["orders"]) == float(row["orders"])
