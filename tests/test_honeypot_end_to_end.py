"""The honeypot, end to end: a campaign sent through a real SMTP server, its hidden link
found in the received message as a scanner finds it, followed through the real /c/
endpoint of a real gunicorn (redirects and all), the spool ingested: the click is
stored as `honeypot`, and so are that delivery's clicks around it, as the classifier's
rule says: every click of the delivery within burst_seconds of a honeypot click."""

import time
import urllib.request
from datetime import timedelta
from html.parser import HTMLParser

from django.utils import timezone
from django_scopes import scope, scopes_disabled

from campaigns.models import Delivery
from campaigns.sending import send_campaign
from tests.factories import customers, sendable_campaign
from tests.tracker_server import Tracker
from tracking.ingest import ingest_spool
from tracking.models import ClickEvent

# Scanners that open every link pose as browsers: only the honeypot gives them away.
BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


class Anchors(HTMLParser):
    """Every <a href> of a message: (href, attributes)."""

    def __init__(self, html: str):
        super().__init__()
        self.found = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "a" and attributes.get("href"):
            self.found.append((attributes["href"], attributes))


def hidden_and_visible(html: str) -> tuple[list[str], list[str]]:
    """The hrefs of a message's hidden links (display:none), and of the others."""
    anchors = Anchors(html).found
    hidden = [href for href, attrs in anchors if "display:none" in attrs.get("style", "")]
    return hidden, [href for href, _ in anchors if href not in hidden]


def follow(url: str) -> tuple[int, str]:
    """GET `url` as a browser does, following redirects: (final status, final URL)."""
    # The URLs are the message's http:// links (checked above), never a file: or other.
    request = urllib.request.Request(url, headers={"User-Agent": BROWSER})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        response.read()
        return response.status, response.url


def test_a_click_on_the_sent_honeypot_flags_it_and_the_deliverys_clicks_around_it(
    make_workspace, smtp_server, landing_server, settings, tmp_path
):
    spool_dir = tmp_path / "spool"
    tracker = Tracker(tmp_path, spool_dir, {}, workers=1)
    try:
        settings.TRACKING_BASE_URL = tracker.base
        workspace = make_workspace("Shop")
        customers(workspace, [("c1", "ann@example.test", {}), ("c2", "bob@example.test", {})])
        html = (
            f'<html><body><p><a href="{landing_server.url}/boots">Boots</a> '
            f'<a href="{landing_server.url}/hats">Hats</a></p></body></html>'
        )
        with scope(workspace=workspace):
            report = send_campaign(sendable_campaign(workspace, html, subject="New in"))
            assert (report.sent, report.failed) == (2, 0)
            # The email sat in the inbox a while: no click is "too soon" after delivery.
            Delivery.objects.update(sent_at=timezone.now() - timedelta(minutes=5))
        received = {
            m["To"]: m.get_body(preferencelist=("html",)).get_content()
            for m in smtp_server.messages()
        }
        hidden, visible = hidden_and_visible(received["ann@example.test"])
        assert len(hidden) == 1 and len(visible) == 2
        bob_visible = hidden_and_visible(received["bob@example.test"])[1]
        assert all(href.startswith(f"{tracker.base}/c/") for href in hidden + visible)

        # A scanner opens every link of Ann's email, the hidden one among them.
        assert follow(visible[0]) == (200, f"{landing_server.url}/boots")
        status, landed = follow(hidden[0])
        assert status == 200 and landed.startswith(f"{tracker.base}/")  # our neutral page
        assert follow(visible[1]) == (200, f"{landing_server.url}/hats")
        assert follow(bob_visible[0]) == (200, f"{landing_server.url}/boots")  # Bob, meanwhile
        time.sleep(2.5)  # Ann's boots again, later than burst_seconds (2) after the trap
        assert follow(visible[0]) == (200, f"{landing_server.url}/boots")
    finally:
        tracker.stop()
    assert ingest_spool(spool_dir).clicks == 5

    with scopes_disabled():
        clicks = list(ClickEvent.objects.select_related("delivery__customer").order_by("at"))
    window = timedelta(seconds=workspace.bot_burst_seconds)
    [trap] = [c for c in clicks if c.honeypot]
    assert trap.delivery.customer.email == "ann@example.test" and trap.reason == "honeypot"
    for event in clicks:
        near = event.delivery_id == trap.delivery_id and abs(event.at - trap.at) <= window
        assert (event.reason == "honeypot") == near, (event.url, event.at, trap.at)
        assert event.reliable == (event.reason == "")
    flagged = [c.url for c in clicks if c.reason == "honeypot" and not c.honeypot]
    assert flagged, "no click of Ann's landed next to the trap: nothing was shown"
    assert [c.reason for c in clicks if c.delivery.customer.email == "bob@example.test"] == [""]
    assert clicks[-1].delivery_id == trap.delivery_id and clicks[-1].reason == ""
