"""Which requests to /c/ write anything: GET and HEAD only, the same token from the same
address at most once a second, and user agents cut to a sane length. A client
hammering a link, or sending it every method, cannot multiply the spool's writes."""

import time

import pytest
from django.test import Client
from django_scopes import scopes_disabled

from tests.factories import sent_deliveries
from tracking.hotpath import DEDUP_SECONDS, spool
from tracking.ingest import ingest_spool
from tracking.models import ClickEvent
from tracking.spool import Spool
from tracking.tokens import ClickToken, sign_token

SHOP = "https://shop.example/a"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


@pytest.fixture
def delivery(make_workspace, spool_dir):
    workspace = make_workspace("Shop")
    (delivery,) = sent_deliveries(
        workspace, f'<p><a href="{SHOP}">A</a></p>', [("c1", "ann@example.test", {})]
    )
    return delivery


def click_path(delivery, url=SHOP) -> str:
    with scopes_disabled():
        link = delivery.template_version.links.get()
    return f"/c/{sign_token(ClickToken(delivery.pk, link.pk, url))}"


def spooled_lines(spool_dir) -> int:
    spool().close()
    return sum(path.read_bytes().count(b"\n") for path in spool_dir.glob("*.jsonl"))


def stored_clicks():
    spool().close()
    ingest_spool()
    with scopes_disabled():
        return list(ClickEvent.objects.order_by("at"))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_the_redirect_and_record_nothing(delivery, spool_dir, method):
    response = Client(enforce_csrf_checks=True).generic(
        method, click_path(delivery), HTTP_USER_AGENT=CHROME
    )
    assert (response.status_code, response["Location"]) == (302, SHOP)
    assert spooled_lines(spool_dir) == 0
    assert stored_clicks() == []


@pytest.mark.parametrize("method", ["POST", "OPTIONS"])
def test_other_methods_with_a_forged_token_get_the_neutral_404(delivery, method):
    response = Client().generic(method, click_path(delivery)[:-4] + "AAAA")
    assert response.status_code == 404 and "Location" not in response


def test_get_and_head_are_recorded_head_as_a_machine_request(delivery):
    client = Client()
    assert client.get(click_path(delivery), HTTP_USER_AGENT=CHROME).status_code == 302
    assert client.head(click_path(delivery), HTTP_USER_AGENT=CHROME).status_code == 302
    assert sorted((e.method, e.reason) for e in stored_clicks()) == [("GET", ""), ("HEAD", "head")]


def ten_gets_within_a_second(path: str) -> str:
    """Send 10 GETs of `path` from one address, all within DEDUP_SECONDS of the first
    (on a stalled machine, again from a fresh network); returns the stored (truncated)
    form of that address."""
    for attempt in range(5):
        address = f"198.51.{100 + attempt}.7"
        started = time.monotonic()
        for _ in range(10):
            response = Client().get(path, HTTP_USER_AGENT=CHROME, REMOTE_ADDR=address)
            assert (response.status_code, response["Location"]) == (302, SHOP)
        if time.monotonic() - started < DEDUP_SECONDS:
            return f"198.51.{100 + attempt}.0"
    pytest.fail("10 requests never fitted in one second")


def test_ten_gets_of_one_token_from_one_address_within_a_second_record_one_click(delivery):
    assert DEDUP_SECONDS == 1.0
    address = ten_gets_within_a_second(click_path(delivery))
    clicks = [e for e in stored_clicks() if e.ip == address]
    assert len(clicks) == 1 and clicks[0].reliable


def test_the_same_click_a_second_later_or_from_elsewhere_is_recorded_again(delivery):
    path = click_path(delivery)
    client = Client()
    client.get(path, HTTP_USER_AGENT=CHROME, REMOTE_ADDR="203.0.113.5")
    client.get(path, HTTP_USER_AGENT=CHROME, REMOTE_ADDR="198.51.100.5")  # another address
    client.get(click_path(delivery, SHOP + "?b"), HTTP_USER_AGENT=CHROME, REMOTE_ADDR="203.0.113.5")
    time.sleep(DEDUP_SECONDS + 0.1)
    client.get(path, HTTP_USER_AGENT=CHROME, REMOTE_ADDR="203.0.113.5")  # a second later
    assert len(stored_clicks()) == 4


def test_stored_user_agents_are_cut_to_1024_characters(delivery, spool_dir):
    long_agent = CHROME + " x" * 3000
    Client().get(click_path(delivery), HTTP_USER_AGENT=long_agent)
    # An event spooled with a longer one (an older writer) is cut when stored too.
    with scopes_disabled():
        link = delivery.template_version.links.get()
    writer = Spool(spool_dir)
    record = {"k": "c", "t": time.time(), "d": delivery.pk, "l": link.pk, "u": SHOP}
    writer.append(record | {"ua": "Mozilla/5.0 " + "y" * 5000, "m": "GET"})
    writer.close()
    agents = sorted(e.user_agent for e in stored_clicks())
    assert agents == sorted([long_agent[:1024], ("Mozilla/5.0 " + "y" * 5000)[:1024]])
