"""One customer cannot abort a send: whatever goes wrong personalising one delivery fails
that delivery alone and the campaign still ends "sent"; and a send killed mid-batch, then
run again, gives every customer exactly one message, through a real SMTP server."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.db import connection
from django.utils import timezone
from django_scopes import scope, scopes_disabled

from campaigns.models import Campaign, Delivery
from campaigns.sending import INTERRUPTED_WHILE_HANDED_OVER, plan_deliveries, send_campaign
from tests.conftest import SmtpSink, database_url, free_port
from tests.factories import customers, sendable_campaign

ROOT = Path(__file__).resolve().parents[1]
RECURSIVE = (
    "<p>Hi {{ customer.first_name }} <a href='https://shop.example/'>Shop</a></p>"
    "{% macro down(n) %}{{ down(n + 1) }}{% endmacro %}"
    "{% if customer.email == 'x@example.test' %}{{ down(0) }}{% endif %}"
)


@pytest.fixture
def ws(make_workspace):
    return make_workspace("Shop")


def send(ws, campaign):
    with scope(workspace=ws):
        return send_campaign(campaign)


def statuses():
    with scopes_disabled():
        return dict(Delivery.objects.values_list("customer__external_id", "status"))


@pytest.mark.parametrize(
    "html, subject, reason",
    [
        # Python's own RecursionError, not the depth budget: the limit is set above it.
        (RECURSIVE, "Hi", "deeper than Python allows (RecursionError)"),
        # A plain Python error in one customer's subject.
        ("<p>Hi</p>", "{{ 100 // customer.n }} % off", "ZeroDivisionError"),
    ],
    ids=["RecursionError in the body", "error in the subject"],
)
def test_one_customers_failing_render_fails_only_that_delivery(
    ws, smtp_server, settings, html, subject, reason
):
    settings.PERSONALISE_MAX_DEPTH = 1_000_000
    customers(
        ws,
        [
            ("a", "a@example.test", {"first_name": "Ann", "n": 4}),
            ("x", "x@example.test", {"first_name": "Xi", "n": 0}),
            ("b", "b@example.test", {"first_name": "Bo", "n": 5}),
        ],
    )
    campaign = sendable_campaign(ws, html, subject=subject)
    report = send(ws, campaign)
    assert (report.sent, report.failed) == (2, 1)
    assert statuses() == {"a": "sent", "x": "failed", "b": "sent"}
    with scopes_disabled():
        assert reason in Delivery.objects.get(customer__external_id="x").error
        assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SENT
    assert sorted(r for e in smtp_server.envelopes for r in e.rcpt_tos) == [
        "a@example.test",
        "b@example.test",
    ]


def test_an_error_outside_the_template_fails_only_that_delivery_too(ws, smtp_server):
    # Attributes that are not an object (a bad import, say) break the context itself.
    customers(ws, [("a", "a@example.test", {}), ("x", "x@example.test", [1, 2])])
    campaign = sendable_campaign(ws, "<p>Hi {{ customer.first_name }}</p>", subject="S")
    report = send(ws, campaign)
    assert (report.sent, report.failed) == (1, 1)
    assert statuses() == {"a": "sent", "x": "failed"}
    with scopes_disabled():
        assert Delivery.objects.get(customer__external_id="x").error.startswith("TypeError")
        assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SENT
    assert [e.rcpt_tos for e in smtp_server.envelopes] == [["a@example.test"]]


def test_a_rerun_sends_what_never_reached_smtp_and_never_what_may_have(ws, smtp_server):
    """What a crash leaves: "sending" without handed_over_at (claimed, never handed to
    the server) and with it (the crash came while the server was taking it)."""
    people = customers(ws, [(c, f"{c}@example.test", {}) for c in ("never", "maybe", "queued")])
    campaign = sendable_campaign(ws, "<p>Hi</p>", subject="S")
    with scope(workspace=ws):
        plan_deliveries(campaign.nodes.get())
        Delivery.objects.filter(customer=people[0]).update(status=Delivery.Status.SENDING)
        Delivery.objects.filter(customer=people[1]).update(
            status=Delivery.Status.SENDING, handed_over_at=timezone.now()
        )
    report = send(ws, campaign)
    assert (report.resumed, report.skipped, report.sent) == (1, 1, 2)
    assert statuses() == {"never": "sent", "maybe": "failed", "queued": "sent"}
    with scopes_disabled():
        assert Delivery.objects.get(customer=people[1]).error == INTERRUPTED_WHILE_HANDED_OVER
    assert sorted(r for e in smtp_server.envelopes for r in e.rcpt_tos) == [
        "never@example.test",
        "queued@example.test",
    ]


class DroppingSink(SmtpSink):
    """Hangs up on the first message instead of answering it."""

    async def handle_DATA(self, server, session, envelope):
        if not getattr(self, "dropped", False):
            self.dropped = True
            server.transport.close()
            return "421 Closing"
        return await super().handle_DATA(server, session, envelope)


def test_a_dropped_smtp_connection_fails_one_delivery_and_the_rest_go_on(ws, settings):
    customers(ws, [(c, f"{c}@example.test", {}) for c in ("a", "b", "c", "d")])
    campaign = sendable_campaign(ws, "<p>Hi</p>", subject="S")
    sink = DroppingSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    try:
        report = send(ws, campaign)
    finally:
        controller.stop()
    assert (report.sent, report.failed) == (3, 1)
    with scopes_disabled():
        dropped = Delivery.objects.get(status=Delivery.Status.FAILED)
    # It reached the server, which may have kept it: failed, never resent.
    assert "SMTPServerDisconnected" in dropped.error and dropped.handed_over_at is not None
    received = sorted(r for e in sink.envelopes for r in e.rcpt_tos)
    assert received == sorted(
        f"{c}@example.test" for c in {"a", "b", "c", "d"} - {dropped.customer.external_id}
    )


class KillingSink(SmtpSink):
    """Keeps every message, and SIGKILLs the sending process as the `kill_at`-th one
    arrives, before answering it: the sender dies waiting for the server's reply."""

    def __init__(self, kill_at: int):
        super().__init__()
        self.kill_at, self.victim = kill_at, None

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        if len(self.envelopes) == self.kill_at and self.victim:
            os.kill(self.victim, signal.SIGKILL)
        return reply


def _sessions(application_name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_send_killed_mid_batch_then_rerun_mails_everyone_exactly_once(ws, settings, tmp_path):
    people = customers(ws, [(f"c{i:02}", f"c{i:02}@example.test", {}) for i in range(30)])
    campaign = sendable_campaign(
        ws, "<p>Hi <a href='https://shop.example/'>Shop</a></p>", subject="S"
    )
    sink = KillingSink(kill_at=12)
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(
            DATABASE_URL=database_url("killed-sender"),
            EMAIL_URL=f"smtp://127.0.0.1:{controller.port}",
            TRACKING_SPOOL_DIR=str(tmp_path / "spool"),
        )
        process = subprocess.Popen(
            [sys.executable, "manage.py", "send_campaign", str(campaign.pk)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        sink.victim = process.pid
        try:
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]

        # The whole batch of 30 was claimed: 11 sent, the 12th was being handed over,
        # 18 never reached the server.
        with scopes_disabled():
            left = Counter((d.status, d.handed_over_at is not None) for d in Delivery.objects.all())
        assert left == {("sent", True): 11, ("sending", True): 1, ("sending", False): 18}
        assert len(sink.envelopes) == 12

        # PostgreSQL releases the dead run's send lock with its session.
        deadline = time.monotonic() + 30
        while _sessions("killed-sender") and time.monotonic() < deadline:
            time.sleep(0.05)
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
        report = send(ws, campaign)
    finally:
        controller.stop()

    assert (report.resumed, report.skipped, report.sent, report.failed) == (18, 1, 18, 0)
    received = Counter(r for e in sink.envelopes for r in e.rcpt_tos)
    assert received == {c.email: 1 for c in people}
    with scopes_disabled():
        twelfth = Delivery.objects.get(status=Delivery.Status.FAILED)
        assert twelfth.error == INTERRUPTED_WHILE_HANDED_OVER
        assert twelfth.customer.email == sink.envelopes[11].rcpt_tos[0]
        assert Delivery.objects.filter(status=Delivery.Status.SENT).count() == 29
        assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.SENT
