"""Rollups are exact: for random event streams — repeats, bots, variants, versions,
formats, devices, late and reclassified events, window mode — every figure of
docs/metrics.md for every scope (counts, rate, share, unique share, CTR, CTOR, opens with
clicks implying opens, who clicked, destinations) equals a brute-force recomputation in
plain Python from the raw events."""

import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, timedelta
from urllib.parse import urlsplit

import pytest
from django.db import transaction
from django.utils import timezone
from django_scopes import scope as tenant_scope
from django_scopes import scopes_disabled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.models import Customer, Delivery
from campaigns.segments import segment_customers
from clickmap import exports, metrics
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
            # As ingestion writes them, with the event's time; some rows without it, as a
            # writer that does not say leaves them (their pairs are recomputed).
            dated = at if seconds % 7 else None
            if is_open:
                OpenEvent.objects.create(**common)
                EventChange.objects.create(kind="o", delivery=delivery, at=dated)
            else:
                candidates = links_of(delivery)
                link = candidates[l_index % len(candidates)]
                ClickEvent.objects.create(link=link, url=link.href, **common)
                EventChange.objects.create(kind="c", delivery=delivery, link=link, at=dated)
        if batch in batches_to_aggregate:
            aggregate(batch_size=7)  # small batches: many transactions
    for event in ClickEvent.objects.order_by("id")[:reclassify]:
        event.reliable = not event.reliable
        event.save()
        EventChange.objects.create(kind="c", delivery=event.delivery, link=event.link, at=event.at)
    aggregate(batch_size=7)


def brute(world, scope):
    """Every figure of docs/metrics.md from the raw events in plain Python: per link
    {link: (total, unique, rate, share, unique share)} and the email's totals, plus the
    raw-click breakdowns (who clicked each link, destinations)."""
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

    def customer(event):
        return deliveries[event.delivery_id].customer_id

    def in_period(event):
        day = event.at.astimezone(UTC).date()
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
                chains[(deliveries[e.delivery_id].node_id, e.link_id, customer(e))].append(e)
        for chain in chains.values():
            last = None
            for e in chain:
                # counted: no counted click within the window before it; one exactly a
                # window after the last counted click is counted
                if last is None or e.at - last >= timedelta(hours=window):
                    counted.add(e.pk)
                    last = e.at
    chosen = [e for e in clicks if in_period(e) and (e.reliable or not x_rel)]
    per_link = defaultdict(lambda: [0, set(), 0])
    for e in chosen:
        row = per_link[e.link_id]
        row[0] += 1
        row[1].add(customer(e))
        row[2] += e.pk in counted
    counts = {
        link: (total, window_count if window else len(who))
        for link, (total, who, window_count) in per_link.items()
    }
    delivered = {d.customer_id for d in deliveries.values() if d.status in ("sent", "delivered")}
    opens = [o for o in OpenEvent.objects.all() if o.delivery_id in deliveries and in_period(o)]
    clicked = [e for e in clicks if in_period(e)]
    # A click implies an open: a clicker counts as an opener, a reliable click as a human
    # open, whether or not an open was recorded.
    openers = {customer(e) for e in opens + clicked}
    human = {customer(e) for e in opens + clicked if e.reliable}
    clickers = {customer(e) for e in chosen}
    per_day = defaultdict(int)
    for e in chosen:
        per_day[e.at.astimezone(UTC).date()] += 1
    all_total = sum(total for total, _ in counts.values())
    all_unique = sum(unique for _, unique in counts.values())

    def pct(part, whole):
        return 100 * part / whole if whole else 0.0

    figures = {
        link: (
            total,
            unique,
            pct(unique, len(delivered)),
            pct(total, all_total),
            pct(unique, all_unique),
        )
        for link, (total, unique) in counts.items()
    }
    unique_opens = len(human if x_rel else openers)
    return figures, {
        "per_day": sorted(per_day.items()),
        "sent": len({d.customer_id for d in deliveries.values() if d.status in metrics.SENT}),
        "delivered": len(delivered),
        "clickers": len(clickers),
        "unique_opens": unique_opens,
        "machine_opens": len(openers - human),
        "total_clicks": all_total,
        "ctr": pct(len(clickers), len(delivered)),
        "ctor": pct(len(clickers), unique_opens),
        # Raw-click breakdowns over every link of the scope at once.
        "who_clicked": _who_clicked(clicked, customer, x_rel),
        "destinations": _destinations([e for e in clicked if e.reliable or not x_rel], customer),
    }


def _who_clicked(events, customer, reliable_only):
    """metrics.link_clickers' rows: (customer, first, last, clicks, reliable clicks),
    most recent first; reliable-only keeps the customers with a reliable click."""
    rows = defaultdict(list)
    for e in events:
        rows[customer(e)].append(e)
    found = [
        (c, min(e.at for e in es), max(e.at for e in es), len(es), sum(e.reliable for e in es))
        for c, es in rows.items()
        if not reliable_only or any(e.reliable for e in es)
    ]
    return sorted(found, key=lambda r: (-r[2].timestamp(), r[0]))


def _destinations(events, customer):
    """metrics.destination_domains' rows: per destination host, clicks and customers."""
    groups = defaultdict(lambda: [0, set()])
    for e in events:
        group = groups[urlsplit(e.url).hostname]
        group[0] += 1
        group[1].add(customer(e))
    return sorted(
        ({"domain": d, "total": n, "unique": len(who)} for d, (n, who) in groups.items()),
        key=lambda g: (-g["total"], g["domain"]),
    )


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
    """Every figure of every scope (`chosen`, or `scopes(world)`) equals the brute force."""
    for scope in chosen or scopes(world):
        figures, emails = brute(world, scope)
        got = {k: v for k, v in metrics.link_counts(scope).items() if v != (0, 0)}
        assert got == {k: v[:2] for k, v in figures.items() if v[:2] != (0, 0)}, scope
        rows = metrics.link_metrics(scope)
        for row in rows:
            want = figures.get(row.link.pk, (0, 0, 0.0, 0.0, 0.0))
            have = (row.total, row.unique, row.rate, row.share, row.unique_share)
            assert have == pytest.approx(want, abs=1e-4), (scope, row.link.pk)
        assert [d for d in metrics.clicks_per_day(scope) if d[1]] == emails.pop("per_day"), scope
        who_clicked, destinations = emails.pop("who_clicked"), emails.pop("destinations")
        totals = metrics.email_totals(scope)
        assert {k: getattr(totals, k) for k in emails} == pytest.approx(emails, abs=1e-4), scope
        assert totals.ctor <= 100, scope  # a clicker is an opener
        every_link = [row.link.pk for row in rows]
        have = [
            (r["delivery__customer_id"], r["first"], r["last"], r["clicks"], r["reliable_clicks"])
            for r in metrics.link_clickers(scope, every_link)
        ]
        assert have == who_clicked, scope
        assert metrics.destination_domains(scope, every_link) == destinations, scope


# Committed, not rolled back: each example's rebuild drops and creates the rollup tables
# (clickmap.rollups._swap_in_sql), whose locks and catalog changes would otherwise pile up
# in one transaction over every example.
@pytest.mark.django_db(transaction=True)
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


def _event(world, model, customer: int, at, reliable=True, device="desktop", link=0, email=0):
    """An event of customer `customer` (world.customers index) on email `email` (0: the
    first node, 1: the second) with its change row, as ingestion stores it."""
    delivery = world.deliveries[2 * customer + email]
    common = dict(
        event_id=uuid.uuid4(),
        workspace=world.workspace,
        delivery=delivery,
        at=at,
        reliable=reliable,
        device=device,
    )
    if model is OpenEvent:
        OpenEvent.objects.create(**common)
        EventChange.objects.create(kind="o", delivery=delivery, at=at)
    else:
        chosen = links_of(delivery)[link]
        ClickEvent.objects.create(link=chosen, url=chosen.href, **common)
        EventChange.objects.create(kind="c", delivery=delivery, link=chosen, at=at)


def test_a_click_implies_an_open_in_every_scope(world):
    day = T0 + timedelta(days=1)  # the day of scopes()' periods
    with scopes_disabled():
        _event(world, ClickEvent, 0, day, device="mobile")  # clicked, no open recorded
        _event(world, ClickEvent, 1, T0, reliable=False)  # a scanner's click, no open
        _event(world, OpenEvent, 2, T0)
        _event(world, ClickEvent, 2, T0)
        _event(world, OpenEvent, 3, T0, reliable=False)  # a machine's open, no click
        _event(world, ClickEvent, 4, T0, email=1)  # the second email: clicked, no open
        aggregate()
        first = metrics.Scope(
            workspace=world.workspace, campaign_id=world.campaign.pk, node_id=world.nodes[0].pk
        )
        # Openers: c0, c1, c2, c3; human ones (a reliable open or click): c0, c2.
        totals = metrics.email_totals(first)
        assert (totals.clickers, totals.unique_opens, totals.machine_opens) == (3, 4, 2)
        assert totals.ctor == 75.0
        reliable = metrics.email_totals(replace(first, reliable_only=True))
        assert (reliable.clickers, reliable.unique_opens, reliable.ctor) == (2, 2, 100.0)
        on_the_day = metrics.email_totals(replace(first, date_from=day.date(), device="mobile"))
        assert (on_the_day.clickers, on_the_day.unique_opens) == (1, 1)
        alone = replace(first, customer_id=world.customers[0].pk)
        assert metrics.email_totals(alone).unique_opens == 1
        scenario = metrics.Scope(workspace=world.workspace, campaign_id=world.campaign.pk)
        assert metrics.email_totals(scenario).unique_opens == 5  # c4 on the second email
        check_exact(world)  # every scope, CTOR <= 100 in each
        check_exact(
            world,
            [
                replace(s, customer_id=c.pk)
                for s in scopes(world)
                for c in world.customers[:2]
                if not s.segment
            ],
        )


def test_a_repeat_exactly_a_window_after_the_counted_click_is_counted_one_a_moment_before_is_not(
    world,
):
    with scopes_disabled():
        world.workspace.unique_window_hours = 1
        world.workspace.save()
        hour = timedelta(hours=1)
        # Customer 0: counted at T0, not a moment before the window ends, counted at its end.
        for at in (T0, T0 + hour - timedelta(microseconds=1), T0 + hour):
            _event(world, ClickEvent, 0, at)
        # Customer 2: a repeat a second past the window, counted either way.
        for at in (T0, T0 + hour + timedelta(seconds=1)):
            _event(world, ClickEvent, 2, at)
        aggregate()
        link = links_of(world.deliveries[0])[0]
        scope = metrics.Scope(workspace=world.workspace, variant_id=world.variants[0].pk)
        assert metrics.link_counts(scope)[link.pk] == (5, 4)
        period = replace(scope, date_from=T0.date(), date_to=T0.date())
        assert metrics.link_counts(period)[link.pk] == (5, 4)
        check_exact(world)


def test_a_period_counts_its_last_day_in_every_raw_click_breakdown(world):
    last = T0.replace(hour=23, minute=59, second=59)  # the period's last day, late
    with scopes_disabled():
        _event(world, ClickEvent, 0, T0 - timedelta(days=1))  # the day before
        _event(world, ClickEvent, 0, last)
        _event(world, ClickEvent, 2, T0)
        _event(world, ClickEvent, 2, last, reliable=False)
        aggregate()
        link = links_of(world.deliveries[0])[0]
    scope = metrics.Scope(
        workspace=world.workspace,
        node_id=world.nodes[0].pk,
        date_from=T0.date() - timedelta(days=1),
        date_to=T0.date(),
    )
    with tenant_scope(workspace=world.workspace):
        assert metrics.email_totals(scope).clickers == 2
        who = {r["delivery__customer__email"]: r for r in metrics.link_clickers(scope, [link.pk])}
        assert {email: (r["clicks"], r["last"]) for email, r in who.items()} == {
            "c0@example.test": (2, last),
            "c2@example.test": (2, last),
        }
        assert metrics.destination_domains(scope, [link.pk]) == [
            {"domain": "x.example", "total": 4, "unique": 2}
        ]
        response = exports.clickers_csv_response(
            metrics.link_clickers(scope, [link.pk]), "clickers.csv", world.workspace
        )
        rows = b"".join(response.streaming_content).decode().splitlines()[1:]
        assert sorted(row.split(",")[0] for row in rows) == ["c0@example.test", "c2@example.test"]
        check_exact(world, [scope, replace(scope, date_from=T0.date(), reliable_only=True)])


def test_deleting_a_customer_applies_its_own_changes_and_leaves_the_others_in_the_log(world):
    with scopes_disabled():
        plan = [(i % 12, i, i * 3600, i % 4 != 0, DEVICES[i % 4], 0, i % 3 == 0) for i in range(36)]
        store(world, plan, {0}, 0)
        gone = world.customers[0]
        # Events still waiting for the aggregator: the deleted customer's and others'.
        _event(world, ClickEvent, 0, T0 + timedelta(hours=5))
        _event(world, ClickEvent, 2, T0 + timedelta(hours=5), device="mobile")
        _event(world, OpenEvent, 3, T0 + timedelta(days=1))
        _event(world, ClickEvent, 4, T0 + timedelta(days=2), reliable=False, email=1)
        others = set(
            EventChange.objects.exclude(delivery__customer=gone).values_list(
                "id", "kind", "delivery_id", "link_id"
            )
        )
        waiting = (
            set(ClickEvent.objects.filter(id__in=_newest(ClickEvent, 2))),
            set(OpenEvent.objects.filter(id__in=_newest(OpenEvent, 1))),
        )
        gone.delete()
        assert set(EventChange.objects.values_list("id", "kind", "delivery_id", "link_id")) == (
            others
        )
        # Without the waiting events, every number is a recount without the customer.
        with transaction.atomic():
            for events in waiting:
                for event in events:
                    event.delete()
            check_exact(world)
            transaction.set_rollback(True)
        aggregate()
        check_exact(world)


def _newest(model, n):
    return list(model.objects.order_by("-id").values_list("id", flat=True)[:n])


def test_in_order_events_take_the_fast_path_and_late_ones_in_the_same_batch_recompute(world):
    """Events after everything applied for their pair and recipient are applied from the
    stored state (clickmap/fast_path.py); a late one, an undated one and a reclassified
    one are recomputed, also when they share a batch (and a pair) with in-order ones. The
    numbers equal the brute force after every batch, in window mode (1 hour): a repeat
    exactly a window after the counted click is counted, one a moment before is not."""
    hour = timedelta(hours=1)
    with scopes_disabled():
        world.workspace.unique_window_hours = 1
        world.workspace.save()
        link = links_of(world.deliveries[0])[0]
        scope = metrics.Scope(workspace=world.workspace, variant_id=world.variants[0].pk)
        _event(world, ClickEvent, 0, T0)
        _event(world, OpenEvent, 1, T0)
        report = aggregate()
        assert (report.fast_pairs, report.fast_recipients) == (1, 2)  # no state yet
        # The window's edge, each click in a batch of its own: from the stored state.
        _event(world, ClickEvent, 0, T0 + hour - timedelta(microseconds=1))
        assert aggregate().fast_pairs == 1
        assert metrics.link_counts(scope)[link.pk] == (2, 1)
        _event(world, ClickEvent, 0, T0 + hour, reliable=False, device="mobile")
        report = aggregate()
        assert (report.fast_pairs, report.fast_recipients) == (1, 1)
        assert metrics.link_counts(scope)[link.pk] == (3, 2)
        reliable = replace(scope, reliable_only=True)
        assert metrics.link_counts(reliable)[link.pk] == (2, 1)
        check_exact(world)
        # One batch: an in-order click and a late one on the same pair (recomputed), an
        # in-order click on the second link of the same customer (fast, but the
        # recipient is recomputed: one of its pairs was), and customer 1's in-order click
        # (fast, and its recipient too) and customer 2's undated one (recomputed).
        _event(world, ClickEvent, 0, T0 + 3 * hour, device="mobile")
        _event(world, ClickEvent, 0, T0 + hour / 2)
        _event(world, ClickEvent, 0, T0 + 4 * hour, link=1)
        _event(world, ClickEvent, 1, T0 + 2 * hour, device="mobile")
        _event(world, ClickEvent, 2, T0 + 2 * hour)
        EventChange.objects.filter(delivery=world.deliveries[4]).update(at=None)
        report = aggregate()
        assert (report.pairs, report.fast_pairs) == (4, 2)
        assert (report.recipients, report.fast_recipients) == (3, 1)
        # Customer 0: 0 (counted), 0.5 h, 1 h - 1 µs, 1 h (counted), 3 h (counted).
        alone = replace(scope, customer_id=world.customers[0].pk)
        assert metrics.link_counts(alone)[link.pk] == (5, 3)
        check_exact(world)
        # An applied click reclassified: recomputed, as is a late open.
        first = ClickEvent.objects.get(delivery=world.deliveries[0], at=T0)
        first.reliable = False
        first.save()
        EventChange.objects.create(kind="c", delivery=first.delivery, link=first.link, at=T0)
        _event(world, OpenEvent, 1, T0 - hour)
        report = aggregate()
        assert (report.fast_pairs, report.fast_recipients) == (0, 0)
        check_exact(world)
        # The next day, in order again: fast, and its day starts new spans.
        _event(world, ClickEvent, 0, T0 + timedelta(days=1), device="mobile")
        _event(world, OpenEvent, 1, T0 + timedelta(days=1))
        report = aggregate()
        assert (report.fast_pairs, report.fast_recipients) == (1, 2)
        check_exact(world)
        check_exact(
            world,
            [
                replace(s, customer_id=c.pk)
                for s in scopes(world)
                for c in world.customers[:3]
                if not s.segment
            ],
        )
