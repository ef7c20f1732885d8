"""A tenant cannot stall another: with the real Redis and a real Celery worker per queue,
run as docker-compose runs them, a send whose template loops 6·10^8 times for one
customer fails exactly that delivery with the budget as its reason, and while sends hold
every send worker slot, another workspace's click is ingested and aggregated about as
fast as on idle workers (measured in the same test: a ratio, never a fixed time). A send
stopped by its soft time limit goes on in a task of its own, and mails nobody twice."""

import asyncio
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from django.test import Client
from django.utils import timezone
from django_scopes import scope, scopes_disabled

from campaigns.models import Campaign, Delivery, TemplateLink
from campaigns.sending import INTERRUPTED_WHILE_HANDED_OVER, plan_deliveries
from campaigns.tasks import send_campaign_task
from clickmap.celery import app
from clickmap.models import LinkRollup
from tests.conftest import SmtpSink, database_url, free_port
from tests.factories import customers, sendable_campaign
from tracking.hotpath import spool
from tracking.links import SignedTracker
from tracking.models import ClickEvent

ROOT = Path(__file__).resolve().parents[1]
LOOPS = "100,000 loop iterations (PERSONALISE_MAX_LOOP_ITERATIONS)"
NESTED = "{% for a in range(50000) %}{% for b in range(12000) %}x{% endfor %}{% endfor %}"
THREE_NESTED = (
    "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
    "x{% endfor %}{% endfor %}{% endfor %}"
)


class HoldingSink(SmtpSink):
    """Keeps every message, but answers none until `release` is set: a send stays in
    progress, holding its worker slot, for as long as the test needs."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.waiting = 0

    async def handle_DATA(self, server, session, envelope):
        self.waiting += 1
        while not self.release.is_set():
            await asyncio.sleep(0.02)
        return await super().handle_DATA(server, session, envelope)


def wait_for(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def celery_worker(queues: str, env: dict, log: Path):
    """`celery -A clickmap worker -Q <queues> --concurrency=2`, as docker-compose.yml runs
    it, until it answers a ping; stopped (warm, then killed) afterwards."""
    node = f"{queues.split(',')[0]}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    command = [sys.executable, "-m", "celery", "-A", "clickmap", "worker", "-Q", queues]
    command += ["--loglevel=INFO", "--concurrency=2", "-n", node]
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
        wait_for(
            lambda: process.poll() is not None or app.control.ping([node], timeout=0.5),
            f"the {queues} worker",
        )
        assert process.poll() is None, log.read_text()[-3000:]
        yield node
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def heavy_campaign(workspace, name: str, loops: str, heavy_email: str, people):
    """A campaign whose template runs `loops` for `heavy_email` only; that customer's
    delivery is the first the send claims."""
    html = (
        "<p>Hi <a href='https://attacker.example/'>Shop</a></p>"
        f"{{% if customer.email == '{heavy_email}' %}}{loops}{{% endif %}}"
    )
    campaign = sendable_campaign(workspace, html, subject="S", name=name)
    with scope(workspace=workspace):
        node = campaign.nodes.get()
        variant = node.variants.get()
        Delivery.objects.create(
            workspace=workspace,
            node=node,
            variant=variant,
            customer=next(c for c in people if c.email == heavy_email),
            template_version=variant.template_version,
        )
    return campaign


@pytest.mark.django_db(transaction=True)
def test_a_send_over_budget_fails_one_delivery_and_never_delays_another_workspaces_clicks(
    redis_client, spool_dir, make_workspace, tmp_path
):
    attacker = make_workspace("Attacker")
    people = customers(
        attacker,
        [("x", "x@example.test", {}), ("y", "y@example.test", {})]
        + [(f"a{i}", f"a{i}@example.test", {}) for i in range(6)],
    )
    heavy = heavy_campaign(attacker, "Nested", NESTED, "x@example.test", people)
    heavier = heavy_campaign(attacker, "Three nested", THREE_NESTED, "y@example.test", people)

    victim = make_workspace("Victim")
    customers(victim, [(f"v{i}", f"v{i}@example.test", {}) for i in range(12)])
    shop = sendable_campaign(victim, "<p><a href='https://victim.example/'>Buy</a></p>")
    with scope(workspace=victim):
        plan_deliveries(shop.nodes.get())
        Delivery.objects.update(
            status=Delivery.Status.SENT, sent_at=timezone.now() - timedelta(hours=1)
        )
        deliveries = list(Delivery.objects.order_by("pk"))
        link = TemplateLink.objects.get(href="https://victim.example/")
    tracker = SignedTracker()
    clicks = [
        urlsplit(tracker.click_url(d.pk, link.pk, "https://victim.example/")).path
        for d in deliveries
    ]
    browser = Client()

    def click_to_rollup(n: int) -> float:
        """Seconds from the n-th click to the victim's rollup counting it, through the
        pipeline worker (ingestion, then aggregation, as beat would trigger them)."""
        started = time.monotonic()
        assert browser.get(clicks[n]).status_code == 302
        spool().close()  # the tracker's file is complete: the ingester may take it
        app.send_task("tracking.ingest_events")
        with scopes_disabled():
            wait_for(lambda: ClickEvent.objects.filter(delivery=deliveries[n]).exists(), "ingest")
            app.send_task("clickmap.aggregate")
            rollups = LinkRollup.objects.filter(link=link).values_list("total_all", flat=True)
            wait_for(lambda: sum(rollups.all()) == n + 1, "aggregation")  # .all(): a new query
        return time.monotonic() - started

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    sink = HoldingSink()
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
        stack.callback(sink.release.set)  # lets a failed test's sends end
        stack.enter_context(celery_worker("send", env, tmp_path / "send.log"))
        stack.enter_context(celery_worker("pipeline,clickmap", env, tmp_path / "pipeline.log"))

        for n in range(2):  # the first tasks of each pool process import what they need
            click_to_rollup(n)
        idle = [click_to_rollup(n) for n in range(2, 7)]
        send_campaign_task.delay(heavy.pk)
        send_campaign_task.delay(heavier.pk)
        # Both send slots are taken: each send is waiting on the SMTP server.
        wait_for(lambda: sink.waiting >= 2, "both sends to be under way")
        busy = [click_to_rollup(n) for n in range(7, 12)]
        assert sink.waiting == 2 and not sink.envelopes  # the sends were running throughout
        sink.release.set()
        with scopes_disabled():
            sending = Campaign.objects.filter(pk__in=[heavy.pk, heavier.pk]).exclude(
                status=Campaign.Status.SENT
            )
            wait_for(lambda: not sending.exists(), "the sends to finish")

    print(f"click to rollup: idle {idle}, during the sends {busy}")
    assert statistics.median(busy) <= 3 * statistics.median(idle)
    with scopes_disabled():
        for campaign, heavy_id in ((heavy, "x"), (heavier, "y")):
            outcome = dict(
                Delivery.objects.filter(node__campaign=campaign).values_list(
                    "customer__external_id", "status"
                )
            )
            assert outcome == {c.external_id: "sent" for c in people} | {heavy_id: "failed"}
            failed = Delivery.objects.get(node__campaign=campaign, status="failed")
            assert LOOPS in failed.error
    received = sorted(r for e in sink.envelopes for r in e.rcpt_tos)
    assert received == sorted(
        2 * [c.email for c in people if c.external_id[0] == "a"]
        + [
            "x@example.test",  # x is sent the three-nested campaign, y the nested one
            "y@example.test",
        ]
    )


@pytest.mark.django_db(transaction=True)
def test_a_send_stopped_at_its_soft_time_limit_goes_on_by_itself_and_mails_nobody_twice(
    redis_client, make_workspace, tmp_path
):
    workspace = make_workspace("Big sender")
    people = customers(workspace, [(f"c{i}", f"c{i}@example.test", {}) for i in range(6)])
    campaign = sendable_campaign(workspace, "<p>Hi <a href='https://shop.example/'>Shop</a></p>")
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    sink = HoldingSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        EMAIL_URL=f"smtp://127.0.0.1:{smtp.port}",
        SEND_SOFT_TIME_LIMIT="2",
        SEND_TIME_LIMIT="60",
    )
    with ExitStack() as stack:
        stack.callback(smtp.stop)
        stack.callback(sink.release.set)
        stack.enter_context(celery_worker("send", env, tmp_path / "send.log"))
        # The limits travel with the task message (the continuation has the worker's).
        send_campaign_task.apply_async((campaign.pk,), soft_time_limit=2, time_limit=60)
        with scopes_disabled():
            # The first slice stops at its soft limit while the server holds a message;
            # the continuation it queued finds that delivery half handed over.
            interrupted = Delivery.objects.filter(error=INTERRUPTED_WHILE_HANDED_OVER)
            wait_for(interrupted.exists, "a slice to stop and its continuation to start")
            sink.release.set()
            sending = Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.SENDING)
            wait_for(lambda: not sending.exists(), "the continuation to finish the send")
            outcome = {d.customer.email: (d.status, d.error) for d in Delivery.objects.all()}

    received = Counter(r for e in sink.envelopes for r in e.rcpt_tos)
    assert set(outcome) == {c.email for c in people}
    for email, (status, error) in outcome.items():
        if status == Delivery.Status.SENT:
            assert received[email] == 1, email
        else:  # it may have left before the slice stopped: never a second time
            assert (status, error) == (Delivery.Status.FAILED, INTERRUPTED_WHILE_HANDED_OVER)
            assert received[email] <= 1, email
    assert list(outcome.values()).count(("sent", "")) >= len(people) - 2
