"""The segment builder and the send panel in Chromium (Playwright, Debian's chromium,
the live test server), under the strict CSP: switching a condition's kind redraws its
row, the live count follows every change and equals a brute-force count; the campaign's
send panel leads to a confirmation stating the exact number of recipients; confirming
sends to exactly them through a real SMTP server, and no page breaks the policy."""

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django_scopes import scope, scopes_disabled

from campaigns.models import Campaign, Customer, Delivery, Segment
from tests.conftest import PASSWORD
from tests.factories import customers, sendable_campaign
from tests.rollup_world import T0, links_of
from tests.test_csp_browser import Watcher
from tracking.models import ClickEvent

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def test_build_a_segment_and_send_to_it_in_the_browser(
    transactional_db,
    live_server,
    browser,
    make_workspace,
    make_user,
    smtp_server,
    spool_dir,
    eager_tasks,
    settings,
):
    settings.TRACKING_BASE_URL = live_server.url
    user = make_user("marketer")
    workspace = make_workspace("Fernhill", owner=user)
    rows = [
        (f"f{i}", f"f{i}@example.test", {"country": ["DE", "FR", "DE", "IT"][i % 4]})
        for i in range(16)
    ]
    people = customers(workspace, rows)
    html = "<p>Hi <a href='https://shop.example/'>Shop</a></p>"
    launch = sendable_campaign(workspace, html, name="Launch")
    follow_up = sendable_campaign(workspace, html, subject="Next", name="Follow-up")
    with scope(workspace=workspace):
        variant = launch.nodes.get().variants.get()
        clickers = set()
        for i, person in enumerate(people):
            d = Delivery.objects.create(
                workspace=workspace,
                node=variant.node,
                variant=variant,
                customer=person,
                template_version=variant.template_version,
                status="sent",
                sent_at=T0,
            )
            if i % 3 == 0:  # f0 f3 f6 f9 f12 f15 click
                link = links_of(d)[0]
                ClickEvent.objects.create(
                    event_id=uuid.uuid4(),
                    workspace=workspace,
                    delivery=d,
                    link=link,
                    url=link.href,
                    at=T0 + timedelta(minutes=5),
                )
                clickers.add(person.external_id)
        Customer.objects.filter(external_id="f6").update(unsubscribed_at=T0)
    by_id = {ext: attrs for ext, _, attrs in rows}
    german_clickers = sorted(e for e in clickers if by_id[e]["country"] == "DE")  # f0, f6, f12
    assert german_clickers == ["f0", "f12", "f6"]

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watcher = Watcher(context)
    page = context.new_page()
    watcher.watch(page)
    try:
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", "marketer")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/w/**")

        page.goto(f"{live_server.url}/w/{workspace.slug}/segments/new/")
        page.fill("#id_name", "German clickers")
        page.fill("#c-0-attribute", "country")
        page.fill("#c-0-value", "DE")
        count_is = (
            "n => document.querySelector('#segment-preview .member-count')?.dataset.count === n"
        )
        page.wait_for_function(count_is, arg="8")  # f0 f2 f4 … f14
        page.click("button[value=add]")
        page.select_option("#c-1-kind", "clicked")
        page.locator("#c-1-campaign").wait_for()  # the row was redrawn for its kind
        assert page.locator("#c-1-attribute").count() == 0
        page.select_option("#c-1-campaign", str(launch.pk))
        page.wait_for_function(
            "() => document.querySelector('#segment-preview .member-count')?.dataset.count === '3'"
        )
        page.screenshot(path=SCREENSHOTS / "segment-builder.png")
        page.click("button[value=save]")
        page.wait_for_url("**/segments/*/")
        assert watcher.take() == []
        with scopes_disabled():
            segment = Segment.objects.get(name="German clickers")
        assert segment.rule == [
            {"kind": "attribute", "attribute": "country", "op": "eq", "value": "DE"},
            {"kind": "clicked", "campaign": launch.pk, "reliable": True},
        ]

        page.goto(f"{live_server.url}/w/{workspace.slug}/campaigns/{follow_up.pk}/")
        page.select_option("#id_segment", str(segment.pk))
        page.click("text=Review and confirm…")
        page.wait_for_selector(".recipients")
        # f6 clicked but unsubscribed: two recipients.
        assert page.locator(".recipients strong").get_attribute("data-count") == "2"
        assert "Send to 2 recipients now" in page.inner_text(".confirm")
        page.screenshot(path=SCREENSHOTS / "send-confirmation.png")
        assert watcher.take() == []
        page.click("button[name=confirm]")
        page.wait_for_url(f"**/campaigns/{follow_up.pk}/")
        page.wait_for_selector("#send-progress[data-status=sent]")
        assert page.locator('[data-n="sent"]').inner_text() == "2"
        page.locator(".send-panel").screenshot(path=SCREENSHOTS / "send-panel.png")
        assert watcher.take() == []
    finally:
        context.close()
    assert sorted(m["To"] for m in smtp_server.messages()) == [
        "f0@example.test",
        "f12@example.test",
    ]
    with scopes_disabled():
        assert Campaign.objects.get(pk=follow_up.pk).status == "sent"
