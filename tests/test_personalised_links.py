"""A personalised href (a placeholder in the template) must render to an http(s) address
for the customer: customer data that makes it ``javascript:``, ``data:``, ``vbscript:``
(or anything else) fails that delivery, which is never sent. Links written literally,
mailto: and tel: included, are sent as before."""

import re

import pytest
from django_scopes import scope, scopes_disabled

from campaigns.models import Delivery
from campaigns.sending import send_campaign
from tests.factories import customers, sendable_campaign
from tracking.tokens import ClickToken, verify_token

TEMPLATE = """<html><body>
<p><a href="{{ customer.site }}">Your site</a></p>
<p><a href="https://shop.example/account?u={{ customer.id }}">Account</a></p>
<p><a href="mailto:help@shop.example">Write</a> <a href="tel:+4930123456">Call</a></p>
</body></html>"""

BAD_SITES = {
    "js": "javascript:alert(document.cookie)",
    "js-hidden": " JaVa\tScRiPt:alert(1)",  # a browser drops the tab and the space
    "data": "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbs": "vbscript:msgbox(1)",
    "relative": "//evil.example/phish",
    "empty": "",
}


@pytest.fixture
def ws(make_workspace):
    return make_workspace("Shop")


def test_a_personalised_href_that_is_not_http_fails_its_delivery_and_is_never_sent(ws, smtp_server):
    rows = [("ok", "ok@example.test", {"site": "https://ann.example/blog"})]
    rows += [(name, f"{name}@example.test", {"site": site}) for name, site in BAD_SITES.items()]
    customers(ws, rows)
    with scope(workspace=ws):
        report = send_campaign(sendable_campaign(ws, TEMPLATE, subject="Hi"))
    assert (report.sent, report.failed) == (1, len(BAD_SITES))

    assert [e.rcpt_tos for e in smtp_server.envelopes] == [["ok@example.test"]]
    with scopes_disabled():
        errors = dict(
            Delivery.objects.filter(status=Delivery.Status.FAILED).values_list(
                "customer__external_id", "error"
            )
        )
    assert set(errors) == set(BAD_SITES)
    for name, error in errors.items():
        assert "A personalised link renders to" in error, name
        assert "only http and https links are sent" in error, name
    assert (
        "a javascript: address" in errors["js"] and "a javascript: address" in errors["js-hidden"]
    )
    assert "a data: address" in errors["data"] and "a vbscript: address" in errors["vbs"]
    assert "an address without http(s)" in errors["relative"]
    assert "renders to nothing" in errors["empty"]

    # The one sent: its personalised link tracked to the customer's site, the literal
    # mailto: and tel: links as written.
    html = smtp_server.messages()[0].get_body(preferencelist=("html",)).get_content()
    destinations = {
        verify_token(token).url
        for token in re.findall(r'href="http://[^"]+/c/([^"]+)"', html)
        if isinstance(verify_token(token), ClickToken) and not verify_token(token).honeypot
    }
    assert "https://ann.example/blog" in destinations
    assert 'href="mailto:help@shop.example"' in html and 'href="tel:+4930123456"' in html
    assert "javascript" not in html.lower()


def test_literal_links_are_not_checked_per_customer(ws, smtp_server):
    # Written by the template's author, not filled from customer data: sent as today.
    customers(ws, [("a", "a@example.test", {})])
    html = '<p><a href="sms:+4930123456">Text us</a> <a href="/relative">Here</a></p>'
    with scope(workspace=ws):
        report = send_campaign(sendable_campaign(ws, html, subject="Hi"))
    assert (report.sent, report.failed) == (1, 0)
