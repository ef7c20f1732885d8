"""Test sends: a campaign's email mailed to a few given addresses before the real send.

A test message is never a Delivery, so nothing about it can reach a number: its links go
straight to their personalised destinations (no tracking redirect), it has no open pixel,
no honeypot and no List-Unsubscribe header, and its unsubscribe link leads to a page
saying it was a test. It is
marked as a test in its subject ("[Test] …") and in an X-Clickmap-Test header. It is
personalised with a real customer's attributes (the first of the audience, or one the
marketer names) so that it reads as a recipient will see it.
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.core.mail import get_connection
from django.core.validators import validate_email
from django.db.models import Q
from django.urls import reverse

from campaigns.models import Campaign, Customer, TestSend
from campaigns.sending import audience, compose_message

MAX_ADDRESSES = 20
SUBJECT_PREFIX = "[Test] "


def unsubscribe_page_url() -> str:
    """Where a test message's unsubscribe link leads: a page saying it was a test."""
    return settings.TRACKING_BASE_URL.rstrip("/") + reverse("test-unsubscribe")


class TestSendError(ValueError):
    """Bad addresses, no email to send, or no such customer: the message says which."""

    __test__ = False  # not a pytest test class


@dataclass
class TestSendReport:
    sent: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    __test__ = False


def parse_addresses(text: str) -> list[str]:
    """Addresses separated by commas, semicolons, spaces or lines; each checked, at most
    MAX_ADDRESSES, duplicates dropped (any case)."""
    found, seen, bad = [], set(), []
    for raw in text.replace(";", ",").replace("\n", ",").replace(" ", ",").split(","):
        address = raw.strip()
        if not address:
            continue
        try:
            validate_email(address)
        except Exception:
            bad.append(address)
            continue
        if address.casefold() not in seen:
            seen.add(address.casefold())
            found.append(address)
    if bad:
        raise TestSendError(f"Not an email address: {', '.join(bad[:5])}.")
    if not found:
        raise TestSendError("Give at least one address to send the test to.")
    if len(found) > MAX_ADDRESSES:
        raise TestSendError(f"A test goes to at most {MAX_ADDRESSES} addresses.")
    return found


def personalising_customer(campaign: Campaign, who: str = "") -> Customer | None:
    """The customer whose attributes personalise the test: the one with that email or
    external id when `who` is given, else the first of the campaign's audience."""
    if who.strip():
        customer = Customer.objects.filter(
            Q(email__iexact=who.strip()) | Q(external_id=who.strip())
        ).first()
        if customer is None:
            raise TestSendError(f"No customer {who.strip()!r} in this workspace.")
        return customer
    return audience(campaign).order_by("pk").first() or Customer.objects.order_by("pk").first()


def send_test(campaign: Campaign, addresses: list[str], *, customer=None, user=None) -> TestSend:
    """Mail each variant of each email of the campaign to every address, marked as a
    test; returns the TestSend record. One address's failure is that address's alone."""
    variants = [
        (node, variant)
        for node in campaign.nodes.order_by("position")
        for variant in node.variants.select_related("template_version").order_by("name")
    ]
    if not variants:
        raise TestSendError("Add an email variant before sending a test.")
    report = TestSendReport()
    smtp = get_connection()
    try:
        for node, variant in variants:
            for address in addresses:
                label = _label(campaign, node, variant, len(variants))
                try:
                    message = compose_message(
                        node=node,
                        variant=variant,
                        version=variant.template_version,
                        fmt=variant.format,
                        customer=customer,
                        to=address,
                        unsubscribe_url=unsubscribe_page_url(),
                        headers={"X-Clickmap-Test": label},
                        subject_prefix=SUBJECT_PREFIX,
                    )
                    message.connection = smtp
                    message.send()
                except Exception as error:  # this address (or render) only
                    report.errors.append(f"{address} ({label}): {type(error).__name__}: {error}")
                else:
                    report.sent.append(address)
    finally:
        smtp.close()
    return TestSend.objects.create(
        workspace_id=campaign.workspace_id,
        campaign=campaign,
        addresses=addresses,
        customer=customer,
        sent=len(report.sent),
        failed=len(report.errors),
        errors=report.errors[:20],
        sent_by=user,
    )


def _label(campaign, node, variant, how_many: int) -> str:
    if how_many == 1:
        return "yes"
    step = f"step {node.position}, " if campaign.kind == Campaign.Kind.SCENARIO else ""
    return f"{step}variant {variant.name}"
