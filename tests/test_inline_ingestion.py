"""The embedded default stores events during the request (TRACKING_INGEST_INLINE), but
its redirect never depends on the database: with the database unreachable, a real
gunicorn still answers every click, the failure is logged, and the events wait in
the spool until an ingestion that can reach the database stores them."""

import re

import pytest
from django.test import Client
from django_scopes import scopes_disabled

from tests.conftest import free_port
from tests.factories import sent_deliveries
from tests.tracker_server import Tracker
from tracking.ingest import ingest_spool
from tracking.models import ClickEvent, OpenEvent
from tracking.tokens import ClickToken, OpenToken, sign_token

SHOP = "https://shop.example/a"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


@pytest.fixture
def delivery(make_workspace):
    workspace = make_workspace("Shop")
    (delivery,) = sent_deliveries(
        workspace, f'<p><a href="{SHOP}">A</a></p>', [("c1", "ann@example.test", {})]
    )
    return delivery


def unreachable_databases(tmp_path):
    return {
        # Nothing listens on a port just found free: connections are refused.
        "PostgreSQL refusing connections": f"postgres://postgres@127.0.0.1:{free_port()}/gone",
        "PostgreSQL at a socket nothing listens on": f"postgres://postgres@/gone?host={tmp_path}",
    }


@pytest.mark.parametrize(
    "database", ["PostgreSQL refusing connections", "PostgreSQL at a socket nothing listens on"]
)
def test_with_the_database_unreachable_clicks_still_redirect_and_wait_in_the_spool(
    delivery, tmp_path, database
):
    with scopes_disabled():
        link = delivery.template_version.links.get()
    urls = [f"{SHOP}?n={n}" for n in range(5)]
    spool_dir = tmp_path / "spool"
    tracker = Tracker(
        tmp_path,
        spool_dir,
        {
            "DATABASE_URL": unreachable_databases(tmp_path)[database],
            "TRACKING_INGEST_INLINE": "1",
        },
        workers=1,
    )
    try:
        for url in urls:
            path = f"/c/{sign_token(ClickToken(delivery.pk, link.pk, url))}"
            status, headers, _ = tracker.request("GET", path, {"User-Agent": CHROME})
            assert (status, headers.get("Location")) == (302, url)
        pixel = f"/o/{sign_token(OpenToken(delivery.pk))}"
        assert tracker.request("GET", pixel, {"User-Agent": CHROME})[0] == 200
    finally:
        tracker.stop()
    log = tracker.log()
    counts = re.findall(
        r"ERROR tracking.hotpath: tracking: inline ingestion failed .*"
        r"Failed inline ingestions in process \d+: (\d+)",
        log,
    )
    # Every request's ingestion failed, and the lines say so without one per request.
    assert int(counts[-1]) == len(urls) + 1 and len(counts) < len(urls) + 1

    # The events are still in the spool; an ingestion that reaches the database stores them.
    report = ingest_spool(spool_dir)
    assert (report.clicks, report.opens, report.bad_lines) == (5, 1, 0)
    with scopes_disabled():
        assert sorted(ClickEvent.objects.values_list("url", flat=True)) == urls
        assert OpenEvent.objects.count() == 1


def test_with_the_database_up_inline_ingestion_stores_the_click_at_once(
    delivery, spool_dir, settings
):
    settings.TRACKING_INGEST_INLINE = True
    with scopes_disabled():
        link = delivery.template_version.links.get()
    path = f"/c/{sign_token(ClickToken(delivery.pk, link.pk, SHOP))}"
    response = Client().get(path, HTTP_USER_AGENT=CHROME)
    assert response.status_code == 302
    with scopes_disabled():
        assert list(ClickEvent.objects.values_list("url", flat=True)) == [SHOP]
    assert not list(spool_dir.glob("*.jsonl"))
