"""Personalised links by destination domain: exact counts (urllib's host, clicks and
distinct customers), and a panel the click map loads after itself."""

import uuid
from collections import defaultdict
from datetime import timedelta
from urllib.parse import urlsplit

from django.urls import reverse
from django_scopes import scopes_disabled

from campaigns.models import Membership, TemplateLink
from clickmap import metrics
from tests.rollup_world import T0, links_of
from tracking.models import ClickEvent

# Each customer's own destination (a personalised link has one per delivery), with the
# traps urllib resolves: case, a port, user info, a query that looks like a host.
URLS = [
    "https://Shop.Example/p?u=0",
    "https://shop.example:8443/p?u=1",
    "https://user:pw@partner.example/p?u=2",
    "https://partner.example/p?next=https://evil.example/&u=3",
    "http://shop.example/p?u=4",
    "https://xn--bcher-kva.example/p?u=5",
]


def click_personalised(world):
    """Clicks on the first link of every delivery, each customer's own URL, repeated."""
    link_ids = set()
    for i, delivery in enumerate(world.deliveries):
        link = links_of(delivery)[0]
        link_ids.add(link.pk)
        for repeat in range(1 + i % 3):
            ClickEvent.objects.create(
                event_id=uuid.uuid4(),
                workspace=world.workspace,
                delivery=delivery,
                link=link,
                url=URLS[world.customers.index(delivery.customer)],
                at=T0 + timedelta(hours=i + repeat),
                reliable=repeat != 1,
                device="desktop",
            )
    return sorted(link_ids)


def brute(scope, link_ids, members=None):
    groups = defaultdict(lambda: [0, set()])
    variant_ids = set(scope.variant_ids)
    for e in ClickEvent.objects.filter(link_id__in=link_ids).select_related("delivery"):
        if members is not None and e.delivery.customer_id not in members:
            continue
        if e.delivery.variant_id in variant_ids and (e.reliable or not scope.reliable_only):
            group = groups[urlsplit(e.url).hostname]
            group[0] += 1
            group[1].add(e.delivery.customer_id)
    return sorted(
        ({"domain": d, "total": n, "unique": len(who)} for d, (n, who) in groups.items()),
        key=lambda g: (-g["total"], g["domain"]),
    )


def test_destination_domains_count_clicks_and_distinct_customers_per_host(world):
    with scopes_disabled():
        link_ids = click_personalised(world)
        base = dict(workspace=world.workspace, campaign_id=world.campaign.pk)
        for scope in (
            metrics.Scope(**base),  # both emails: a customer counts once per domain
            metrics.Scope(**base, reliable_only=True),
            metrics.Scope(**base, node_id=world.nodes[0].pk),
            metrics.Scope(**base, segment=world.segment),
        ):
            members = None
            if scope.segment:
                members = {c.pk for c in world.customers if c.attributes["tier"] == 1}
            assert metrics.destination_domains(scope, link_ids) == brute(
                scope, link_ids, members
            ), scope
        everyone = metrics.destination_domains(metrics.Scope(**base), link_ids)
        assert {g["domain"] for g in everyone} == {
            "shop.example",
            "partner.example",
            "xn--bcher-kva.example",
        }


def test_the_click_map_loads_the_destinations_panel_after_itself(world, client_for, make_user):
    with scopes_disabled():
        link_ids = click_personalised(world)
        owner = Membership.objects.filter(workspace=world.workspace).first().user
        node = world.nodes[0]
        page = reverse("clickmap:page", args=[world.workspace.slug, world.campaign.pk])
        panel = reverse("clickmap:destinations", args=[world.workspace.slug, world.campaign.pk])
    client = client_for(owner)
    query = {"node": node.pk}
    html = client.get(page, query, HTTP_HX_REQUEST="true").content.decode()
    assert panel not in html  # no personalised link: no panel
    with scopes_disabled():  # the shown version's (variant A's) first links: personalised
        shown = TemplateLink.objects.filter(
            version_id=world.variants[0].template_version_id, pk__in=link_ids
        )
        shown_ids = list(shown.values_list("pk", flat=True))
        shown.update(placeholder=True)
    html = client.get(page, query, HTTP_HX_REQUEST="true").content.decode()
    assert f'hx-get="{panel}?' in html and 'hx-trigger="load"' in html
    loaded = client.get(panel, query, HTTP_HX_REQUEST="true")
    assert loaded.status_code == 200
    body = loaded.content.decode()
    with scopes_disabled():
        want = metrics.destination_domains(
            metrics.Scope(workspace=world.workspace, node_id=node.pk), shown_ids
        )
    assert want
    for group in want:
        assert f"<td>{group['domain']}</td><td>{group['total']:,}</td>" in body
        assert f"<td>{group['unique']:,}</td></tr>" in body
    # Another workspace's member gets a 404, as for every view.
    stranger = client_for(make_user())
    assert stranger.get(panel, query).status_code == 404


def test_the_tracker_s_own_host_is_never_a_destination(world, client_for, settings):
    """An unsubscribe link is personalised ({{ unsubscribe_url }}) and leads to the
    tracker's own page: neither it nor any other click landing there is a destination."""
    settings.TRACKING_BASE_URL = "https://track.example.net"
    with scopes_disabled():
        delivery = world.deliveries[0]
        first, second = links_of(delivery)[:2]
        TemplateLink.objects.filter(pk=first.pk).update(placeholder=True, unsubscribe=True)
        TemplateLink.objects.filter(pk=second.pk).update(placeholder=True)
        for link, url in (
            (first, "https://track.example.net/u/token-1"),
            (second, "https://TRACK.example.net:443/c/elsewhere"),
            (second, "https://shop.example/p/1"),
        ):
            ClickEvent.objects.create(
                event_id=uuid.uuid4(),
                workspace=world.workspace,
                delivery=delivery,
                link=link,
                url=url,
                at=T0,
                device="desktop",
            )
        owner = Membership.objects.filter(workspace=world.workspace).first().user
        panel = reverse("clickmap:destinations", args=[world.workspace.slug, world.campaign.pk])
        scope = metrics.Scope(workspace=world.workspace, campaign_id=world.campaign.pk)
        assert metrics.destination_domains(scope, [first.pk, second.pk]) == [
            {"domain": "shop.example", "total": 1, "unique": 1}
        ]
    body = client_for(owner).get(panel, {"node": world.nodes[0].pk}).content.decode()
    assert "shop.example" in body and "track.example.net" not in body
