"""Sending through a real SMTP server: personalisation, tracked links, headers, A/B split,
idempotency, failures recorded, and the sandbox and header-injection defences."""

import re
from collections import Counter

import pytest
from django.core.management import call_command
from django_scopes import scope, scopes_disabled

from campaigns.models import Delivery
from campaigns.sending import SmtpUnavailable, send_campaign
from tests.conftest import free_port
from tests.factories import customers, sendable_campaign
from tracking.tokens import ClickToken, OpenToken, UnsubscribeToken, verify_token

TEMPLATE = """<!doctype html><html><head><title>Offers</title></head><body>
<p>Hi {{ customer.first_name }},</p>
<table>{% for p in products %}
<tr><td><a href="{{ p.url }}">{{ p.name }}</a></td></tr>{% endfor %}
</table>
{% if customer.vip %}
<p><a href="https://shop.example/vip?ref=mail&amp;x=1">VIP lounge</a></p>{% endif %}
<p><a href="mailto:help@shop.example">Write to us</a>
<a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>"""


def html_part(message):
    return message.get_body(preferencelist=("html",)).get_content()


def tracked_links(html):
    return re.findall(r'href="(http://[^"]+/c/([^"]+))"', html)


@pytest.fixture
def ws(make_workspace):
    return make_workspace("Shop")


@pytest.fixture
def people(ws):
    return customers(
        ws,
        [
            (
                "c1",
                "ann@example.test",
                {
                    "first_name": "Ann",
                    "vip": True,
                    "products": [
                        {"name": "Boots", "url": "https://shop.example/boots"},
                        {"name": "Hat", "url": "https://shop.example/hat"},
                    ],
                },
            ),
            (
                "c2",
                "bob@example.test",
                {
                    "first_name": "Bob",
                    "products": [
                        {"name": "Scarf", "url": "https://shop.example/scarf?size=m&color=red"},
                    ],
                },
            ),
        ],
    )


def send(ws, campaign):
    with scope(workspace=ws):
        return send_campaign(campaign)


def test_each_customer_gets_their_own_personalised_tracked_email(ws, people, smtp_server):
    campaign = sendable_campaign(ws, TEMPLATE)
    report = send(ws, campaign)
    assert (report.sent, report.failed) == (2, 0)
    by_to = {m["To"]: m for m in smtp_server.messages()}
    assert set(by_to) == {"ann@example.test", "bob@example.test"}
    assert by_to["ann@example.test"]["Subject"] == "Hello Ann"
    ann, bob = html_part(by_to["ann@example.test"]), html_part(by_to["bob@example.test"])
    assert "Hi Ann," in ann and "Hi Bob," in bob
    with scopes_disabled():
        deliveries = {d.customer.email: d for d in Delivery.objects.select_related("customer")}
        links = {
            link.pk: link for link in deliveries["ann@example.test"].template_version.links.all()
        }
    # Every tracked URL names this delivery and the inventory row of the source link.
    ann_targets = {}
    for _, token in tracked_links(ann):
        parsed = verify_token(token)
        if isinstance(parsed, ClickToken) and not parsed.honeypot:
            assert parsed.delivery_id == deliveries["ann@example.test"].pk
            ann_targets[parsed.url] = links[parsed.link_id].href
    assert ann_targets["https://shop.example/boots"] == "{{ p.url }}"
    assert ann_targets["https://shop.example/hat"] == "{{ p.url }}"
    assert ann_targets["https://shop.example/vip?ref=mail&x=1"].startswith(
        "https://shop.example/vip"
    )
    bob_urls = {verify_token(t).url for _, t in tracked_links(bob)}
    assert "https://shop.example/scarf?size=m&color=red" in bob_urls
    assert not any("vip" in url for url in bob_urls)  # Bob is not VIP: no such link
    assert 'href="mailto:help@shop.example"' in ann  # not trackable: left alone


def test_messages_carry_unsubscribe_headers_pixel_honeypot_and_text(ws, people, smtp_server):
    send(ws, sendable_campaign(ws, TEMPLATE))
    message = smtp_server.messages()[0]
    unsubscribe = message["List-Unsubscribe"]
    assert re.fullmatch(r"<http://[^>]+/u/[^>]+>", unsubscribe)
    assert isinstance(verify_token(unsubscribe.rsplit("/u/", 1)[1][:-1]), UnsubscribeToken)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = html_part(message)
    pixel = re.search(r'<img src="http://[^"]+/o/([^"]+)" width="1" height="1"', html)
    assert pixel and isinstance(verify_token(pixel.group(1)), OpenToken)
    honeypots = [t for _, t in tracked_links(html) if verify_token(t).honeypot]
    assert len(honeypots) == 1
    assert re.search(r'<a href="[^"]+" aria-hidden="true" tabindex="-1" style="display:none', html)
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "Hi " in text and "<a" not in text and "/c/" in text


def test_sending_twice_mails_nobody_twice(ws, people, smtp_server):
    campaign = sendable_campaign(ws, TEMPLATE)
    send(ws, campaign)
    again = send(ws, campaign)
    assert (again.planned, again.sent) == (0, 0)
    assert len(smtp_server.envelopes) == 2
    customers(ws, [("c3", "cy@example.test", {"first_name": "Cy"})])
    third = send(ws, campaign)  # a new customer since: only they get it
    assert third.sent == 1
    assert [e.rcpt_tos for e in smtp_server.envelopes][-1] == ["cy@example.test"]


def test_command_sends_and_reports(ws, people, smtp_server, capsys):
    campaign = sendable_campaign(ws, TEMPLATE)
    call_command("send_campaign", str(campaign.pk))
    assert "2 sent, 0 failed" in capsys.readouterr().out
    assert len(smtp_server.envelopes) == 2


def test_ab_split_follows_weights(ws, smtp_server):
    customers(ws, [(f"c{i}", f"p{i}@example.test", {}) for i in range(40)])
    campaign = sendable_campaign(
        ws,
        "",
        variants=[
            ("A", 3, "<p>A <a href='https://x.example/a'>a</a></p>", "html"),
            ("B", 1, "<p>B <a href='https://x.example/b'>b</a></p>", "html"),
        ],
        subject="Split",
    )
    send(ws, campaign)
    with scopes_disabled():
        split = Counter(Delivery.objects.values_list("variant__name", flat=True))
    assert split == {"A": 30, "B": 10}
    bodies = Counter("A <a" in html_part(m) for m in smtp_server.messages())
    assert bodies == {True: 30, False: 10}


def test_unsubscribed_and_addressless_customers_are_not_mailed(ws, smtp_server):
    from django.utils import timezone

    people = customers(
        ws, [("a", "a@example.test", {}), ("b", "b@example.test", {}), ("c", "", {})]
    )
    with scopes_disabled():
        people[1].unsubscribed_at = timezone.now()
        people[1].save()
    send(ws, sendable_campaign(ws, "<p>Hi</p>", subject="Hi"))
    assert [e.rcpt_tos for e in smtp_server.envelopes] == [["a@example.test"]]


def test_header_injection_through_customer_fields_is_refused(ws, smtp_server):
    customers(
        ws,
        [
            ("x", "x@example.test", {"first_name": "Eve\r\nBcc: victim@example.test"}),
            ("y", "y@example.test\r\nBcc: victim@example.test", {"first_name": "Mallory"}),
        ],
    )
    report = send(ws, sendable_campaign(ws, "<p>Hi</p>"))
    rcpts = [r for e in smtp_server.envelopes for r in e.rcpt_tos]
    assert "victim@example.test" not in rcpts
    for message in smtp_server.messages():
        assert message["Bcc"] is None
        assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
    assert report.sent == 1 and report.failed == 1
    with scopes_disabled():
        failed = Delivery.objects.get(status=Delivery.Status.FAILED)
    assert failed.customer.external_id == "y" and failed.error


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.system('id') }}",
        "{{ customer.__class__ }}",
        "{% for k in self.__dict__ %}{{ k }}{% endfor %}",
    ],
)
def test_jinja_sandbox_escapes_fail_the_delivery_cleanly(ws, smtp_server, payload):
    customers(ws, [("x", "x@example.test", {})])
    report = send(ws, sendable_campaign(ws, f"<p>{payload}</p>", subject="S"))
    assert report.sent == 0 and report.failed == 1
    assert smtp_server.envelopes == []
    with scopes_disabled():
        error = Delivery.objects.get().error
    assert "not allowed" in error or "could not be rendered" in error
    assert "uid=" not in error


def test_a_refused_recipient_is_recorded_on_its_delivery(ws, smtp_server):
    customers(ws, [("x", "refused@example.test", {}), ("y", "y@example.test", {})])
    report = send(ws, sendable_campaign(ws, "<p>Hi</p>", subject="S"))
    assert (report.sent, report.failed) == (1, 1)
    with scopes_disabled():
        delivery = Delivery.objects.get(customer__external_id="x")
    assert delivery.status == Delivery.Status.FAILED
    assert "550" in delivery.error and "No such mailbox" in delivery.error


def test_unreachable_smtp_keeps_deliveries_queued_for_the_next_run(ws, smtp_server, settings):
    customers(ws, [("x", "x@example.test", {})])
    campaign = sendable_campaign(ws, "<p>Hi</p>", subject="S")
    real_port, settings.EMAIL_PORT = settings.EMAIL_PORT, free_port()  # nothing listens
    with pytest.raises(SmtpUnavailable, match="cannot be reached"):
        send(ws, campaign)
    with scopes_disabled():
        assert Delivery.objects.get().status == Delivery.Status.QUEUED
    settings.EMAIL_PORT = real_port
    assert send(ws, campaign).sent == 1
    assert len(smtp_server.envelopes) == 1


def test_a_template_sees_the_customers_address_external_id_and_attributes():
    """README "Sending and tracking": attributes by name or under `customer`, and
    `customer.email` and `customer.id` (the workspace's own id for them, never ours)."""
    from campaigns.models import Customer
    from campaigns.personalise import customer_context, render

    ann = Customer(external_id="crm-42", email="ann@example.com", attributes={"first_name": "Ann"})
    source = (
        "{{ customer.id }}|{{ customer.external_id }}|{{ customer.email }}|"
        "{{ first_name }}|{{ customer.first_name }}"
    )
    assert render(source, customer_context(ann), html_mode=False) == (
        "crm-42|crm-42|ann@example.com|Ann|Ann"
    )
