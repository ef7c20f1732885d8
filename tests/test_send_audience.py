"""Sending a campaign as a marketer does, against a real SMTP server (aiosmtpd): the
audience (everyone subscribed or a segment, unsubscribed never), a confirmation stating
the exact number of recipients, test sends that no number ever counts, sender name,
Reply-To and preheader in the message, scheduling in the workspace's time zone, and a
status that follows what happened and cannot be set by hand."""

import re
import threading
import time as clock
from datetime import UTC, date, datetime, time, timedelta
from urllib.request import urlopen

import pytest
from django.db import connection
from django.utils import timezone
from django_scopes import scope, scopes_disabled

from campaigns import scheduling
from campaigns.models import (
    Campaign,
    Customer,
    Delivery,
    DeliveryCount,
    Role,
    Segment,
    TestSend,
)
from campaigns.scheduling import ScheduleError, local_to_utc, start_due_sends
from campaigns.sending import send_campaign
from clickmap import metrics
from clickmap.rollups import aggregate
from tests.factories import customers, sendable_campaign
from tracking.hotpath import spool
from tracking.ingest import ingest_spool
from tracking.models import ClickEvent, OpenEvent

UTC = UTC


@pytest.mark.parametrize(
    "day, at, zone, utc",
    [
        # Winter: Berlin is UTC+1; summer (CEST) UTC+2.
        (date(2026, 12, 7), time(9, 0), "Europe/Berlin", datetime(2026, 12, 7, 8, 0, tzinfo=UTC)),
        (date(2026, 7, 7), time(9, 0), "Europe/Berlin", datetime(2026, 7, 7, 7, 0, tzinfo=UTC)),
        # New York, winter: UTC-5; the day changes in Tokyo (UTC+9).
        (
            date(2026, 1, 15),
            time(18, 30),
            "America/New_York",
            datetime(2026, 1, 15, 23, 30, tzinfo=UTC),
        ),
        (date(2026, 3, 2), time(7, 15), "Asia/Tokyo", datetime(2026, 3, 1, 22, 15, tzinfo=UTC)),
        # The hour Berlin repeats on 25 Oct 2026 (03:00 CEST → 02:00 CET): the first one.
        (
            date(2026, 10, 25),
            time(2, 30),
            "Europe/Berlin",
            datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        ),
        (date(2026, 12, 7), time(9, 0), "UTC", datetime(2026, 12, 7, 9, 0, tzinfo=UTC)),
    ],
)
def test_a_local_time_is_converted_to_utc_as_computed_by_hand(day, at, zone, utc):
    assert local_to_utc(day, at, zone) == utc


def test_a_time_the_zone_skips_is_refused():
    # 29 Mar 2026, Berlin: 02:00 CET jumps to 03:00 CEST.
    with pytest.raises(ScheduleError, match="does not exist in Europe/Berlin"):
        local_to_utc(date(2026, 3, 29), time(2, 30), "Europe/Berlin")


@pytest.fixture
def shop(make_workspace):
    """Ten customers: two unsubscribed, one without an address; a segment of the
    Germans; a campaign with a sender, Reply-To and a personalised preheader."""
    workspace = make_workspace("Shop")
    rows = [
        (
            f"s{i}",
            f"s{i}@example.test" if i != 4 else "",
            {"country": "DE" if i < 6 else "FR", "first_name": f"N{i}"},
        )
        for i in range(10)
    ]
    people = customers(workspace, rows)
    html = (
        "<html><body><p>Hi {{ first_name }}</p>"
        "<a href='http://127.0.0.1:9/shop?c={{ first_name }}'>Shop</a>"
        "<a href='{{ unsubscribe_url }}'>Unsubscribe</a></body></html>"
    )
    campaign = sendable_campaign(workspace, html, subject="Hello {{ first_name }}", name="Winter")
    with scope(workspace=workspace):
        Customer.objects.filter(external_id__in=["s1", "s7"]).update(unsubscribed_at=timezone.now())
        germans = Segment.objects.create(
            workspace=workspace,
            name="Germans",
            rule=[{"attribute": "country", "op": "eq", "value": "DE"}],
        )
        node = campaign.nodes.get()
        node.from_email = "news@fernhill.example"
        node.from_name = "Fernhill Outdoor"
        node.reply_to = "care@fernhill.example"
        node.preheader = "Cosy picks for {{ first_name }} & co"
        node.save()
    return workspace, campaign, germans, people


def expected_recipients(people, *, country=None):
    """The brute force: subscribed, with an address, in the segment's country."""
    unsubscribed = {"s1", "s7"}
    return sorted(
        c.email
        for c in people
        if c.email
        and c.external_id not in unsubscribed
        and (country is None or c.attributes["country"] == country)
    )


def owner_client(workspace, client_for):
    with scopes_disabled():
        return client_for(workspace.memberships.get().user)


def test_the_confirmation_states_the_exact_count_and_the_send_reaches_exactly_them(
    shop, client_for, smtp_server, spool_dir, eager_tasks, django_capture_on_commit_callbacks
):
    workspace, campaign, germans, people = shop
    client = owner_client(workspace, client_for)
    url = f"/w/{workspace.slug}/campaigns/{campaign.pk}/send/"
    want = expected_recipients(people, country="DE")  # s0 s2 s3 s5: 4
    assert len(want) == 4
    everyone = expected_recipients(people)
    page = client.post(url, {"segment": germans.pk, "when": "now"})
    assert page.status_code == 200
    assert f'data-count="{len(want)}"'.encode() in page.content
    assert b"Send to 4 recipients now" in page.content
    everyone_page = client.post(url, {"segment": "", "when": "now"})
    assert f'data-count="{len(everyone)}"'.encode() in everyone_page.content
    # The audience grew after the confirmation was shown: it is shown again, not sent.
    with scope(workspace=workspace):
        Customer.objects.create(
            workspace=workspace,
            external_id="new",
            email="new@example.test",
            attributes={"country": "DE"},
        )
    again = client.post(
        url, {"segment": germans.pk, "when": "now", "expected": "4", "confirm": "1"}
    )
    assert again.status_code == 200 and b"The audience changed" in again.content
    assert b'data-count="5"' in again.content
    assert not smtp_server.envelopes
    with scopes_disabled():
        assert Campaign.objects.get(pk=campaign.pk).status == "draft"
    with django_capture_on_commit_callbacks(execute=True):  # the send starts on commit
        done = client.post(
            url, {"segment": germans.pk, "when": "now", "expected": "5", "confirm": "1"}
        )
    assert done.status_code == 302
    received = sorted(r for e in smtp_server.envelopes for r in e.rcpt_tos)
    assert received == sorted([*want, "new@example.test"])
    with scopes_disabled():
        sent = Campaign.objects.get(pk=campaign.pk)
        assert (sent.status, sent.segment_id) == ("sent", germans.pk)
    # Sent again to the same audience: nobody new, the confirmation says 0.
    zero = client.post(url, {"segment": germans.pk, "when": "now"})
    assert b'data-count="0"' in zero.content


def test_sender_name_reply_to_and_preheader_are_in_the_message(shop, smtp_server, spool_dir):
    workspace, campaign, germans, people = shop
    with scope(workspace=workspace):
        report = send_campaign(campaign)
    assert report.sent == 7
    message = next(m for m in smtp_server.messages() if m["To"] == "s0@example.test")
    assert message["From"] == "Fernhill Outdoor <news@fernhill.example>"
    assert message["Reply-To"] == "care@fernhill.example"
    assert message["Subject"] == "Hello N0"
    body = message.get_body(preferencelist=("html",)).get_content()
    opened = body.index("<body>") + len("<body>")
    assert body[opened:].startswith('<span class="preheader" style="display:none !important;')
    assert "Cosy picks for N0 &amp; co&#847;" in body  # personalised, escaped, then padding
    assert body.index("Cosy picks") < body.index("Hi N0")
    assert body.count('class="preheader"') == 1


def snapshot(workspace, campaign):
    """Every number of the campaign that a test send could move."""
    with scope(workspace=workspace):
        node = campaign.nodes.get()
        variant = node.variants.get()
        s = metrics.Scope(workspace=workspace, campaign_id=campaign.pk, node_id=node.pk)
        totals = metrics.email_totals(s)
        return {
            "deliveries": Delivery.objects.count(),
            "delivery_counts": sorted(
                DeliveryCount.objects.values_list("variant_id", "status", "n")
            ),
            "clicks": ClickEvent.objects.count(),
            "opens": OpenEvent.objects.count(),
            "totals": vars(totals) if hasattr(totals, "__dict__") else totals,
            "links": metrics.link_counts(s),
            "variant": variant.pk,
            "customers": sorted(Customer.objects.values_list("pk", "unsubscribed_at")),
        }


def test_a_test_send_is_marked_and_moves_no_number_even_when_its_links_are_clicked(
    shop, client_for, smtp_server, spool_dir, landing_server, settings
):
    workspace, campaign, germans, people = shop
    with scope(workspace=workspace):
        node = campaign.nodes.get()
        version = node.variants.get().template_version
        source = version.html.replace("http://127.0.0.1:9", landing_server.url)
    # A real send first, with a real click, so the numbers are not all zero.
    with scope(workspace=workspace):
        from campaigns.services import template_version_save

        new, _ = template_version_save(template=version.template, html=source)
        node.variants.update(template_version=new)
        send_campaign(campaign)
    real = next(m for m in smtp_server.messages() if m["To"] == "s0@example.test")
    with scopes_disabled():
        Delivery.objects.update(sent_at=timezone.now() - timedelta(minutes=10))
    settings.TRACKING_INGEST_INLINE = False
    body = real.get_body(preferencelist=("html",)).get_content()
    tracked = re.search(r"""(http[^'"]*/c/[^'"]+)""", body).group(1)
    from django.test import Client

    assert (
        Client(HTTP_USER_AGENT="Mozilla/5.0 (Windows NT 10.0) Chrome/124.0")
        .get(tracked.replace(settings.TRACKING_BASE_URL, ""))
        .status_code
        == 302
    )
    spool().close()  # the tracker's file is complete: ingestion may take it
    ingest_spool()
    aggregate()
    before = snapshot(workspace, campaign)
    assert before["clicks"] == 1 and before["deliveries"] == 7

    smtp_server.envelopes.clear()
    client = owner_client(workspace, client_for)
    response = client.post(
        f"/w/{workspace.slug}/campaigns/{campaign.pk}/test-send/",
        {"addresses": "qa@example.test, boss@example.test", "customer": "s3@example.test"},
    )
    assert response.status_code == 302
    with scopes_disabled():
        assert TestSend.objects.get().errors == []
    messages = smtp_server.messages()
    assert sorted(m["To"] for m in messages) == ["boss@example.test", "qa@example.test"]
    for message in messages:
        assert message["Subject"] == "[Test] Hello N3"  # personalised as s3
        assert message["X-Clickmap-Test"] == "yes"
        assert message["List-Unsubscribe"] is None
        html = message.get_body(preferencelist=("html",)).get_content()
        assert "/c/" not in html and "/o/" not in html  # no tracking at all
        link = f"{landing_server.url}/shop?c=N3"
        assert re.search(f"""href=['"]{re.escape(link)}['"]""", html)
        assert urlopen(link).status == 200  # noqa: S310  (the test's reader clicks it)
        assert "Cosy picks for N3" in html
    spool().close()
    ingest_spool()
    aggregate()
    after = snapshot(workspace, campaign)
    assert after == before
    with scopes_disabled():
        record = TestSend.objects.get()
        assert (record.sent, record.failed, record.addresses) == (
            2,
            0,
            ["qa@example.test", "boss@example.test"],
        )
        assert Campaign.objects.get(pk=campaign.pk).status == "sent"
    # Bad addresses are refused and nothing is mailed.
    smtp_server.envelopes.clear()
    bad = client.post(
        f"/w/{workspace.slug}/campaigns/{campaign.pk}/test-send/", {"addresses": "qa@, x"}
    )
    assert bad.status_code == 400 and b"Not an email address" in bad.content
    assert not smtp_server.envelopes


def test_status_follows_what_happened_and_cannot_be_set_by_hand(
    shop, client_for, settings, eager_tasks, django_capture_on_commit_callbacks
):
    workspace, campaign, germans, people = shop
    client = owner_client(workspace, client_for)
    edit = f"/w/{workspace.slug}/campaigns/{campaign.pk}/edit/"
    assert b'name="status"' not in client.get(edit).content
    client.post(edit, {"name": "Winter", "kind": "campaign", "status": "sent", "description": ""})
    with scopes_disabled():
        assert Campaign.objects.get(pk=campaign.pk).status == "draft"
    # Scheduled, then cancelled: never sent.
    at = timezone.now() + timedelta(hours=2)
    with scope(workspace=workspace):
        scheduling.send_schedule(campaign, at)
        assert Campaign.objects.get(pk=campaign.pk).status == "scheduled"
        assert start_due_sends(now=at - timedelta(seconds=1)) == []
        scheduling.send_cancel(campaign)
        assert Campaign.objects.get(pk=campaign.pk).status == "cancelled"
        assert start_due_sends(now=at + timedelta(seconds=1)) == []
        with pytest.raises(ScheduleError):
            scheduling.send_cancel(campaign)
    # An SMTP server that cannot be reached: failed, with the reason; deliveries queued.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # discard: nobody listens
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            f"/w/{workspace.slug}/campaigns/{campaign.pk}/send/",
            {"segment": "", "when": "now", "expected": "7", "confirm": "1"},
        )
    with scopes_disabled():
        failed = Campaign.objects.get(pk=campaign.pk)
        assert failed.status == "failed" and "cannot be reached" in failed.send_error
        assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"}
    page = client.get(f"/w/{workspace.slug}/campaigns/{campaign.pk}/")
    assert b"The send stopped" in page.content


def test_a_scheduled_send_is_entered_in_the_workspace_time_zone(shop, client_for):
    workspace, campaign, germans, people = shop
    with scopes_disabled():
        type(workspace).objects.filter(pk=workspace.pk).update(time_zone="Europe/Berlin")
    client = owner_client(workspace, client_for)
    url = f"/w/{workspace.slug}/campaigns/{campaign.pk}/send/"
    day = (timezone.now() + timedelta(days=400)).date().replace(month=12, day=7)
    form = {"segment": germans.pk, "when": "later", "date": day.isoformat(), "time": "09:00"}
    page = client.post(url, form)
    assert b"09:00 Europe/Berlin" in page.content and b"08:00 UTC" in page.content
    assert client.post(url, {**form, "expected": "4", "confirm": "1"}).status_code == 302
    with scopes_disabled():
        scheduled = Campaign.objects.get(pk=campaign.pk)
    assert scheduled.status == "scheduled"
    assert scheduled.scheduled_at == datetime(day.year, 12, 7, 8, 0, tzinfo=UTC)
    detail = client.get(f"/w/{workspace.slug}/campaigns/{campaign.pk}/")
    assert b"09:00 Europe/Berlin" in detail.content
    # A time in the past, and a time Berlin skips, are refused with a reason.
    past = client.post(url, {**form, "date": "2020-01-01"})
    assert past.status_code == 400 and b"in the future" in past.content
    # EU clocks go forward on the last Sunday of March, at 02:00 local.
    spring = max(
        date(day.year + 1, 3, d) for d in range(25, 32) if date(day.year + 1, 3, d).weekday() == 6
    )
    gap = client.post(url, {**form, "date": spring.isoformat(), "time": "02:30"})
    assert gap.status_code == 400 and b"does not exist in Europe/Berlin" in gap.content
    with scopes_disabled():
        assert Campaign.objects.get(pk=campaign.pk).scheduled_at == scheduled.scheduled_at


@pytest.mark.django_db(transaction=True)
def test_two_beats_at_once_start_each_due_send_once(make_workspace, monkeypatch):
    workspace = make_workspace("Racing beats")
    html = "<p><a href='https://shop.example/'>Shop</a></p>"
    due = [sendable_campaign(workspace, html, name=f"Due {i}") for i in range(6)]
    with scopes_disabled():
        Campaign.objects.filter(pk__in=[c.pk for c in due]).update(
            status="scheduled", scheduled_at=timezone.now() - timedelta(seconds=1)
        )
    queued = []
    go = threading.Barrier(2)

    def queue(pk):
        queued.append(pk)
        clock.sleep(0.2)  # holds the claiming transaction open while the other run looks

    monkeypatch.setattr(scheduling, "_queue_send", queue)
    results = []

    def beat():
        try:
            go.wait(timeout=10)  # both runs start together
            results.append(start_due_sends())
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    started = sorted(pk for run in results for pk in run)
    assert started == sorted(c.pk for c in due) == sorted(queued)
    with scopes_disabled():
        assert set(Campaign.objects.values_list("status", flat=True)) == {"sending"}


def test_a_send_is_due_at_its_scheduled_instant_not_a_microsecond_before(
    make_workspace, monkeypatch
):
    workspace = make_workspace("On the dot")
    campaign = sendable_campaign(workspace, "<p><a href='https://shop.example/'>S</a></p>")
    queued = []
    monkeypatch.setattr(scheduling, "_queue_send", queued.append)
    at = timezone.now() + timedelta(hours=1)
    with scope(workspace=workspace):
        scheduling.send_schedule(campaign, at)
        assert start_due_sends(now=at - timedelta(microseconds=1)) == []
        assert start_due_sends(now=at) == [campaign.pk] == queued
        assert Campaign.objects.get(pk=campaign.pk).status == "sending"


@pytest.mark.django_db(transaction=True)
def test_the_start_due_sends_command_starts_what_is_due_and_nothing_else(
    make_workspace, smtp_server, spool_dir, eager_tasks
):
    """The embedded default has no beat: `manage.py start_due_sends --every 5` is it."""
    from io import StringIO

    from django.core.management import call_command

    workspace = make_workspace("No beat")
    customers(workspace, [(f"n{i}", f"n{i}@example.test", {}) for i in range(3)])
    html = "<p><a href='https://shop.example/'>Shop</a></p>"
    due = sendable_campaign(workspace, html, subject="Due", name="Due")
    later = sendable_campaign(workspace, html, subject="Later", name="Later")
    with scope(workspace=workspace):
        scheduling.send_schedule(due, timezone.now() + timedelta(hours=1))
        scheduling.send_schedule(later, timezone.now() + timedelta(hours=2))
        Campaign.objects.filter(pk=due.pk).update(
            scheduled_at=timezone.now() - timedelta(seconds=1)
        )
    out = StringIO()
    call_command("start_due_sends", stdout=out)
    assert out.getvalue() == f"started the scheduled send of campaign {due.pk}\n"
    assert sorted(m["Subject"] for m in smtp_server.messages()) == ["Due"] * 3
    with scopes_disabled():
        statuses = dict(Campaign.objects.values_list("name", "status"))
    assert statuses == {"Due": "sent", "Later": "scheduled"}


def test_a_send_left_sending_by_a_killed_worker_is_resumed_and_mails_nobody_twice(
    shop, client_for, smtp_server, spool_dir, eager_tasks, django_capture_on_commit_callbacks
):
    workspace, campaign, germans, people = shop
    with scope(workspace=workspace):
        from campaigns.sending import plan_deliveries

        plan_deliveries(campaign.nodes.get())
        first = Delivery.objects.order_by("pk").first()
        Delivery.objects.filter(pk=first.pk).update(status="sent")  # mailed before the kill
        Campaign.objects.filter(pk=campaign.pk).update(status="sending")
    client = owner_client(workspace, client_for)
    page = client.get(f"/w/{workspace.slug}/campaigns/{campaign.pk}/")
    assert b"Resume the send" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/w/{workspace.slug}/campaigns/{campaign.pk}/send/resume/")
    received = sorted(r for e in smtp_server.envelopes for r in e.rcpt_tos)
    with scopes_disabled():
        assert received == sorted(
            e for e in expected_recipients(people) if e != first.customer.email
        )
        assert Campaign.objects.get(pk=campaign.pk).status == "sent"
    # Not sending any more: resuming is refused and changes nothing.
    client.post(f"/w/{workspace.slug}/campaigns/{campaign.pk}/send/resume/")
    assert len(smtp_server.envelopes) == len(received)


def test_a_stopped_send_resent_to_another_audience_mails_exactly_the_new_audience(
    shop, client_for, smtp_server, spool_dir, eager_tasks, django_capture_on_commit_callbacks
):
    """A send stopped with everyone queued (the SMTP server was down); meanwhile s0
    unsubscribes and the marketer narrows the audience to the Germans: the confirmation
    counts them, and exactly they are mailed — no queued leftover of the old audience,
    and never the customer who unsubscribed."""
    workspace, campaign, germans, people = shop
    with scope(workspace=workspace):
        from campaigns.sending import plan_deliveries

        assert plan_deliveries(campaign.nodes.get()) == 7
        Campaign.objects.filter(pk=campaign.pk).update(status="failed")
        Customer.objects.filter(external_id="s0").update(unsubscribed_at=timezone.now())
    want = [e for e in expected_recipients(people, country="DE") if e != "s0@example.test"]
    client = owner_client(workspace, client_for)
    url = f"/w/{workspace.slug}/campaigns/{campaign.pk}/send/"
    page = client.post(url, {"segment": germans.pk, "when": "now"})
    assert f'data-count="{len(want)}"'.encode() in page.content
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            url,
            {"segment": germans.pk, "when": "now", "expected": str(len(want)), "confirm": "1"},
        )
    assert sorted(r for e in smtp_server.envelopes for r in e.rcpt_tos) == want
    with scopes_disabled():
        assert sorted(Delivery.objects.values_list("customer__email", "status")) == [
            (e, "sent") for e in want
        ]


def test_sender_settings_are_checked_and_saved_and_viewers_cannot_send(
    shop, client_for, add_member, smtp_server
):
    workspace, campaign, germans, people = shop
    client = owner_client(workspace, client_for)
    with scopes_disabled():
        node = campaign.nodes.get()
    url = f"/w/{workspace.slug}/campaigns/{campaign.pk}/emails/{node.pk}/sender/"
    p = f"n{node.pk}-"
    good = {
        p + "from_name": "Müller & Söhne",
        p + "from_email": "hello@muller.example",
        p + "reply_to": "",
        p + "preheader": "Hi {{ first_name }}",
    }
    for field, bad, reason in (
        ("from_name", "Evil\nBcc: x@example.test", b"no line breaks"),
        ("from_email", "not an address", b"valid email"),
        ("reply_to", "nope", b"valid email"),
        ("preheader", "{{ unclosed", b"personalisation is invalid"),
    ):
        response = client.post(url, {**good, p + field: bad})
        assert response.status_code == 400 and reason in response.content, field
    assert client.post(url, good).status_code == 302
    with scopes_disabled():
        node.refresh_from_db()
    assert (node.from_name, node.from_email, node.reply_to) == (
        "Müller & Söhne",
        "hello@muller.example",
        "",
    )
    from campaigns.sending import sender_address

    assert sender_address(node) == "Müller & Söhne <hello@muller.example>"
    client.post(
        f"/w/{workspace.slug}/campaigns/{campaign.pk}/test-send/", {"addresses": "a@x.test"}
    )
    [message] = smtp_server.messages()
    [sender] = message["From"].addresses  # encoded on the wire, decoded here
    assert (sender.display_name, sender.addr_spec) == ("Müller & Söhne", "hello@muller.example")
    assert message["Reply-To"] is None
    smtp_server.envelopes.clear()
    viewer = client_for(add_member(workspace, Role.VIEWER))
    base = f"/w/{workspace.slug}/campaigns/{campaign.pk}/"
    for action in (
        "send/",
        "send/cancel/",
        "send/resume/",
        "test-send/",
        f"emails/{node.pk}/sender/",
    ):
        assert viewer.post(base + action, {"addresses": "x@example.test"}).status_code == 403
    assert not smtp_server.envelopes
