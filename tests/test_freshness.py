"""The click map says how fresh its numbers are, from the pipeline's own marks: a spool
file a tracker still holds open, or a shard no run could take, holds the line back to
exactly when that work began; once the pipeline has caught up it says "Up to date".
Real spool files, real pipeline runs against PostgreSQL, the real page."""

import fcntl
import json
import os
import re
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone
from django_scopes import scope, scopes_disabled

from clickmap import freshness, metrics, pipeline
from clickmap.freshness import ago
from clickmap.metrics import Scope
from clickmap.rollups import SHARD_LOCK
from tests.conftest import database_url
from tests.demo_world import page_url
from tests.factories import sent_deliveries
from tracking.models import ClickEvent

SHOP = "https://shop.example/a"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"


@pytest.fixture
def shop(make_workspace, settings, spool_dir):
    settings.TRACKING_INGEST_INLINE = False
    settings.PIPELINE_INGEST = True
    settings.AGGREGATE_SHARDS = 2
    workspace = make_workspace("Shop")
    html = f'<p><a href="{SHOP}">A</a></p>'
    (delivery,) = sent_deliveries(workspace, html, [("c1", "ann@example.test", {})])
    with scopes_disabled():
        campaign = delivery.node.campaign
        link = delivery.template_version.links.get()
    return workspace, campaign, delivery, link


class WriterFile:
    """A spool file as a tracker worker leaves it while it still appends: named for
    when it was opened (`age` seconds ago) and locked, so no ingester may take it."""

    def __init__(self, spool_dir, age: float, delivery, link):
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.opened = time.time() - age
        self.path = spool_dir / f"{int(self.opened * 1000):015d}-tracker-4242-1.jsonl"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        record = {
            "k": "c",
            "t": self.opened + 0.5,
            "d": delivery.pk,
            "l": link.pk,
            "u": SHOP,
            "ua": CHROME,
            "ip": "192.0.2.0",
            "m": "GET",
            "id": uuid.uuid4().hex,
        }
        os.write(self.fd, (json.dumps(record) + "\n").encode())

    def close(self):
        os.close(self.fd)  # the writer rotates: the file is complete


def freshness_line(client, workspace, campaign) -> tuple[str, int | None, float, float]:
    """(text, data-lag) of the page's freshness line, and the time before and after."""
    before = time.time()
    html = client.get(page_url(workspace, campaign)).content.decode()
    after = time.time()
    found = re.search(r'<p class="freshness[^"]*"[^>]*data-lag="(\d*)">(.*?)</p>', html, re.S)
    assert found, html
    text = re.sub(r"<[^>]+>", "", found.group(2)).strip()
    return text, int(found.group(1)) if found.group(1) else None, before, after


def owner_of(workspace):
    with scopes_disabled():
        return workspace.memberships.get().user


def counted_clicks(workspace, campaign, link) -> int:
    with scope(workspace=workspace):
        return metrics.link_counts(Scope(workspace=workspace, campaign_id=campaign.pk)).get(
            link.pk, (0, 0)
        )[0]


def expect_lag(client, workspace, campaign, since: float) -> None:
    """The line says 'Numbers as of N s ago', N whole seconds since `since` at the
    moment of the request."""
    text, lag, before, after = freshness_line(client, workspace, campaign)
    assert int(before - since) <= lag <= int(after - since) + 1, (lag, before - since)
    assert text == f"Numbers as of {lag} s ago"


@pytest.mark.django_db(transaction=True)
def test_the_map_says_how_far_behind_the_pipeline_is_and_when_it_caught_up(
    shop, spool_dir, client_for
):
    workspace, campaign, delivery, link = shop
    client = client_for(owner_of(workspace))
    text, lag, _, _ = freshness_line(client, workspace, campaign)
    assert (text, lag) == (
        "Freshness unknown: the pipeline has not brought the numbers up to date yet",
        None,
    )

    # A tracker has held its file open for 30 s: its click cannot be ingested yet, so
    # the numbers are exactly as fresh as that file's opening.
    writer = WriterFile(spool_dir, 30, delivery, link)
    report = pipeline.run(slice_seconds=5)
    assert (report.files, report.busy_shards, report.work_left) == (0, 0, False)
    expect_lag(client, workspace, campaign, writer.opened)
    with scopes_disabled():
        assert ClickEvent.objects.count() == 0
    assert counted_clicks(workspace, campaign, link) == 0

    # The file is complete and ingested, but another session holds both shards of the
    # change log: the click is stored, not yet counted, and the line stays where it was.
    writer.close()
    with psycopg.connect(database_url("holder").replace("postgres://", "postgresql://")) as other:
        for number in range(2):
            other.execute("SELECT pg_advisory_lock(%s, %s)", [SHARD_LOCK, number])
        report = pipeline.run(slice_seconds=5)
        assert (report.files, report.clicks, report.drained_shards) == (1, 1, 0)
        assert report.busy_shards == 2 * report.rounds
        with scopes_disabled():
            assert ClickEvent.objects.count() == 1
        assert counted_clicks(workspace, campaign, link) == 0
        expect_lag(client, workspace, campaign, writer.opened)

    # The shards are free: the next run counts the click and the map is up to date.
    report = pipeline.run(slice_seconds=5)
    assert (report.changes, report.busy_shards) == (1, 0)
    assert counted_clicks(workspace, campaign, link) == 1
    text, lag, _, _ = freshness_line(client, workspace, campaign)
    assert text == "Up to date" and lag <= 5


@pytest.mark.django_db(transaction=True)
def test_one_shard_behind_holds_the_line_back(shop, spool_dir, client_for):
    workspace, campaign, delivery, link = shop
    client = client_for(owner_of(workspace))
    writer = WriterFile(spool_dir, 40, delivery, link)
    pipeline.run(slice_seconds=5)  # every shard as of the file's opening
    writer.close()
    with psycopg.connect(database_url("holder").replace("postgres://", "postgresql://")) as other:
        other.execute("SELECT pg_advisory_lock(%s, 1)", [SHARD_LOCK])
        report = pipeline.run(slice_seconds=5)
        assert report.busy_shards == report.drained_shards == report.rounds
        # Shard 0 is up to date, shard 1 is not: the map waits for the older one.
        expect_lag(client, workspace, campaign, writer.opened)
    pipeline.run(slice_seconds=5)
    assert freshness_line(client, workspace, campaign)[0] == "Up to date"


def test_lag_reads_in_whole_units_rounded_down():
    assert [ago(s) for s in (0, 12, 59, 60, 3599, 3600, 86399, 86400, 200000)] == [
        "0 s",
        "12 s",
        "59 s",
        "1 min",
        "59 min",
        "1 h",
        "23 h",
        "1 day",
        "2 days",
    ]


@pytest.mark.django_db(transaction=True)
def test_a_bounded_turn_of_ingestion_marks_the_spool_at_the_oldest_file_it_left(shop, spool_dir):
    from tracking.ingest import ingest_spool
    from tracking.models import SpoolMark

    _, _, delivery, link = shop
    files = [WriterFile(spool_dir, age, delivery, link) for age in (50, 40, 30)]
    for writer in files:
        writer.close()
    report = ingest_spool(seconds=0)  # takes one file (the oldest first), then stops
    assert (report.files, report.clicks) == (1, 1)
    assert sorted(p.name for p in spool_dir.glob("*.jsonl")) == [f.path.name for f in files[1:]]
    with scopes_disabled():
        mark = SpoolMark.objects.get(name="default").at.timestamp()
    # Files are named in whole milliseconds: the mark is the 40 s old file's opening.
    assert abs(mark - files[1].opened) < 0.001
    report = ingest_spool()
    assert report.files == 2
    with scopes_disabled():
        assert SpoolMark.objects.get().at.timestamp() >= time.time() - 5
        assert ClickEvent.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_on_the_embedded_default_an_idle_map_is_up_to_date_and_a_waiting_file_is_not(
    shop, spool_dir, client_for, settings
):
    """Inline ingestion (make run): no beat moves the marks while nobody clicks, yet
    with nothing spooled and nothing in the change log every click counts. A spool file
    still held by a writer holds the line back to its opening."""
    from django.test import Client

    from tracking.hotpath import ingest_inline
    from tracking.tokens import ClickToken, sign_token

    workspace, campaign, delivery, link = shop
    settings.TRACKING_INGEST_INLINE = True
    client = client_for(owner_of(workspace))
    writer = WriterFile(spool_dir, 30, delivery, link)
    token = sign_token(ClickToken(delivery.pk, link.pk, SHOP))
    assert Client().get(f"/c/{token}", HTTP_USER_AGENT=CHROME).status_code == 302
    # This click is stored and counted at once; the held file's is not, and says so.
    assert counted_clicks(workspace, campaign, link) == 1
    expect_lag(client, workspace, campaign, writer.opened)

    writer.close()
    ingest_inline()
    assert counted_clicks(workspace, campaign, link) == 2
    assert freshness_line(client, workspace, campaign)[:2] == ("Up to date", 0)
    # A minute later with no click since: still up to date, not "as of 1 min ago".
    later = freshness.of_numbers(now=timezone.now() + timedelta(minutes=1))
    assert (later.text, later.lag_seconds) == ("Up to date", 0)
    # The same idle state on a worker-driven install says how old its marks are.
    settings.TRACKING_INGEST_INLINE = False
    assert freshness.of_numbers(now=timezone.now() + timedelta(minutes=1)).text == (
        "Numbers as of 1 min ago"
    )
