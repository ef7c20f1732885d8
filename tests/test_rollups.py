"""Rollups are exact: for random event streams — repeats, bots, variants, versions,
formats, devices, late and reclassified events, window mode — every metric for every
scope equals a brute-force recomputation in plain Python from the raw events."""

import uuid
from collections import defaultdict
from datetime import UTC, timedelta

from django.utils import timezone
from django_scopes import scopes_disabled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.models import Customer, Delivery
from campaigns.segments import segment_customers
from clickmap import metrics
from clickmap.models import (
    LinkRollup,
    PairDayRollup,
    PairRollup,
    RecipientDayRollup,
    RecipientRollup,
)
from clickmap.rollups import aggregate, recompute
from tests.rollup_world import DEVICES, T0, links_of
from tracking.models import ClickEvent, EventChange, OpenEvent

# Skewed towards a few deliveries, links and hours, so pairs repeat within the window.
event_plan = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 3), st.integers(0, 11)),  # delivery index
        st.one_of(st.integers(0, 1), st.integers(0, 5)),  # link (modulo the delivery's)
        st.one_of(  # seconds after T0: around the window edges, or anywhere in four days
            st.sampled_from([0, 1800, 3599, 3600, 5400, 7200, 86399, 86400, 90000]),
            st.integers(0, 4 * 86400),
        ),
        st.booleans(),  # reliable
        st.sampled_from(DEVICES),
        st.integers(0, 3),  # ingestion batch: late events land in later batches
        st.booleans(),  # is an open rather than a click
    ),
    max_size=60,
)


def store(world, plan, batches_to_aggregate, reclassify):
    """Insert the planned events batch by batch, aggregating in between."""
    for batch in range(4):
        for d_index, l_index, seconds, reliable, device, b, is_open in plan:
            if b != batch:
                continue
            delivery = world.deliveries[d_index]
            at = T0 + timedelta(seconds=seconds)
            common = dict(
                event_id=uuid.uuid4(),
                workspace=world.workspace,
                delivery=delivery,
                at=at,
                reliable=reliable,
                device=device,
            )
            if is_open:
                OpenEvent.objects.create(**common)
                EventChange.objects.create(kind="o", delivery=delivery)
            else:
                candidates = links_of(delivery)
                link = candidates[l_index % len(candidates)]
                ClickEvent.objects.create(link=link, url=link.href, **common)
                EventChange.objects.create(kind="c", delivery=delivery, link=link)
        if batch in batches_to_aggregate:
            aggregate(batch_size=7)  # small batches: many transactions
    for event in ClickEvent.objects.order_by("id")[:reclassify]:
        event.reliable = not event.reliable
        event.save()
        EventChange.objects.create(kind="c", delivery=event.delivery, link=event.link)
    aggregate(batch_size=7)


def brute(world, scope):
    """Every metric from the raw events in plain Python, following PRODUCT.md."""
    variant_ids = {v.pk for v in metrics.variants(scope)}
    deliveries = {d.pk: d for d in Delivery.objects.filter(variant_id__in=variant_ids)}
    allowed = set(c.pk for c in world.customers)
    if scope.customer_id:
        allowed = {scope.customer_id}
    if scope.segment:  # the segment's members now, by its rule evaluated live
        allowed &= set(
            segment_customers(scope.segment)
            .filter(workspace=world.workspace)
            .values_list("pk", flat=True)
        )
    deliveries = {k: d for k, d in deliveries.items() if d.customer_id in allowed}
    x_rel = scope.reliable_only
    window = world.workspace.unique_window_hours

    def in_period(event):
        day = event.at.date()
        return (
            (scope.date_from is None or day >= scope.date_from)
            and (scope.date_to is None or day <= scope.date_to)
            and (scope.device is None or event.device == scope.device)
        )

    clicks = [e for e in ClickEvent.objects.order_by("at", "id") if e.delivery_id in deliveries]
    counted = set()
    if window:  # chains per (node, link, customer) over all the pair's events
        chains = defaultdict(list)
        for e in clicks:
            if e.reliable or not x_rel:
                chains[
                    (
                        deliveries[e.delivery_id].node_id,
                        e.link_id,
                        deliveries[e.delivery_id].customer_id,
                    )
                ].append(e)
        for chain in chains.values():
            last = None
            for e in chain:
                if last is None or e.at >= last + timedelta(hours=window):
                    counted.add(e.pk)
                    last = e.at
    chosen = [e for e in clicks if in_period(e) and (e.reliable or not x_rel)]
    per_link = defaultdict(lambda: [0, set(), 0])
    for e in chosen:
        row = per_link[e.link_id]
        row[0] += 1
        row[1].add(deliveries[e.delivery_id].customer_id)
        row[2] += e.pk in counted
    counts = {
        link: (total, window_count if window else len(who))
        for link, (total, who, window_count) in per_link.items()
    }
    delivered = {d.customer_id for d in deliveries.values() if d.status in ("sent", "delivered")}
    opens = [o for o in OpenEvent.objects.all() if o.delivery_id in deliveries and in_period(o)]
    openers = {deliveries[o.delivery_id].customer_id for o in opens}
    human = {deliveries[o.delivery_id].customer_id for o in opens if o.reliable}
    clickers = {deliveries[e.delivery_id].customer_id for e in chosen}
    per_day = defaultdict(int)
    for e in chosen:
        per_day[e.at.astimezone(UTC).date()] += 1
    return counts, {
        "per_day": sorted(per_day.items()),
        "sent": len({d.customer_id for d in deliveries.values() if d.status in metrics.SENT}),
        "delivered": len(delivered),
        "clickers": len(clickers),
        "unique_opens": len(human if x_rel else openers),
        "machine_opens": len(openers - human),
    }


def scopes(world):
    ws, c = world.workspace, world.campaign
    day = (T0 + timedelta(days=1)).date()
    base = dict(workspace=ws, campaign_id=c.pk)
    yield from (
        metrics.Scope(**base),
        metrics.Scope(**base, reliable_only=True),
        metrics.Scope(**base, node_id=world.nodes[0].pk),
        metrics.Scope(**base, variant_id=world.variants[1].pk, reliable_only=True),
        metrics.Scope(**base, version_id=world.variants[0].template_version_id),
        metrics.Scope(**base, format="amp"),
        metrics.Scope(**base, date_from=day, date_to=day),
        metrics.Scope(**base, date_from=day, reliable_only=True, node_id=world.nodes[0].pk),
        metrics.Scope(**base, device="mobile"),
        # One email with a period and/or a device: answered from the day rows and spans.
        metrics.Scope(**base, node_id=world.nodes[0].pk, device="mobile"),
        metrics.Scope(**base, node_id=world.nodes[1].pk, date_from=day, date_to=day),
        metrics.Scope(**base, variant_id=world.variants[0].pk, date_to=day, device="desktop"),
        metrics.Scope(
            **base,
            node_id=world.nodes[0].pk,
            date_from=day,
            date_to=day + timedelta(days=2),
            device="tablet",
            reliable_only=True,
        ),
        metrics.Scope(**base, node_id=world.nodes[0].pk, date_from=day + timedelta(days=1)),
        metrics.Scope(**base, segment=world.segment),
        # A segment of one email: answered from the segment rollups.
        metrics.Scope(**base, node_id=world.nodes[0].pk, segment=world.segment),
        metrics.Scope(
            **base, variant_id=world.variants[1].pk, segment=world.segment, reliable_only=True
        ),
        metrics.Scope(**base, node_id=world.nodes[1].pk, segment=world.segment, date_from=day),
        metrics.Scope(**base, customer_id=world.customers[2].pk, reliable_only=True),
        metrics.Scope(workspace=ws, template_id=world.variants[0].template_version.template_id),
    )


def check_exact(world, chosen=None):
    for scope in chosen or scopes(world):
        counts, emails = brute(world, scope)
        got = {k: v for k, v in metrics.link_counts(scope).items() if v != (0, 0)}
        assert got == {k: v for k, v in counts.items() if v != (0, 0)}, scope
        per_day = emails.pop("per_day")
        assert [d for d in metrics.clicks_per_day(scope) if d[1]] == per_day, scope
        totals = metrics.email_totals(scope)
        assert {k: getattr(totals, k) for k in emails} == emails, scope


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=event_plan,
    window=st.sampled_from([0, 1, 24]),
    batches=st.sets(st.integers(0, 3)),
    reclassify=st.integers(0, 3),
)
def test_every_metric_for_every_scope_equals_a_brute_force_recount(
    world, plan, window, batches, reclassify
):
    with scopes_disabled():
        for model in (ClickEvent, OpenEvent, EventChange):
            model.objects.all().delete()
        world.workspace.unique_window_hours = window
        world.workspace.save()
        recompute()  # the window changed: start from nothing
        store(world, plan, batches, reclassify)
        assert not EventChange.objects.exists()
        check_exact(world)


def test_recompute_rebuilds_the_same_rollups(world):
    with scopes_disabled():
        plan = [
            (i % 12, i, i * 3600, i % 3 != 0, DEVICES[i % 4], i % 4, i % 5 == 0) for i in range(60)
        ]
        store(world, plan, {1, 3}, 2)
        before = sorted(
            LinkRollup.objects.values_list(
                "variant_id",
                "link_id",
                "total_all",
                "total_rel",
                "unique_all",
                "unique_rel",
                "window_all",
                "window_rel",
            )
        )
        days = PairDayRollup.objects.count()
        recompute()
        after = sorted(
            LinkRollup.objects.values_list(
                "variant_id",
                "link_id",
                "total_all",
                "total_rel",
                "unique_all",
                "unique_rel",
                "window_all",
                "window_rel",
            )
        )
        assert before == after and PairDayRollup.objects.count() == days
        assert sum(r[2] for r in after) == ClickEvent.objects.count()
        check_exact(world)


def test_deleting_a_customer_deletes_its_per_customer_rollups(world):
    # These tables have no database foreign keys (clickmap/models.py `_key`): Django's
    # collector deletes the rows with their customer, whatever deletes it.
    per_customer = (PairRollup, PairDayRollup, RecipientRollup, RecipientDayRollup)
    with scopes_disabled():
        plan = [(i % 12, i, i * 3600, True, DEVICES[i % 4], 0, i % 3 == 0) for i in range(36)]
        store(world, plan, {0}, 0)
        customers = list(dict.fromkeys(d.customer for d in world.deliveries))
        gone, also_gone, kept = customers[0], customers[1], customers[2]
        for model in per_customer:
            assert model.objects.filter(customer=gone).exists(), model
        kept_rows = [model.objects.filter(customer=kept).count() for model in per_customer]
        gone_ids = [gone.pk, also_gone.pk]
        gone.delete()
        check_exact(world)  # its clicks and opens left every counter, day row and span
        Customer.objects.filter(pk=also_gone.pk).delete()  # a queryset's, too
        check_exact(world)
        for model in per_customer:
            assert not model.objects.filter(customer_id__in=gone_ids).exists(), model
        assert [model.objects.filter(customer=kept).count() for model in per_customer] == (
            kept_rows
        )
        assert not PairDayRollup.objects.exclude(pair__in=PairRollup.objects.all()).exists()


def test_deleting_deliveries_takes_their_events_out_of_the_rollups(world):
    with scopes_disabled():
        plan = [(i % 12, i, i * 3600, i % 5 != 0, DEVICES[i % 4], 0, i % 3 == 0) for i in range(36)]
        store(world, plan, {0}, 0)
        clicked = list(
            Delivery.objects.filter(pk__in=ClickEvent.objects.values("delivery_id"))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        Delivery.objects.get(pk=clicked[0]).delete()
        check_exact(world)
        Delivery.objects.filter(pk__in=clicked[1:3]).delete()
        check_exact(world)
        assert not Delivery.objects.filter(pk__in=clicked[:3]).exists()


def test_a_workspace_deleted_with_its_customers_recounts_none_of_them(make_workspace, monkeypatch):
    from clickmap import rollups

    workspace = make_workspace()
    with scopes_disabled():
        customers = [
            Customer.objects.create(workspace=workspace, external_id=f"c{i}", email=f"c{i}@x.test")
            for i in range(3)
        ]
        ids = [c.pk for c in customers]
        taken_out = []  # the customers it is called for (a spy, not a stand-in)
        monkeypatch.setattr(rollups, "take_out", lambda **chosen: taken_out.append(chosen))
        customers[0].delete()  # a customer deleted alone is taken out of the rollups
        Customer.objects.filter(pk__in=ids[1:]).delete()  # a queryset's, in one go
        Customer.objects.create(workspace=workspace, external_id="last", email="l@x.test")
        workspace.delete()  # its workspace's rollups all go: nothing to recount
        assert taken_out == [{"customer_id__in": ids[:1]}, {"customer_id__in": ids[1:]}]
        assert not Customer.objects.filter(pk__in=ids).exists()


def test_applying_the_same_change_twice_adds_nothing(world):
    with scopes_disabled():
        delivery = world.deliveries[0]
        link = links_of(delivery)[0]
        ClickEvent.objects.create(
            event_id=uuid.uuid4(),
            workspace=world.workspace,
            delivery=delivery,
            link=link,
            url=link.href,
            at=timezone.now(),
            device="desktop",
        )
        for _ in range(3):
            EventChange.objects.create(kind="c", delivery=delivery, link=link)
            aggregate()
        rollup = LinkRollup.objects.get(link=link)
        assert (rollup.total_all, rollup.unique_all) == (1, 1)
        assert PairRollup.objects.get(link=link).total_all == 1


def test_window_mode_counts_a_repeat_only_after_the_window(world):
    with scopes_disabled():
        world.workspace.unique_window_hours = 1
        world.workspace.save()
        delivery = world.deliveries[0]
        link = links_of(delivery)[0]
        for minutes in (0, 30, 59, 60, 90, 200):  # counted: 0, 60, 200 (90 is within 60+1h)
            ClickEvent.objects.create(
                event_id=uuid.uuid4(),
                workspace=world.workspace,
                delivery=delivery,
                link=link,
                url=link.href,
                at=T0 + timedelta(minutes=minutes),
                device="desktop",
            )
        EventChange.objects.create(kind="c", delivery=delivery, link=link)
        aggregate()
        scope = metrics.Scope(workspace=world.workspace, variant_id=delivery.variant_id)
        assert metrics.link_counts(scope)[link.pk] == (6, 3)
        world.workspace.unique_window_hours = 0
        world.workspace.save()
        recompute()
        assert metrics.link_counts(scope)[link.pk] == (6, 1)
        check_exact(world)
