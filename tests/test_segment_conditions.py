"""Segment condition kinds: every kind (attribute, received, clicked, opened, unsubscribed,
signed up within N days), negated and combined with all / any, gives exactly the
customers a brute-force Python filter picks from the hand-built rows; the builder saves
what it shows and its live count agrees; engagement segments are counted live on the
click map, exactly; another workspace's segments answer 404."""

import itertools
import random
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone
from django_scopes import scope, scopes_disabled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.models import Campaign, Customer, Delivery, Role, Segment
from campaigns.segments import SegmentRuleError, rule_q, segment_customers
from clickmap import segment_rollups
from clickmap.models import SegmentMember
from clickmap.rollups import aggregate
from tests.factories import customers, sendable_campaign
from tests.rollup_world import T0, links_of
from tests.test_rollups import check_exact
from tests.test_segment_rollups import segment_scopes
from tracking.models import ClickEvent, EventChange, OpenEvent

HTML = "<p><a href='https://shop.example/a'>A</a> <a href='https://shop.example/b'>B</a></p>"


@dataclass
class Person:
    """What the test itself knows about one customer (never read back from the app)."""

    pk: int
    attributes: dict
    age_days: int
    unsubscribed: bool
    received: set = field(default_factory=set)  # campaign ids with a sent delivery
    clicked: dict = field(default_factory=dict)  # campaign id -> {reliable flags}
    opened: dict = field(default_factory=dict)


@pytest.fixture
def town(make_workspace):
    """Twelve customers, two campaigns, deliveries in several states, clicks and opens
    reliable and not; every fact also recorded in plain Python."""
    rng = random.Random(18)
    workspace = make_workspace("Town")
    rows = [
        (f"t{i}", f"t{i}@example.test", {"country": "DE" if i % 3 else "FR", "age": 20 + 3 * i})
        for i in range(12)
    ]
    people = customers(workspace, rows)
    spring = sendable_campaign(workspace, HTML, name="Spring")
    autumn = sendable_campaign(workspace, HTML, name="Autumn")
    facts = {}
    now = timezone.now()
    with scope(workspace=workspace):
        for i, c in enumerate(people):
            age_days = [0, 3, 10, 40][i % 4]
            unsubscribed = i in (2, 7)
            Customer.objects.filter(pk=c.pk).update(
                created_at=now - timedelta(days=age_days, hours=1),
                unsubscribed_at=now if unsubscribed else None,
            )
            facts[c.pk] = Person(c.pk, rows[i][2], age_days, unsubscribed)
        for campaign in (spring, autumn):
            variant = campaign.nodes.get().variants.get()
            for c in people:
                status = rng.choice(["sent", "sent", "failed", "queued", None])
                if status is None:
                    continue
                d = Delivery.objects.create(
                    workspace=workspace,
                    node=variant.node,
                    variant=variant,
                    customer=c,
                    template_version=variant.template_version,
                    status=status,
                    sent_at=T0,
                )
                person = facts[c.pk]
                if status == "sent":
                    person.received.add(campaign.pk)
                    link = links_of(d)[0]
                    for _ in range(rng.choice([0, 0, 1, 2])):
                        reliable = rng.random() < 0.6
                        ClickEvent.objects.create(
                            event_id=uuid.uuid4(),
                            workspace=workspace,
                            delivery=d,
                            link=link,
                            url=link.href,
                            at=T0 + timedelta(minutes=5),
                            reliable=reliable,
                        )
                        EventChange.objects.create(kind="c", delivery=d, link=link)
                        person.clicked.setdefault(campaign.pk, set()).add(reliable)
                    for _ in range(rng.choice([0, 1])):
                        reliable = rng.random() < 0.7
                        OpenEvent.objects.create(
                            event_id=uuid.uuid4(),
                            workspace=workspace,
                            delivery=d,
                            at=T0 + timedelta(minutes=1),
                            reliable=reliable,
                        )
                        EventChange.objects.create(kind="o", delivery=d)
                        person.opened.setdefault(campaign.pk, set()).add(reliable)
    return workspace, spring, autumn, facts


def holds(person: Person, c: dict) -> bool:
    """The brute force: one condition on one person, from the test's own facts."""
    kind = c.get("kind", "attribute")
    if kind == "attribute":
        value = person.attributes.get(c["attribute"])
        result = {
            "eq": lambda: value == c["value"],
            "ne": lambda: value != c["value"],
            "gt": lambda: value is not None and value > c["value"],
            "gte": lambda: value is not None and value >= c["value"],
            "lt": lambda: value is not None and value < c["value"],
            "lte": lambda: value is not None and value <= c["value"],
            "in": lambda: value in c["value"],
            # "contains" ignores case, as a marketer typing "de" expects to find "DE".
            "contains": lambda: value is not None and c["value"].lower() in str(value).lower(),
        }[c["op"]]()
    elif kind == "received":
        result = c["campaign"] in person.received
    elif kind in ("clicked", "opened"):
        reliable_only = c.get("reliable", True)
        flags = set(person.clicked.get(c["campaign"], set()))
        if kind == "opened":  # a click implies an open
            flags |= person.opened.get(c["campaign"], set())
        result = (True in flags) if reliable_only else bool(flags)
    elif kind == "unsubscribed":
        result = person.unsubscribed
    elif kind == "signed_up_within":
        result = person.age_days < c["days"]
    return not result if c.get("negate") else result


def brute(facts, rule) -> set[int]:
    match, conditions = ("any", rule["conditions"]) if isinstance(rule, dict) else ("all", rule)
    combine = any if match == "any" else all
    return {pk for pk, p in facts.items() if combine(holds(p, c) for c in conditions)}


def conditions(spring, autumn):
    s, a = spring.pk, autumn.pk
    return [
        {"attribute": "country", "op": "eq", "value": "DE"},
        # Ages are 20, 23, 26 … 53: each bound is someone's age, so > and ≥ differ.
        {"kind": "attribute", "attribute": "age", "op": "gt", "value": 35},
        {"kind": "attribute", "attribute": "age", "op": "gte", "value": 35},
        {"kind": "attribute", "attribute": "age", "op": "lt", "value": 26},
        {"kind": "attribute", "attribute": "age", "op": "lte", "value": 26},
        {"kind": "attribute", "attribute": "country", "op": "ne", "value": "DE"},
        {"kind": "attribute", "attribute": "country", "op": "contains", "value": "d"},
        {"kind": "attribute", "attribute": "country", "op": "in", "value": ["FR", "IT"]},
        {"kind": "received", "campaign": s},
        {"kind": "received", "campaign": a, "negate": True},
        {"kind": "clicked", "campaign": s},
        {"kind": "clicked", "campaign": s, "reliable": False},
        {"kind": "clicked", "campaign": a, "negate": True},
        {"kind": "opened", "campaign": s},
        {"kind": "opened", "campaign": a, "reliable": False},
        {"kind": "unsubscribed"},
        {"kind": "unsubscribed", "negate": True},
        {"kind": "signed_up_within", "days": 1},
        # Customers signed up 3 days and an hour ago: out at 3 days, in at 4.
        {"kind": "signed_up_within", "days": 3},
        {"kind": "signed_up_within", "days": 4},
        {"kind": "signed_up_within", "days": 30},
    ]


def members(workspace, rule) -> set[int]:
    with scope(workspace=workspace):
        return set(Customer.objects.filter(rule_q(rule)).values_list("pk", flat=True))


def test_each_condition_kind_picks_exactly_the_brute_force_customers(town):
    workspace, spring, autumn, facts = town
    for condition in conditions(spring, autumn):
        want = brute(facts, [condition])
        assert members(workspace, [condition]) == want, condition
    # The fixture is not degenerate: the engagement kinds split the customers.
    for kind in ("received", "clicked", "opened"):
        got = brute(facts, [{"kind": kind, "campaign": spring.pk, "reliable": False}])
        assert 0 < len(got) < len(facts), kind
    reliable = brute(facts, [{"kind": "clicked", "campaign": spring.pk}])
    every = brute(facts, [{"kind": "clicked", "campaign": spring.pk, "reliable": False}])
    assert reliable < every  # some clicked only as a scanner


def test_combinations_all_and_any_match_the_brute_force(town):
    workspace, spring, autumn, facts = town
    pool = conditions(spring, autumn)
    rng = random.Random(7)
    for size in (2, 3):
        for combo in rng.sample(list(itertools.combinations(pool, size)), 25):
            for rule in (list(combo), {"match": "any", "conditions": list(combo)}):
                assert members(workspace, rule) == brute(facts, rule), rule


def test_a_rule_naming_an_unknown_kind_or_bad_input_is_refused(town):
    workspace, spring, *_ = town
    with scope(workspace=workspace):
        for bad in (
            [{"kind": "teleported"}],
            [{"kind": "clicked"}],
            [{"kind": "signed_up_within", "days": 0}],
            [{"kind": "signed_up_within", "days": "soon"}],
            [{"attribute": "bad name", "op": "eq", "value": 1}],
            {"match": "some", "conditions": [{"kind": "unsubscribed"}]},
        ):
            with pytest.raises(SegmentRuleError):
                rule_q(bad)


def test_engagement_segments_keep_no_rollups_and_the_click_map_counts_them_live_exactly(world):
    """An engagement segment on the click map: its members are the customers the test
    clicked for, by hand; it is never 'current', keeps no members, and every number of
    every segment scope equals the brute force."""
    with scopes_disabled():
        d = world.deliveries  # [c0 node 1, c0 node 2, c1 node 1, …]
        for delivery, reliable in ((d[0], True), (d[4], False), (d[6], True)):
            link = links_of(delivery)[0]
            ClickEvent.objects.create(
                event_id=uuid.uuid4(),
                workspace=world.workspace,
                delivery=delivery,
                link=link,
                url=link.href,
                at=T0 + timedelta(minutes=3),
                reliable=reliable,
            )
            EventChange.objects.create(kind="c", delivery=delivery, link=link)
        world.segment.rule = [{"kind": "clicked", "campaign": world.campaign.pk}]
        world.segment.save()
        aggregate()
    with scope(workspace=world.workspace):
        hand = {d[0].customer_id, d[6].customer_id}  # the reliable clickers
        assert set(segment_customers(world.segment).values_list("pk", flat=True)) == hand
        assert not segment_rollups.current(world.segment)
    with scopes_disabled():
        assert not SegmentMember.objects.filter(segment=world.segment).exists()
        check_exact(world, segment_scopes(world))
    # Back to an attribute rule: its rollups are built again and stand for it.
    with scopes_disabled():
        world.segment.rule = [{"attribute": "tier", "op": "eq", "value": 1}]
        world.segment.save()
        aggregate()
        assert segment_rollups.current(world.segment)
        assert SegmentMember.objects.filter(segment=world.segment).count() == 3
        check_exact(world, segment_scopes(world))


def builder_post(name, rows, match="all", action="save"):
    data = {"name": name, "match": match, "action": action}
    for n, row in enumerate(rows):
        data.update({f"c-{n}-{key}": value for key, value in row.items()})
    return data


def test_the_builder_saves_the_rule_and_its_live_count_is_the_brute_force(town, client_for):
    workspace, spring, autumn, facts = town
    with scopes_disabled():
        owner = workspace.memberships.get().user
    client = client_for(owner)
    base = f"/w/{workspace.slug}/segments/"
    rows = [
        {"kind": "attribute", "attribute": "country", "op": "eq", "value": "DE"},
        {"kind": "clicked", "campaign": str(spring.pk), "reliable": "1"},
        {"kind": "unsubscribed", "negate": "1"},
    ]
    expected_rule = [
        {"kind": "attribute", "attribute": "country", "op": "eq", "value": "DE"},
        {"kind": "clicked", "campaign": spring.pk, "reliable": True},
        {"kind": "unsubscribed", "negate": True},
    ]
    want = len(brute(facts, expected_rule))
    # The live preview while editing (htmx GET of the form's fields).
    preview = client.get(base + "preview/", builder_post("x", rows))
    assert preview.status_code == 200
    assert f'data-count="{want}"'.encode() in preview.content
    # Typed values: "35" compares as a number.
    age = client.get(
        base + "preview/",
        builder_post("x", [{"kind": "attribute", "attribute": "age", "op": "gt", "value": "35"}]),
    )
    older = len([p for p in facts.values() if p.attributes["age"] > 35])
    assert f'data-count="{older}"'.encode() in age.content
    # Add a row, then save.
    added = client.post(base + "new/", builder_post("Engaged Germans", rows, action="add"))
    assert added.status_code == 200 and b'name="c-3-kind"' in added.content
    saved = client.post(base + "new/", builder_post("Engaged Germans", rows))
    assert saved.status_code == 302
    with scopes_disabled():
        segment = Segment.objects.get(name="Engaged Germans")
    assert segment.rule == expected_rule
    page = client.get(saved["Location"])
    assert f'data-count="{want}"'.encode() in page.content
    listing = client.get(base)
    assert b"Engaged Germans" in listing.content
    # An incomplete condition is reported, nothing saved.
    bad = client.post(base + "new/", builder_post("Bad", [{"kind": "clicked", "campaign": ""}]))
    assert bad.status_code == 400 and b"Choose a campaign" in bad.content
    with scopes_disabled():
        assert not Segment.objects.filter(name="Bad").exists()


def test_a_segment_in_use_by_an_unsent_campaign_cannot_be_deleted(town, client_for):
    workspace, spring, *_ = town
    with scopes_disabled():
        owner = workspace.memberships.get().user
        segment = Segment.objects.create(
            workspace=workspace, name="S", rule=[{"kind": "unsubscribed"}]
        )
        Campaign.objects.filter(pk=spring.pk).update(segment=segment)
    client = client_for(owner)
    url = f"/w/{workspace.slug}/segments/{segment.pk}/delete/"
    client.post(url)
    with scopes_disabled():
        assert Segment.objects.filter(pk=segment.pk).exists()
        Campaign.objects.filter(pk=spring.pk).update(status=Campaign.Status.SENT)
    client.post(url)
    with scopes_disabled():
        assert not Segment.objects.filter(pk=segment.pk).exists()


def test_another_workspaces_segment_and_campaign_answer_404(
    town, make_workspace, client_for, add_member
):
    workspace, spring, *_ = town
    other = make_workspace("Other")
    with scopes_disabled():
        secret = Segment.objects.create(
            workspace=workspace, name="Secret", rule=[{"kind": "unsubscribed"}]
        )
        outsider = other.memberships.get().user
    client = client_for(outsider)
    base = f"/w/{other.slug}/segments/"
    assert client.get(f"{base}{secret.pk}/").status_code == 404
    assert client.post(f"{base}{secret.pk}/delete/").status_code == 404
    assert client.get(f"{base}preview/?segment={secret.pk}").status_code == 404
    assert client.get(f"/w/{workspace.slug}/segments/").status_code == 404
    # A campaign of another workspace in a rule is refused by the builder.
    response = client.post(
        base + "new/",
        builder_post("Spy", [{"kind": "received", "campaign": str(spring.pk)}]),
    )
    assert response.status_code == 400
    with scopes_disabled():
        assert not Segment.objects.filter(name="Spy").exists()
    viewer = add_member(workspace, Role.VIEWER)
    assert (
        client_for(viewer)
        .post(f"/w/{workspace.slug}/segments/new/", builder_post("V", []))
        .status_code
        == 403
    )


def test_the_click_map_page_narrowed_to_an_engagement_segment_is_the_recount(demo, client):
    """The demo's Black Friday map, narrowed to "clicked the newsletter and still
    subscribed": the members are a plain recount of raw clicks, and every number on the
    page is the raw-click recount of them."""
    from tests.clickmap_truth import recount
    from tests.demo_world import page_url, variant_named
    from tests.test_clickmap_page import assert_page_is_the_recount

    workspace, campaign, _ = demo
    with scopes_disabled():
        newsletter = Campaign.objects.get(workspace=workspace, name="November newsletter")
        segment = Segment.objects.create(
            workspace=workspace,
            name="Newsletter clickers",
            rule=[
                {"kind": "clicked", "campaign": newsletter.pk},
                {"kind": "unsubscribed", "negate": True},
            ],
        )
        campaign_of = dict(Delivery.objects.values_list("pk", "node__campaign_id"))
        customer_of = dict(Delivery.objects.values_list("pk", "customer_id"))
        unsubscribed = set(
            Customer.objects.filter(unsubscribed_at__isnull=False).values_list("pk", flat=True)
        )
        hand = {
            customer_of[e.delivery_id]
            for e in ClickEvent.objects.filter(workspace=workspace)
            if e.reliable and campaign_of[e.delivery_id] == newsletter.pk
        } - unsubscribed
        assert hand and set(segment_customers(segment).values_list("pk", flat=True)) == hand
    # The variant whose map has clickers in the segment (the demo's clicks are random).
    for name in ("A", "B"):
        variant = variant_named(campaign, name)
        with scopes_disabled():
            truth = recount([variant.pk], segment=segment)
        if truth.clickers:
            break
    assert truth.clickers, "the segment has Black Friday clickers"
    query = {"segment": segment.pk, "variant": variant.pk}
    html = client.get(page_url(workspace, campaign), query).content.decode()
    assert f'<option value="{segment.pk}" selected>' in html
    assert_page_is_the_recount(html, truth)


def test_typed_values_become_numbers_booleans_and_lists_but_postcodes_stay_text():
    from campaigns.segment_builder import typed_value

    assert typed_value("35", "gt") == 35 and typed_value("-2.5", "lt") == -2.5
    assert typed_value("0", "eq") == 0 and typed_value("true", "eq") is True
    assert typed_value("01234", "eq") == "01234" and typed_value("DE", "eq") == "DE"
    assert typed_value("DE, FR ,3", "in") == ["DE", "FR", 3]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_rule_of_any_kinds_negated_and_combined_matches_the_brute_force(town, data):
    workspace, spring, autumn, facts = town
    pool = conditions(spring, autumn)
    chosen = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
    flips = data.draw(st.lists(st.booleans(), min_size=len(chosen), max_size=len(chosen)))
    rule_conditions = [
        {**c, "negate": not c.get("negate", False)} if flip else c
        for c, flip in zip(chosen, flips, strict=True)
    ]
    match = data.draw(st.sampled_from(["all", "any"]))
    rule = rule_conditions if match == "all" else {"match": "any", "conditions": rule_conditions}
    assert members(workspace, rule) == brute(facts, rule)
