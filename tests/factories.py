"""Builders for campaigns ready to send (used by the sending and tracking tests)."""

from datetime import timedelta

from django.utils import timezone
from django_scopes import scope

from campaigns.models import Campaign, Customer, Delivery, EmailNode, Variant
from campaigns.sending import plan_deliveries
from campaigns.services import template_create


def customers(workspace, rows):
    """Create customers from (external_id, email, attributes) rows."""
    with scope(workspace=workspace):
        return [
            Customer.objects.create(
                workspace=workspace, external_id=ext, email=mail, attributes=attrs
            )
            for ext, mail, attrs in rows
        ]


def sendable_campaign(
    workspace,
    html,
    *,
    subject="Hello {{ customer.first_name }}",
    variants=None,
    amp_html="",
    name="Test campaign",
):
    """A campaign with one node and its variants [(name, weight, html, format)]."""
    with scope(workspace=workspace):
        campaign = Campaign.objects.create(workspace=workspace, name=name)
        node = EmailNode.objects.create(campaign=campaign, name="Email", position=1)
        for variant_name, weight, variant_html, fmt in variants or [("A", 1, html, "html")]:
            version = template_create(
                workspace=workspace,
                name=f"{name} {variant_name}",
                html=variant_html,
                amp_html=amp_html if fmt == "amp" else "",
            )
            Variant.objects.create(
                node=node,
                name=variant_name,
                weight=weight,
                subject=subject,
                template_version=version,
                format=fmt,
            )
    return campaign


def sent_deliveries(workspace, html, rows, subject="S"):
    """A one-email campaign of `html` sent an hour ago to new customers from `rows`
    (as customers()): its deliveries, in order, their template versions loaded."""
    customers(workspace, rows)
    campaign = sendable_campaign(workspace, html, subject=subject)
    with scope(workspace=workspace):
        plan_deliveries(campaign.nodes.get())
        deliveries = list(Delivery.objects.select_related("template_version").order_by("pk"))
        for delivery in deliveries:
            delivery.status = Delivery.Status.SENT
            delivery.sent_at = timezone.now() - timedelta(hours=1)
            delivery.save()
    return deliveries
