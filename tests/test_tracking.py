"""Tracking endpoints, the spool and ingestion: redirects land, bad tokens 404 without
redirecting, opens and unsubscribes are recorded, and no event is lost or doubled."""

import base64
import ipaddress
import json
import os
import threading

import pytest
from django.test import Client
from django.utils import timezone
from django_scopes import scope, scopes_disabled
from hypothesis import given
from hypothesis import strategies as st

from campaigns.models import Customer, Delivery
from campaigns.sending import plan_deliveries
from tests.factories import sendable_campaign, sent_deliveries
from tracking.hotpath import spool, tracking_wsgi, truncate_ip
from tracking.ingest import ingest_spool
from tracking.links import SignedTracker
from tracking.models import ClickEvent, OpenEvent, Unsubscribe
from tracking.spool import Spool, claim_files
from tracking.tokens import ClickToken, sign_token

HTML = '<p><a href="https://shop.example/a">A</a> <a href="https://shop.example/b">B</a></p>'
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


@pytest.fixture
def delivery(make_workspace, spool_dir):
    workspace = make_workspace("Shop")
    (delivery,) = sent_deliveries(workspace, HTML, [("c1", "ann@example.test", {})])
    return delivery


def link_of(delivery, href):
    with scopes_disabled():
        return delivery.template_version.links.get(href=href)


def stored():
    spool().close()  # let the ingester take the current file
    return ingest_spool()


def test_click_redirects_to_the_signed_destination_and_is_recorded(delivery):
    link = link_of(delivery, "https://shop.example/a")
    url = SignedTracker("http://testserver").click_url(delivery.pk, link.pk, link.href)
    response = Client().get(
        url.removeprefix("http://testserver"), HTTP_USER_AGENT=CHROME, REMOTE_ADDR="203.0.113.77"
    )
    assert response.status_code == 302
    assert response["Location"] == "https://shop.example/a"
    assert "no-store" in response["Cache-Control"]
    # The destination never learns the token (nor the tracker's address) as a Referer.
    assert response["Referrer-Policy"] == "no-referrer"
    assert stored().clicks == 1
    with scopes_disabled():
        event = ClickEvent.objects.get()
    assert (event.delivery_id, event.link_id, event.url) == (delivery.pk, link.pk, link.href)
    assert event.reliable and event.reason == "" and event.device == "desktop"
    assert event.ip == "203.0.113.0"  # truncated, never the raw address


def test_behind_a_proxy_the_client_is_the_address_the_proxy_appended(delivery, settings):
    """X-Forwarded-For: whatever the client sent, then what the proxy saw. A bot writing
    an Apple address in front must not be taken for Apple's mail proxy."""
    settings.TRACKING_TRUST_X_FORWARDED_FOR = True
    link = link_of(delivery, "https://shop.example/a")
    url = SignedTracker("http://testserver").click_url(delivery.pk, link.pk, link.href)
    response = Client().get(
        url.removeprefix("http://testserver"),
        HTTP_USER_AGENT=CHROME,
        HTTP_X_FORWARDED_FOR="17.58.0.1, 198.51.100.23",
        REMOTE_ADDR="10.0.0.2",
    )
    assert response.status_code == 302
    assert stored().clicks == 1
    with scopes_disabled():
        assert ClickEvent.objects.get().ip == "198.51.100.0"


@pytest.mark.parametrize("kind", ["open", "unsubscribe"])
def test_another_kind_of_token_at_the_click_endpoint_is_a_neutral_404(delivery, kind):
    """A valid open-pixel or unsubscribe token is not a click: 404, nothing recorded."""
    from tracking.tokens import OpenToken, UnsubscribeToken

    token = OpenToken(delivery.pk) if kind == "open" else UnsubscribeToken(delivery.pk)
    response = Client().get(f"/c/{sign_token(token)}", HTTP_USER_AGENT=CHROME)
    assert response.status_code == 404
    assert "Location" not in response
    assert stored().clicks == 0


@pytest.mark.parametrize("mangle", ["forged", "truncated", "tampered", "swapped", "slashes"])
def test_bad_tokens_get_a_neutral_404_and_record_nothing(delivery, mangle):
    link = link_of(delivery, "https://shop.example/a")
    token = sign_token(ClickToken(delivery.pk, link.pk, "https://shop.example/a"))
    other = sign_token(ClickToken(delivery.pk, link.pk, "https://evil.example/phish"))
    bad = {
        "forged": base64.urlsafe_b64encode(os.urandom(40)).decode().rstrip("="),
        "truncated": token[:-3],
        "tampered": token[:10] + ("A" if token[10] != "A" else "B") + token[11:],
        "swapped": token[:-22] + other[-22:],  # another token's MAC
        "slashes": token + "/../../evil",
    }[mangle]
    response = Client().get(f"/c/{bad}")
    assert response.status_code == 404
    assert "Location" not in response
    assert b"Link not found" in response.content
    assert stored().clicks == 0


def test_open_pixel_is_a_gif_that_is_never_cached(delivery):
    url = SignedTracker("http://testserver").open_url(delivery.pk)
    response = Client().get(url.removeprefix("http://testserver"), HTTP_USER_AGENT=CHROME)
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    assert response.content.startswith(b"GIF89a")
    assert "no-store" in response["Cache-Control"] and response["Expires"] == "0"
    assert stored().opens == 1
    with scopes_disabled():
        assert OpenEvent.objects.get().reliable


def test_apple_privacy_proxy_opens_are_machine_opens(delivery):
    url = SignedTracker("http://testserver").open_url(delivery.pk)
    Client().get(
        url.removeprefix("http://testserver"),
        HTTP_USER_AGENT="Mozilla/5.0",
        REMOTE_ADDR="17.58.60.12",
    )
    stored()
    with scopes_disabled():
        event = OpenEvent.objects.get()
    assert not event.reliable and event.reason == "apple_mpp"


def test_one_click_unsubscribe_is_recorded_once(delivery):
    url = SignedTracker("http://testserver").unsubscribe_url(delivery.pk)
    path = url.removeprefix("http://testserver")
    client = Client(enforce_csrf_checks=True)  # a mail client has no CSRF token
    for _ in range(2):
        response = client.post(path, {"List-Unsubscribe": "One-Click"})
        assert response.status_code == 200
    with scopes_disabled():
        record = Unsubscribe.objects.get()
        assert record.method == "one_click"
        assert Customer.objects.get().unsubscribed_at == record.at


def test_unsubscribing_again_from_another_campaign_keeps_the_first_time(delivery, spool_dir):
    """The customer unsubscribed from this campaign an hour ago; a later unsubscribe from
    an older campaign's email is recorded for that campaign but keeps the customer's
    unsubscribed_at: when they first left."""
    with scopes_disabled():
        workspace = delivery.workspace
    earlier = sendable_campaign(workspace, HTML, subject="Older")
    with scope(workspace=workspace):
        plan_deliveries(earlier.nodes.get())  # the customer is still subscribed here
        other = Delivery.objects.exclude(pk=delivery.pk).get()
    tracker = SignedTracker("http://testserver")
    client = Client(enforce_csrf_checks=True)
    first = client.post(
        tracker.unsubscribe_url(delivery.pk).removeprefix("http://testserver"),
        {"List-Unsubscribe": "One-Click"},
    )
    assert first.status_code == 200
    with scopes_disabled():
        left_at = Customer.objects.get().unsubscribed_at
        assert left_at == Unsubscribe.objects.get(delivery=delivery).at
    second = client.post(
        tracker.unsubscribe_url(other.pk).removeprefix("http://testserver"),
        {"List-Unsubscribe": "One-Click"},
    )
    assert second.status_code == 200
    with scopes_disabled():
        assert Unsubscribe.objects.count() == 2
        assert Unsubscribe.objects.get(delivery=other).at > left_at
        assert Customer.objects.get().unsubscribed_at == left_at


def test_unsubscribe_page_confirms_before_unsubscribing(delivery):
    path = (
        SignedTracker("http://testserver")
        .unsubscribe_url(delivery.pk)
        .removeprefix("http://testserver")
    )
    client = Client()
    page = client.get(path)
    assert b"Stop emails from" in page.content and b"ann@example.test" in page.content
    with scopes_disabled():
        assert not Unsubscribe.objects.exists()
    done = client.post(path)
    assert b"You are unsubscribed" in done.content
    assert b"You are unsubscribed" in client.get(path).content
    with scopes_disabled():
        assert Unsubscribe.objects.get().method == "page"


def test_unsubscribe_with_a_forged_token_is_404(delivery):
    assert Client().post("/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAA").status_code == 404
    with scopes_disabled():
        assert not Unsubscribe.objects.exists()


def test_wsgi_app_serves_tracking_itself_and_hands_the_rest_to_django(delivery):
    link = link_of(delivery, "https://shop.example/b")
    token = sign_token(ClickToken(delivery.pk, link.pk, link.href))
    calls = []

    def django_app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"dashboard"]

    app = tracking_wsgi(django_app)
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    for method in ("GET", "OPTIONS"):  # not Django's: a checker's OPTIONS is answered too
        app({"PATH_INFO": f"/c/{token}", "REQUEST_METHOD": method}, start_response)
        assert seen["status"] == "302 Found" and seen["headers"]["Location"] == link.href
    app({"PATH_INFO": "/c/garbage", "REQUEST_METHOD": "GET"}, start_response)
    assert seen["status"] == "404 Not Found"
    assert app({"PATH_INFO": "/w/x/", "REQUEST_METHOD": "GET"}, start_response) == [b"dashboard"]
    assert calls == ["/w/x/"]
    assert stored().clicks == 1  # the GET; an OPTIONS records nothing


def test_head_and_prefetch_are_recorded_as_unreliable(delivery):
    link = link_of(delivery, "https://shop.example/a")
    path = f"/c/{sign_token(ClickToken(delivery.pk, link.pk, link.href))}"
    client = Client(enforce_csrf_checks=True)
    client.head(path, HTTP_USER_AGENT=CHROME)
    client.get(path, HTTP_USER_AGENT=CHROME, HTTP_SEC_PURPOSE="prefetch")
    stored()
    with scopes_disabled():
        reasons = sorted(ClickEvent.objects.values_list("reason", flat=True))
    assert reasons == ["head", "prefetch"]


def test_ingesting_a_file_twice_stores_each_event_once(delivery, spool_dir):
    link = link_of(delivery, "https://shop.example/a")
    writer = Spool(spool_dir)
    for _ in range(5):
        writer.append(
            {
                "k": "c",
                "t": timezone.now().timestamp(),
                "d": delivery.pk,
                "l": link.pk,
                "u": link.href,
                "ua": CHROME,
                "m": "GET",
            }
        )
    writer.close()
    [path] = list(spool_dir.glob("*.jsonl"))
    copy = path.read_bytes()
    assert ingest_spool(spool_dir).clicks == 5
    path.write_bytes(copy)  # as if the ingester died after committing, before deleting
    report = ingest_spool(spool_dir)
    assert report.files == 1 and report.clicks == 0
    with scopes_disabled():
        assert ClickEvent.objects.count() == 5


def test_a_file_still_being_written_is_left_alone(delivery, spool_dir):
    writer = Spool(spool_dir, rotate_seconds=3600)
    writer.append({"k": "o", "t": timezone.now().timestamp(), "d": delivery.pk, "ua": "x"})
    assert list(claim_files(spool_dir)) == []  # its writer holds the lock
    assert ingest_spool(spool_dir).opens == 0
    writer.close()
    assert ingest_spool(spool_dir).opens == 1


def test_unparsable_lines_are_kept_aside_not_lost(delivery, spool_dir):
    spool_dir.mkdir(parents=True, exist_ok=True)
    good = {"id": "0" * 32, "k": "o", "t": 1.7e9, "d": delivery.pk, "ua": ""}
    (spool_dir / "0-x-1-1.jsonl").write_text(json.dumps(good) + "\n{broken\n")
    report = ingest_spool(spool_dir)
    assert (report.opens, report.bad_lines, report.bad_bytes) == (1, 1, len("{broken\n"))
    assert report.lost == ["0-x-1-1.jsonl: skipped 1 line(s), 8 bytes"]
    assert (spool_dir / "bad" / "0-x-1-1.jsonl").read_text() == "{broken\n"


def test_concurrent_writers_lose_nothing(delivery, spool_dir):
    link = link_of(delivery, "https://shop.example/a")
    writer = Spool(spool_dir, rotate_seconds=0.01)

    def click_many():
        for _ in range(250):
            writer.append(
                {
                    "k": "c",
                    "t": timezone.now().timestamp(),
                    "d": delivery.pk,
                    "l": link.pk,
                    "u": link.href,
                    "ua": CHROME,
                    "m": "GET",
                }
            )

    threads = [threading.Thread(target=click_many) for _ in range(4)]
    for t in threads:
        t.start()
    total = 0
    while any(t.is_alive() for t in threads):
        total += ingest_spool(spool_dir).clicks  # ingesting while they write
    for t in threads:
        t.join()
    writer.close()
    total += ingest_spool(spool_dir).clicks
    assert total == 1000
    with scopes_disabled():
        assert ClickEvent.objects.count() == 1000


def test_ip_addresses_are_truncated():
    assert truncate_ip("198.51.100.23") == "198.51.100.0"
    assert truncate_ip(" 198.51.100.23") == "198.51.100.0"  # X-Forwarded-For: a, b
    assert truncate_ip("2001:db8:abcd:12:1:2:3:4") == "2001:db8:abcd::"
    assert truncate_ip("not an ip") == ""
    for refused in ("198.51.100.023", "256.1.1.1", "1.2.3", "1.2.3.4.5", "１.2.3.4", "1.2.3.+4"):
        assert truncate_ip(refused) == ""


def _truncated_by_ipaddress(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return ""
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.lists(
            st.one_of(st.integers(0, 300).map(str), st.text("0123456789+-x １", max_size=4)),
            min_size=3,
            max_size=5,
        ).map(".".join),
        st.text(max_size=20),
    )
)
def test_ip_truncation_agrees_with_the_ipaddress_module(address):
    assert truncate_ip(address) == _truncated_by_ipaddress(address)


def test_a_later_batch_keeps_earlier_prefetch_verdicts(delivery):
    link = link_of(delivery, "https://shop.example/a")
    path = f"/c/{sign_token(ClickToken(delivery.pk, link.pk, link.href))}"
    Client().get(path, HTTP_USER_AGENT=CHROME, HTTP_PURPOSE="prefetch")
    stored()
    Client().get(path, HTTP_USER_AGENT=CHROME)  # the human follows, within the same second
    stored()
    with scopes_disabled():
        reasons = list(ClickEvent.objects.order_by("at").values_list("reason", flat=True))
    assert reasons == ["prefetch", ""]


def test_a_burst_spanning_two_batches_flags_the_earlier_clicks_too(delivery):
    links = [
        link_of(delivery, "https://shop.example/a"),
        link_of(delivery, "https://shop.example/b"),
    ]
    with scopes_disabled():
        extra = delivery.template_version.links.create(
            format="html",
            ordinal=99,
            source_index=99,
            xpath="/html/body/p[9]/a[1]",
            href="https://shop.example/c",
            text="C",
        )
    links.append(extra)
    paths = [f"/c/{sign_token(ClickToken(delivery.pk, x.pk, x.href))}" for x in links]
    Client().get(paths[0], HTTP_USER_AGENT=CHROME)
    stored()
    with scopes_disabled():
        assert ClickEvent.objects.get().reliable  # alone, it looks human
    for path in paths[1:]:
        Client().get(path, HTTP_USER_AGENT=CHROME)
    report = stored()
    assert report.reclassified == 1
    with scopes_disabled():
        assert set(ClickEvent.objects.values_list("reason", flat=True)) == {"burst"}
