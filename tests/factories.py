"""Builders for campaigns ready to send (used by the sending and tracking tests)."""

from django_scopes import scope

from campaigns.models import Campaign, Customer, EmailNode, Variant
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
