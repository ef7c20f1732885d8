"""The results in Chromium on the demo: the campaign list's figures arrive in one request
and equal a recount over the raw rows; the A/B campaign's page shows its summary, the
verdict and the top links; the pictures go to docs/screenshots."""

from pathlib import Path

import pytest
from django_scopes import scopes_disabled

from campaigns.models import Campaign
from clickmap.demo import seed_demo
from tests.test_campaign_results import recount, shown

PASSWORD = "results-browser-pw-1"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


@pytest.fixture
def demo_page(transactional_db, live_server, browser):
    login = seed_demo(PASSWORD, customers=1200, render_previews=False)
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", login.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/campaigns/")
    yield login.workspace, page
    context.close()


@pytest.mark.browser
def test_results_on_the_demo_in_the_browser(demo_page, live_server, tmp_path):
    workspace, page = demo_page
    requests = []
    page.on("request", lambda r: requests.append(r.url) if "/figures/" in r.url else None)
    page.reload()
    page.wait_for_selector("#campaign-table .pending", state="detached")
    assert len(requests) == 1  # one request for the page's figures, not one per row
    with scopes_disabled():
        campaigns = list(Campaign.objects.filter(workspace=workspace))
    for campaign in campaigns:
        row = page.locator("#campaign-table tbody tr", has_text=campaign.name)
        cells = [c.inner_text().strip() for c in row.locator("td.figure").all()]
        if recount(campaign)["sent"]:
            assert cells == shown(recount(campaign)), campaign.name
        else:
            assert cells == ["—"] * 5, campaign.name
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "campaign-list.png", full_page=True)

    friday = next(c for c in campaigns if c.name.startswith("Black Friday — 30%"))
    page.click(f"text={friday.name}")
    page.wait_for_selector("#campaign-results .kpis")
    truth = recount(friday)
    kpis = page.locator("#campaign-results .kpis strong").all_inner_texts()
    assert kpis[:3] == [f"{truth['delivered']:,}", f"{truth['unique_opens']:,}", shown(truth)[2]]
    verdict = page.locator("#campaign-results .verdict").inner_text()
    assert verdict.startswith(("Variant B wins.", "Variant A wins.", "No winner yet."))
    assert page.locator("table.variants thead th").count() == 3  # the label column, A and B
    assert 0 < page.locator("table.toplinks tbody tr").count() <= 5
    page.screenshot(path=SCREENSHOTS / "campaign-page.png", full_page=True)
    page.click("text=Compare the two maps side by side")
    page.wait_for_url("**/clickmap/?*compare=*")
    assert "against variant A" in page.content()

    # A scenario: the summary counts a customer once, then each email, the first with
    # its HTML and AMP variants side by side.
    scenario = next(c for c in campaigns if c.name == "Welcome series")
    page.goto(f"{live_server.url}{scenario.get_absolute_url()}")
    page.wait_for_selector("#campaign-results .kpis")
    assert page.locator("#campaign-results .email-results h3").count() == 3
    assert page.locator("table.variants").count() == 1
    page.screenshot(path=tmp_path / "scenario.png", full_page=True)
