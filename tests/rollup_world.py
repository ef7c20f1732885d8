"""The rollup tests' world: a scenario with two emails, A/B variants, an AMP variant,
six customers with deliveries, and a segment (a pytest plugin: see conftest.py)."""

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from django_scopes import scope as tenant_scope

from campaigns.models import Campaign, Delivery, EmailNode, Segment, Variant
from campaigns.services import template_create
from tests.factories import customers

HTML_A = """<p><a href="https://x.example/1">One</a> <a href="https://x.example/2">Two</a>
<a href="https://x.example/3">Three</a></p>"""
HTML_B = '<p><a href="https://x.example/1">One</a> <a href="https://x.example/9">Nine</a></p>'
AMP = '<p><a href="https://x.example/amp">Amp</a></p>'
DEVICES = ["desktop", "mobile", "tablet", "bot"]
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


@dataclass
class World:
    workspace: object
    campaign: Campaign
    nodes: list
    variants: list
    deliveries: list
    customers: list
    segment: Segment


@pytest.fixture
def world(make_workspace):
    workspace = make_workspace("Exact")
    people = customers(
        workspace, [(f"c{i}", f"c{i}@example.test", {"tier": i % 2}) for i in range(6)]
    )
    with tenant_scope(workspace=workspace):
        a = template_create(workspace=workspace, name="A", html=HTML_A, amp_html=AMP)
        b = template_create(workspace=workspace, name="B", html=HTML_B)
        campaign = Campaign.objects.create(
            workspace=workspace, name="Scenario", kind=Campaign.Kind.SCENARIO
        )
        first = EmailNode.objects.create(campaign=campaign, name="Day 1", position=1)
        second = EmailNode.objects.create(campaign=campaign, name="Day 3", position=2)
        variants = [
            Variant.objects.create(node=first, name="A", subject="s", template_version=a),
            Variant.objects.create(node=first, name="B", subject="s", template_version=b),
            Variant.objects.create(
                node=second, name="A", subject="s", template_version=a, format="amp"
            ),
        ]
        deliveries = []
        for i, person in enumerate(people):
            for node, variant in ((first, variants[i % 2]), (second, variants[2])):
                status = Delivery.Status.BOUNCED if i == 5 and node == first else "sent"
                deliveries.append(
                    Delivery.objects.create(
                        workspace=workspace,
                        node=node,
                        variant=variant,
                        customer=person,
                        template_version=variant.template_version,
                        format=variant.format,
                        status=status,
                        sent_at=T0,
                    )
                )
        segment = Segment.objects.create(
            workspace=workspace, name="Tier 1", rule=[{"attribute": "tier", "op": "eq", "value": 1}]
        )
    return World(workspace, campaign, [first, second], variants, deliveries, people, segment)


def links_of(delivery):
    return list(delivery.template_version.links.filter(format=delivery.format))
