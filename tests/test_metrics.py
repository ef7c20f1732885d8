"""/metrics after real work: a send through a real Celery worker to an aiosmtpd server
(one address refused), clicks on a real gunicorn tracker (a reader's, a HEAD and a
prefetch), their ingestion and one aggregation run by the worker, previews rendered by
it in Chromium (one fails), dashboard and export requests. Every counter moved by
exactly what was done, counted here by hand; the backlog gauges show the change log
before the aggregation run and empty after. Without the token: 403; with none set: 404."""

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_scopes import scope, scopes_disabled
from prometheus_client.parser import text_string_to_metric_families

from campaigns.models import Campaign, Delivery, TemplateLink
from campaigns.services import template_create
from campaigns.tasks import send_campaign_task
from clickmap.celery import app
from clickmap.models import Preview
from clickmap.pipeline_health import consumed_queues
from clickmap.previews import preview_for
from tests.conftest import SmtpSink, database_url, free_port
from tests.factories import customers, sendable_campaign
from tests.tracker_server import Tracker
from tracking.links import SignedTracker
from tracking.models import ClickEvent, EventChange

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "scrape-" + "t" * 40
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


def wait_for(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def scrape(client: Client) -> dict:
    """{(sample name, sorted labels): value} of one scrape."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@contextmanager
def celery_worker(env: dict, log: Path):
    queues = ",".join(consumed_queues())
    node = f"metrics-{os.getpid()}@%h"
    command = [sys.executable, "-m", "celery", "-A", "clickmap", "worker", "-Q", queues]
    command += ["--concurrency=1", "--loglevel=INFO", "-n", node]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: process.poll() is not None or "ready." in log.read_text(), "worker")
        assert process.poll() is None, log.read_text()[-3000:]
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_metrics_need_the_token(settings, db):
    client = Client()
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    settings.SERVICE_ROLE = "tracker"  # the web scrapes; the tracker never reads the database
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_each_metric_counts_exactly_what_was_done(
    redis_client, settings, make_workspace, make_user, add_member, tmp_path
):
    settings.METRICS_TOKEN = TOKEN
    spool_dir = tmp_path / "spool"
    settings.TRACKING_SPOOL_DIR = spool_dir
    owner = make_user()
    workspace = make_workspace("Shop", owner=owner)
    people = customers(
        workspace,
        [(f"c{i}", f"c{i}@example.test", {}) for i in range(5)]
        + [("r", "refused@example.test", {})],  # the SMTP sink refuses this address
    )
    campaign = sendable_campaign(workspace, '<p><a href="https://shop.example/a">A</a></p>')
    with scope(workspace=workspace):
        broken = template_create(
            workspace=workspace,
            name="Broken",
            html="<p>{% for p in products %}<a href='{{ p.url }}'>Buy</a></p>",
        )
    client, dashboard = Client(), Client()
    dashboard.force_login(owner)
    before = scrape(client)

    sink = SmtpSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        EMAIL_URL=f"smtp://127.0.0.1:{smtp.port}",
        TRACKING_SPOOL_DIR=str(spool_dir),
    )
    with ExitStack() as stack:
        stack.callback(smtp.stop)
        stack.enter_context(celery_worker(env, tmp_path / "worker.log"))

        # A send of 6 deliveries: 5 sent, 1 refused by the server.
        send_campaign_task.delay(campaign.pk)
        with scopes_disabled():
            sent = Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.SENT)
            wait_for(sent.exists, "the send")
            Delivery.objects.update(sent_at=timezone.now() - timedelta(hours=1))
            deliveries = list(Delivery.objects.filter(status="sent").order_by("pk"))
            link = TemplateLink.objects.get(version__template__name=campaign.name + " A")
        assert len(deliveries) == 5 and len(sink.envelopes) == 5

        # 5 clicks on the tracker, one per delivery: 3 readers, a HEAD, a prefetch.
        tracker = Tracker(tmp_path, spool_dir, {})
        try:
            paths = [
                urlsplit(SignedTracker().click_url(d.pk, link.pk, "https://shop.example/a")).path
                for d in deliveries
            ]
            for path in paths[:3]:
                assert tracker.request("GET", path, {"User-Agent": CHROME})[0] == 302
            assert tracker.request("HEAD", paths[3], {"User-Agent": CHROME})[0] == 302
            prefetch = {"User-Agent": CHROME, "Purpose": "prefetch"}
            assert tracker.request("GET", paths[4], prefetch)[0] == 302
            assert tracker.request("GET", "/c/not-a-token")[0] == 404
        finally:
            tracker.stop()

        app.send_task("tracking.ingest_events")
        with scopes_disabled():
            wait_for(lambda: ClickEvent.objects.count() == 5, "ingestion")
            assert EventChange.objects.count() == 5
        backlog = scrape(client)
        assert value(backlog, "clickmap_change_log_rows") == 5
        assert value(backlog, "clickmap_aggregation_lag_seconds") > 0
        assert value(backlog, "clickmap_health_check_ok", check="change_backlog") == 1

        app.send_task("clickmap.aggregate")
        with scopes_disabled():
            wait_for(lambda: not EventChange.objects.exists(), "aggregation")
        wait_for(
            lambda: moved(before, scrape(client), "clickmap_aggregation_run_seconds_count"),
            "the run to be counted",
        )

        # Previews rendered by the worker: the campaign's (done), the broken one's
        # exact preview for a customer (failed: a template error).
        with scopes_disabled():
            version = link.version
        done = preview_for(version, "html", "desktop")
        failed = preview_for(broken, "html", "desktop", people[0], exact=True)
        for preview, status in ((done, "done"), (failed, "failed")):
            wait_for(
                lambda p=preview, s=status: (
                    Preview.objects.with_scopes_disabled().filter(pk=p.pk, status=s).exists()
                ),
                f"a {status} preview",
            )

        # The dashboard's pages and an export, in this process.
        assert dashboard.get(reverse("campaigns:list", args=[workspace.slug])).status_code == 200
        export = reverse("clickmap:export", args=[workspace.slug, campaign.pk])
        assert dashboard.get(export, {"export": "csv"}).status_code == 200
        assert dashboard.get(export, {"export": "nope"}).status_code == 404
        after = wait_for(
            lambda: (
                (s := scrape(client))
                and moved(before, s, "clickmap_preview_renders_total", outcome="failed") == 1
                and s
            ),
            "the preview counts",
        )

    def delta(name, **labels):
        return moved(before, after, name, **labels)

    assert delta("clickmap_deliveries_total", outcome="queued") == 6
    assert delta("clickmap_deliveries_total", outcome="sent") == 5
    assert delta("clickmap_deliveries_total", outcome="failed") == 1
    assert delta("clickmap_http_requests_total", group="redirect", status="302") == 5
    # Two bad tokens: this test's and the one Tracker asks for until gunicorn answers.
    assert delta("clickmap_http_requests_total", group="redirect", status="404") == 2
    assert delta("clickmap_http_request_duration_seconds_count", group="redirect") == 7
    assert delta("clickmap_events_spooled_total", kind="click") == 5
    assert delta("clickmap_events_lost_total", kind="click") == 0
    assert delta("clickmap_events_ingested_total", kind="click") == 5
    assert delta("clickmap_clicks_classified_total", reason="reliable") == 3
    assert delta("clickmap_clicks_classified_total", reason="head") == 1
    assert delta("clickmap_clicks_classified_total", reason="prefetch") == 1
    assert delta("clickmap_aggregation_changes_applied_total") == 5
    assert delta("clickmap_aggregation_run_seconds_count") == 1
    assert delta("clickmap_ingestion_run_seconds_count") == 1
    assert delta("clickmap_preview_renders_total", outcome="done") == 1
    assert delta("clickmap_preview_renders_total", outcome="failed") == 1
    assert delta("clickmap_preview_render_seconds_count") == 2
    assert delta("clickmap_http_requests_total", group="dashboard", status="200") == 1
    assert delta("clickmap_http_requests_total", group="export", status="200") == 1
    assert delta("clickmap_http_requests_total", group="export", status="404") == 1
    assert delta("clickmap_http_request_duration_seconds_count", group="export") == 2
    # Read at scrape time: all drained, and the worker beat.
    assert value(after, "clickmap_change_log_rows") == 0
    assert value(after, "clickmap_spool_files") == 0
    assert value(after, "clickmap_aggregation_lag_seconds") == 0
    assert 0 <= value(after, "clickmap_heartbeat_age_seconds", process="worker:pipeline") < 60
    assert 0 <= value(after, "clickmap_aggregation_last_run_age_seconds") < 120
