"""End to end with real parts: a corpus email sent through a real SMTP server, opened in
Chromium, a link clicked: the browser lands on the destination and exactly one click
event exists, on the right link and customer."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_scopes import scope, scopes_disabled

from campaigns.models import Delivery
from campaigns.sending import send_campaign
from tests.factories import customers, sendable_campaign
from tracking.models import ClickEvent

DESKTOP_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.mark.browser
def test_sent_email_opened_in_chromium_click_lands_and_is_counted_once(
    transactional_db,
    live_server,
    settings,
    smtp_server,
    landing_server,
    spool_dir,
    make_workspace,
    browser,
):
    settings.TRACKING_BASE_URL = live_server.url
    settings.TRACKING_INGEST_INLINE = True  # the live server stores each event at once
    html = (CORPUS / "postmark-welcome.html").read_text()
    workspace = make_workspace("Postmark fans")
    people = customers(
        workspace,
        [
            (
                f"c{i}",
                f"{name.lower()}@example.test",
                {
                    "name": name,
                    "username": f"{name.lower()}42",
                    "action_url": f"{landing_server.url}/start/{name.lower()}",
                    "login_url": f"{landing_server.url}/login",
                    "help_url": f"{landing_server.url}/help",
                    "live_chat_url": f"{landing_server.url}/chat",
                    "support_email": "support@example.test",
                    "trial_length": f"{10 + i} days",
                },
            )
            for i, name in enumerate(["Ann", "Bob", "Cleo"])
        ],
    )
    campaign = sendable_campaign(workspace, html, subject="Welcome, {{ name }}!")
    with scope(workspace=workspace):
        report = send_campaign(campaign)
    assert (report.sent, report.failed) == (3, 0)

    messages = {m["To"]: m for m in smtp_server.messages()}
    assert set(messages) == {c.email for c in people}
    for customer in people:
        message = messages[customer.email]
        assert message["Subject"] == f"Welcome, {customer.attributes['name']}!"
        body = message.get_body(preferencelist=("html",)).get_content()
        assert customer.attributes["username"] in body
        assert customer.attributes["trial_length"] in body
        assert "{{" not in body
        assert f'href="{landing_server.url}' not in body  # every web link goes through /c/

    bob = people[1]
    # The email sat in the inbox a while: a click seconds after delivery is a scanner's.
    with scopes_disabled():
        Delivery.objects.update(sent_at=timezone.now() - timedelta(minutes=5))
    # Headless Chromium names itself HeadlessChrome, which the classifier rightly calls
    # a bot; the recipient's browser is an ordinary desktop Chrome.
    page = browser.new_context(user_agent=DESKTOP_CHROME).new_page()
    try:
        page.set_content(messages[bob.email].get_body(preferencelist=("html",)).get_content())
        button = page.get_by_role("link", name="Do this Next")
        assert button.get_attribute("href").startswith(f"{live_server.url}/c/")
        with page.context.expect_page() as opened:  # target="_blank", as in a mail client
            button.click()
        landed = opened.value
        landed.wait_for_url(f"{landing_server.url}/start/bob")
        assert "Landed on /start/bob" in landed.content()
    finally:
        page.context.close()

    assert [hit for hit in landing_server.hits if hit != "/favicon.ico"] == ["/start/bob"]
    with scopes_disabled():
        click = ClickEvent.objects.select_related("delivery__customer", "link").get()
        delivery = Delivery.objects.get(customer=bob)
    assert click.delivery == delivery and click.delivery.customer == bob
    assert click.url == f"{landing_server.url}/start/bob"
    assert click.link.href == "{{action_url}}"
    assert click.link.text == "Do this Next"
    assert click.link.version_id == delivery.template_version_id
    assert (click.reliable, click.reason, click.device) == (True, "", "desktop")
