"""A scheduled send fires by itself: with the real Redis, a real Celery worker and a real
celery beat (as docker-compose runs them), a campaign scheduled a few seconds ahead in
the workspace's time zone is started by beat and mailed to its audience through a real
SMTP server, while one cancelled before its time is never mailed."""

import os
import signal
import subprocess
import sys
import zoneinfo
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone
from django_scopes import scope, scopes_disabled

from campaigns.models import Campaign, Customer, Segment, Workspace
from tests.conftest import SmtpSink, database_url, free_port
from tests.factories import customers, sendable_campaign
from tests.test_send_queues import celery_worker, wait_for

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def celery_beat(env: dict, tmp: Path):
    """`celery -A clickmap beat`, its schedule file under `tmp`; stopped afterwards."""
    log = tmp / "beat.log"
    command = [sys.executable, "-m", "celery", "-A", "clickmap", "beat", "--loglevel=INFO"]
    command += ["-s", str(tmp / "beat-schedule")]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.django_db(transaction=True)
def test_beat_starts_a_scheduled_send_and_a_cancelled_one_never_goes(
    redis_client, make_workspace, client_for, tmp_path
):
    workspace = make_workspace("Berlin shop")
    Workspace.objects.filter(pk=workspace.pk).update(time_zone="Europe/Berlin")
    people = customers(
        workspace,
        [(f"b{i}", f"b{i}@example.test", {"vip": i % 2 == 0}) for i in range(6)],
    )
    with scope(workspace=workspace):
        Customer.objects.filter(external_id="b2").update(unsubscribed_at=timezone.now())
        vips = Segment.objects.create(
            workspace=workspace, name="VIP", rule=[{"attribute": "vip", "op": "eq", "value": True}]
        )
    html = "<p>Hi <a href='https://shop.example/'>Shop</a></p>"
    fires = sendable_campaign(workspace, html, subject="Fires", name="Fires")
    cancelled = sendable_campaign(workspace, html, subject="Cancelled", name="Cancelled")
    with scopes_disabled():
        client = client_for(workspace.memberships.get().user)

    sink = SmtpSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        EMAIL_URL=f"smtp://127.0.0.1:{smtp.port}",
        TRACKING_SPOOL_DIR=str(tmp_path / "spool"),
    )
    with ExitStack() as stack:
        stack.callback(smtp.stop)
        stack.enter_context(celery_worker("pipeline,send,clickmap", env, tmp_path / "w.log"))
        # Scheduled 8 s ahead, entered as Berlin's wall-clock time to the second.
        at = (timezone.now() + timedelta(seconds=8)).replace(microsecond=0)
        berlin = at.astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))
        form = {
            "segment": vips.pk,
            "when": "later",
            "date": berlin.date().isoformat(),
            "time": berlin.strftime("%H:%M:%S"),
            "expected": "2",  # b0 and b4: b2 is a VIP but unsubscribed
            "confirm": "1",
        }
        for campaign in (fires, cancelled):
            url = f"/w/{workspace.slug}/campaigns/{campaign.pk}/send/"
            assert client.post(url, form).status_code == 302
        with scopes_disabled():
            assert Campaign.objects.get(pk=fires.pk).scheduled_at == at
            assert set(Campaign.objects.values_list("status", flat=True)) == {"scheduled"}
        assert (
            client.post(f"/w/{workspace.slug}/campaigns/{cancelled.pk}/send/cancel/").status_code
            == 302
        )
        stack.enter_context(celery_beat(env, tmp_path))
        with scopes_disabled():
            status = Campaign.objects.filter(pk=fires.pk).values_list("status", flat=True)
            wait_for(lambda: status.first() == "sent", "beat to start the send", timeout=90)
            started = timezone.now()
            assert started >= at  # never before its time
            # A few more beats pass: the cancelled one stays cancelled.
            wait_for(lambda: timezone.now() > started + timedelta(seconds=11), "more beats")
            assert Campaign.objects.get(pk=cancelled.pk).status == "cancelled"
    received = sorted((m["Subject"], m["To"]) for m in sink.messages())
    assert received == [("Fires", "b0@example.test"), ("Fires", "b4@example.test")]
    progress = client.get(f"/w/{workspace.slug}/campaigns/{fires.pk}/progress/")
    assert b'data-n="sent">2<' in progress.content
    assert b'data-n="queued">0<' in progress.content
    assert people  # the customers the brute force above named
