"""Segment rollups (clickmap/segment_rollups.py) stay exact while members come and go:
customers' attributes change, members are added and removed, the rule is edited,
deliveries change status, and events keep arriving; every number of a segment's click
map then equals a brute-force recount over the segment's live members."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django_scopes import scopes_disabled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.models import Customer, Delivery
from campaigns.segments import segment_customers
from clickmap import metrics, segment_rollups
from clickmap.models import (
    MembershipChange,
    SegmentDeliveryCount,
    SegmentEmailRollup,
    SegmentEmailSpanRollup,
    SegmentLinkDayRollup,
    SegmentLinkRollup,
    SegmentLinkSpanRollup,
    SegmentMember,
)
from clickmap.rollups import AggregateReport, aggregate, apply_batch, recompute
from tests.rollup_world import DEVICES, T0, links_of
from tests.test_rollups import check_exact
from tracking.models import ClickEvent, EventChange, OpenEvent

SEGMENT_TABLES = (
    SegmentMember,
    SegmentLinkRollup,
    SegmentEmailRollup,
    SegmentLinkDayRollup,
    SegmentLinkSpanRollup,
    SegmentEmailSpanRollup,
    SegmentDeliveryCount,
)


def segment_scopes(world):
    base = dict(workspace=world.workspace, campaign_id=world.campaign.pk, segment=world.segment)
    day = (T0 + timedelta(days=1)).date()
    return [
        metrics.Scope(**base, node_id=world.nodes[0].pk),
        metrics.Scope(**base, node_id=world.nodes[0].pk, reliable_only=True),
        metrics.Scope(**base, node_id=world.nodes[1].pk),
        metrics.Scope(**base, variant_id=world.variants[1].pk),
        # A period and/or a device: the segment's day rows and spans.
        metrics.Scope(**base, node_id=world.nodes[0].pk, date_from=day),
        metrics.Scope(**base, node_id=world.nodes[1].pk, date_from=day, date_to=day),
        metrics.Scope(**base, node_id=world.nodes[0].pk, device="mobile", reliable_only=True),
        metrics.Scope(
            **base, variant_id=world.variants[0].pk, date_to=day + timedelta(days=1), device="bot"
        ),
        metrics.Scope(**base),  # both emails: a customer counts once
        metrics.Scope(**base, date_from=day),
    ]


def stored(model):
    """The table's rows, without counters that came back to zero (a rebuild has none)."""
    fields = [f.attname for f in model._meta.concrete_fields if f.attname != "id"]
    counters = [i for i, f in enumerate(model._meta.concrete_fields[1:]) if f.default == 0]
    return sorted(
        row
        for row in model.objects.values_list(*fields)
        if not counters or any(row[i] for i in counters)
    )


def check_segment_exact(world):
    """Numbers equal the brute force, answered from the rollups, which equal a rebuild."""
    assert segment_rollups.current(world.segment)
    members = set(
        segment_customers(world.segment)
        .filter(workspace=world.workspace)
        .values_list("pk", flat=True)
    )
    assert set(SegmentMember.objects.values_list("customer_id", flat=True)) == members
    check_exact(world, segment_scopes(world))
    before = {model: stored(model) for model in SEGMENT_TABLES}
    with transaction.atomic(), connection.cursor() as cursor:
        segment_rollups.rebuild(cursor)
    assert {model: stored(model) for model in SEGMENT_TABLES} == before


def click(world, delivery_index, link_index, seconds, reliable, device):
    delivery = world.deliveries[delivery_index]
    candidates = links_of(delivery)
    link = candidates[link_index % len(candidates)]
    ClickEvent.objects.create(
        event_id=uuid.uuid4(),
        workspace=world.workspace,
        delivery=delivery,
        link=link,
        url=link.href,
        at=T0 + timedelta(seconds=seconds),
        reliable=reliable,
        device=device,
    )
    EventChange.objects.create(
        kind="c", delivery=delivery, link=link, at=T0 + timedelta(seconds=seconds)
    )


def open_(world, delivery_index, seconds, reliable):
    delivery = world.deliveries[delivery_index]
    OpenEvent.objects.create(
        event_id=uuid.uuid4(),
        workspace=world.workspace,
        delivery=delivery,
        at=T0 + timedelta(seconds=seconds),
        reliable=reliable,
        device="desktop",
    )
    EventChange.objects.create(kind="o", delivery=delivery, at=T0 + timedelta(seconds=seconds))


operation = st.one_of(
    st.tuples(
        st.just("click"),
        st.integers(0, 11),
        st.integers(0, 3),
        st.integers(0, 3 * 86400),
        st.booleans(),
        st.sampled_from(DEVICES),
    ),
    st.tuples(st.just("open"), st.integers(0, 11), st.integers(0, 3 * 86400), st.booleans()),
    st.tuples(st.just("tier"), st.integers(0, 5), st.integers(0, 2)),
    st.tuples(st.just("add"), st.integers(0, 5)),
    st.tuples(st.just("remove"), st.integers(0, 5)),
    st.tuples(st.just("rule"), st.integers(0, 2)),
    st.tuples(st.just("status"), st.integers(0, 11), st.sampled_from(["sent", "bounced"])),
    st.tuples(st.just("aggregate")),
)


def run(world, op):
    kind, *args = op
    customers = world.customers
    if kind == "click":
        click(world, *args)
    elif kind == "open":
        open_(world, *args)
    elif kind == "tier":
        customer = customers[args[0]]
        customer.attributes = {**customer.attributes, "tier": args[1]}
        customer.save()
    elif kind == "add":
        world.segment.members.add(customers[args[0]])
    elif kind == "remove":
        world.segment.members.remove(customers[args[0]])
    elif kind == "rule":
        world.segment.rule = [{"attribute": "tier", "op": "eq", "value": args[0]}]
        world.segment.save()
    elif kind == "status":
        Delivery.objects.filter(pk=world.deliveries[args[0]].pk).update(status=args[1])
    else:
        aggregate(batch_size=5)


# Committed, not rolled back: each example's rebuild drops and creates the rollup tables
# (clickmap.rollups._swap_in_sql), whose locks and catalog changes would otherwise pile up
# in one transaction over every example.
@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operation, max_size=40), window=st.sampled_from([0, 24]))
def test_segment_numbers_stay_exact_while_members_change(world, monkeypatch, ops, window):
    # A rule change moving more than two members is applied over several transactions.
    monkeypatch.setattr(segment_rollups, "REFRESH_MEMBERS", 2)
    with scopes_disabled():
        for model in (ClickEvent, OpenEvent, EventChange):
            model.objects.all().delete()
        world.workspace.unique_window_hours = window
        world.workspace.save()
        recompute()
        for op in ops:
            run(world, op)
        aggregate(batch_size=5)
        assert not MembershipChange.objects.exists()
        check_segment_exact(world)


def test_a_new_or_edited_segment_is_counted_live_until_its_rollups_are_built(world):
    with scopes_disabled():
        for i in range(12):
            click(world, i, i, i * 3600, i % 3 != 0, DEVICES[i % 4])
        aggregate()
        scope = metrics.Scope(
            workspace=world.workspace, node_id=world.nodes[0].pk, segment=world.segment
        )
        assert segment_rollups.current(world.segment)
        world.segment.rule = [{"attribute": "tier", "op": "eq", "value": 0}]
        world.segment.save()
        assert not segment_rollups.current(world.segment)

        def numbers():
            counts = {k: v for k, v in metrics.link_counts(scope).items() if v != (0, 0)}
            return counts, metrics.email_totals(scope)

        live = numbers()
        check_exact(world, [scope])  # exact before the aggregator has run
        report = aggregate()
        assert report.memberships == 1 and segment_rollups.current(world.segment)
        assert numbers() == live
        check_segment_exact(world)


def test_a_segment_evaluated_whole_is_built_a_few_members_per_transaction(world, monkeypatch):
    """A segment's new rule moves its members a few per refresh transaction: between
    them its members and rollups agree, it is counted live, and batches that run in
    between (adding to the members already in) leave it exact once the last is in."""
    monkeypatch.setattr(segment_rollups, "REFRESH_MEMBERS", 2)
    with scopes_disabled():
        for i in range(12):
            click(world, i, i, i * 3600, i % 3 != 0, DEVICES[i % 4])
            open_(world, i, i * 1800, i % 2 == 0)
        aggregate()
        check_segment_exact(world)
        old = set(SegmentMember.objects.values_list("customer_id", flat=True))
        world.segment.rule = [{"attribute": "tier", "op": "eq", "value": 0}]
        world.segment.save()
        new = set(
            segment_customers(world.segment)
            .filter(workspace=world.workspace)
            .values_list("pk", flat=True)
        )
        assert len(old ^ new) == 6  # three leave, three join: three transactions
        members, moved = old, []
        while not segment_rollups.current(world.segment):
            assert segment_rollups._refresh_batch()
            now = set(SegmentMember.objects.values_list("customer_id", flat=True))
            moved.append(len(now ^ members))
            members = now
            # The segment's sums hold its members' rows and nothing else: taking the
            # members out leaves nothing.
            saved = transaction.savepoint()
            with connection.cursor() as cursor:
                segment_rollups._apply(cursor, [(world.segment.pk, c, -1) for c in members])
            assert not any(stored(model) for model in SEGMENT_TABLES)
            transaction.savepoint_rollback(saved)
            # A batch between two transactions, on customers in, out and on their way.
            click(world, len(moved) * 2, 1, 86400 + len(moved), True, "mobile")
            click(world, len(moved) * 2 + 1, 2, 86400 + len(moved), False, "desktop")
            report = AggregateReport()
            while apply_batch(100, report):
                pass
        assert moved == [2, 2, 2] and members == new
        assert not MembershipChange.objects.exists()
        check_segment_exact(world)


def test_delivery_writes_of_every_kind_follow_the_members(world):
    with scopes_disabled():
        aggregate()
        members = set(SegmentMember.objects.values_list("customer_id", flat=True))
        assert members == {c.pk for c in world.customers if c.attributes["tier"] == 1}
        Delivery.objects.filter(node=world.nodes[1]).update(status=Delivery.Status.DELIVERED)
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE campaigns_delivery SET status = 'failed' WHERE id = %s",
                [world.deliveries[1].pk],
            )
        Delivery.objects.filter(pk=world.deliveries[3].pk).delete()
        customer = world.customers[0]  # tier 0: joins as an explicit member
        world.segment.members.add(customer)
        aggregate()

        def brute():
            counts = {}
            who = set(
                segment_customers(world.segment)
                .filter(workspace=world.workspace)
                .values_list("pk", flat=True)
            )
            for d in Delivery.objects.filter(customer_id__in=who):
                key = (world.segment.pk, d.variant_id, d.status)
                counts[key] = counts.get(key, 0) + 1
            return counts

        def kept():
            return {
                (r.segment_id, r.variant_id, r.status): r.n
                for r in SegmentDeliveryCount.objects.all()
            }

        assert kept() == brute() and customer.pk in set(
            SegmentMember.objects.values_list("customer_id", flat=True)
        )
        Delivery.objects.filter(customer=world.customers[1]).delete()
        world.segment.members.remove(customer)
        aggregate()
        assert kept() == brute()


@pytest.mark.django_db(transaction=True)
def test_refresh_waits_for_delivery_writers_and_loses_nothing(world, monkeypatch):
    """A delivery written while members change is counted once: the refresh gives up on
    a writer that holds campaigns_delivery past its lock timeout and leaves its log."""
    monkeypatch.setattr(segment_rollups, "REFRESH_LOCK_TIMEOUT", "300ms")
    with scopes_disabled():
        aggregate()
        joining = world.customers[0]  # tier 0
        delivery = Delivery.objects.get(customer=joining, node=world.nodes[0])
        updated, release = threading.Event(), threading.Event()

        def writer():
            try:
                with scopes_disabled(), transaction.atomic():
                    Delivery.objects.filter(pk=delivery.pk).update(status="delivered")
                    updated.set()
                    release.wait(30)
            finally:
                connections.close_all()

        thread = threading.Thread(target=writer)
        thread.start()
        assert updated.wait(30)
        joining.attributes = {"tier": 1}
        joining.save()
        assert segment_rollups.refresh() == 0  # the writer holds the table: try later
        assert MembershipChange.objects.filter(customer_id=joining.pk).exists()
        release.set()
        thread.join()
        assert segment_rollups.refresh() == 1
        expected = Delivery.objects.filter(
            customer__in=segment_customers(world.segment).filter(workspace=world.workspace),
            variant=delivery.variant,
            status="delivered",
        ).count()
        row = SegmentDeliveryCount.objects.get(
            segment=world.segment, variant_id=delivery.variant_id, status="delivered"
        )
        assert row.n == expected >= 1
        check_segment_exact(world)


@pytest.mark.django_db(transaction=True)
def test_refresh_with_an_empty_log_waits_for_no_batch(world, monkeypatch):
    """Another run's batch holds the segment lock (shared) for seconds at scale; a refresh
    with nothing to apply must not wait for it (it would hold up its own run)."""
    monkeypatch.setattr(segment_rollups, "REFRESH_LOCK_TIMEOUT", "0")  # wait for ever
    with scopes_disabled():
        aggregate()
        assert not MembershipChange.objects.exists()
    batch_started, release = threading.Event(), threading.Event()

    def batch():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                segment_rollups.lock_for_batch(cursor)
                batch_started.set()
                release.wait(60)
        finally:
            connections.close_all()

    refreshed = []

    def refresh():
        try:
            refreshed.append(segment_rollups.refresh())
        finally:
            connections.close_all()

    holder, runner = threading.Thread(target=batch), threading.Thread(target=refresh)
    holder.start()
    try:
        assert batch_started.wait(30)
        runner.start()
        runner.join(30)
        assert refreshed == [0], "the refresh waited for the other run's batch"
    finally:
        release.set()
        holder.join()
        if runner.is_alive():
            runner.join()


def test_new_customers_join_and_a_deleted_segment_leaves_nothing(world):
    with scopes_disabled():
        aggregate()
        newcomer = Customer.objects.create(
            workspace=world.workspace,
            external_id="new",
            email="new@example.test",
            attributes={"tier": 1},
        )
        world.customers.append(newcomer)  # counted by the brute force too
        variant = world.variants[0]
        world.deliveries.append(
            Delivery.objects.create(
                workspace=world.workspace,
                node=variant.node,
                variant=variant,
                customer=newcomer,
                template_version=variant.template_version,
                format=variant.format,
                status="sent",
            )
        )
        click(world, len(world.deliveries) - 1, 0, 0, True, "mobile")
        aggregate()
        assert SegmentMember.objects.filter(customer=newcomer, segment=world.segment).exists()
        check_segment_exact(world)
        world.segment.delete()
        for model in SEGMENT_TABLES:
            assert not model.objects.exists(), model
        aggregate()  # the segment's log entries, if any, are for a segment that is gone
        assert not MembershipChange.objects.exists()
