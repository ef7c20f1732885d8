"""The aggregator's ways to the rollups agree row for row: for random event streams
(repeats, ties, late and reclassified events, window mode), the incremental batches (fast
path and recompute) and the rebuild (tables built beside the live ones and swapped in)
leave every row of every rollup table the same, the state the in-order fast path reads
included, and the numbers they give equal the brute force (tests/test_rollups.py); the
rebuild leaves the schema as it found it (names, constraints, indexes, identity), and the
aggregator goes on after it with fresh pair ids."""

import uuid

import pytest
from django.db import connection, transaction
from django_scopes import scopes_disabled
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clickmap import rollups
from clickmap.models import (
    RECIPIENT_FLAGS,
    EmailRollup,
    EmailSpanRollup,
    LinkDayRollup,
    LinkRollup,
    LinkSpanRollup,
    PairDayRollup,
    PairRollup,
    RecipientDayRollup,
    RecipientRollup,
)
from tests.rollup_world import T0, links_of
from tests.test_rollups import check_exact, event_plan, store
from tracking.models import ClickEvent, EventChange, OpenEvent

COUNTERS = ["total_all", "total_rel", "window_all", "window_rel"]


def rollup_rows():
    """Every rollup row by its natural key (ids left out: they are surrogates)."""
    pairs = {p.pk: (p.variant_id, p.link_id, p.customer_id) for p in PairRollup.objects.all()}
    return {
        # With the fast path's state (clickmap/fast_path.py): the rebuild writes what the
        # batches leave.
        "pairs": sorted(
            PairRollup.objects.values_list(
                "variant_id",
                "link_id",
                "customer_id",
                *COUNTERS,
                "last_at",
                "counted_at_all",
                "counted_at_rel",
            )
        ),
        "days": sorted(
            (pairs[pair_id], *rest)
            for pair_id, *rest in PairDayRollup.objects.values_list(
                "pair_id", "variant_id", "link_id", "customer_id", "day", "device", *COUNTERS
            )
        ),
        "links": sorted(
            LinkRollup.objects.values_list(
                "variant_id", "link_id", *COUNTERS, "unique_all", "unique_rel"
            )
        ),
        "recipients": sorted(
            RecipientRollup.objects.values_list(
                "variant_id",
                "customer_id",
                "clicked_all",
                "clicked_rel",
                "opened_all",
                "opened_rel",
                "last_at",
            )
        ),
        "emails": sorted(
            EmailRollup.objects.values_list(
                "variant_id", "clickers_all", "clickers_rel", "openers_all", "openers_rel"
            )
        ),
        # Counters that went back to zero may stay as rows: equal means equal non-zero.
        "link_days": sorted(
            row
            for row in LinkDayRollup.objects.values_list(
                "variant_id", "link_id", "day", "device", *COUNTERS
            )
            if any(row[4:])
        ),
        "link_spans": sorted(
            row
            for row in LinkSpanRollup.objects.values_list(
                "variant_id", "link_id", "device", "reliable", "day", "since", "n"
            )
            if row[-1]
        ),
        "recipient_days": sorted(
            RecipientDayRollup.objects.values_list(
                "variant_id", "customer_id", "day", "device", *RECIPIENT_FLAGS
            )
        ),
        "email_spans": sorted(
            row
            for row in EmailSpanRollup.objects.values_list(
                "variant_id", "kind", "device", "reliable", "day", "since", "n"
            )
            if row[-1]
        ),
    }


def schema():
    """Columns (types, NOT NULL, identity, defaults), storage settings, indexes and
    constraints of the rollup tables, as PostgreSQL describes them."""
    tables = list(rollups.ROLLUP_TABLES)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attrelid::regclass::text, a.attname, format_type(a.atttypid, a.atttypmod), "
            "a.attnotnull, a.attidentity, pg_get_expr(d.adbin, d.adrelid), c.reloptions, "
            "pg_get_serial_sequence(a.attrelid::regclass::text, a.attname) "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid::regclass::text = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped",
            [tables],
        )
        columns = sorted(cursor.fetchall(), key=str)
        cursor.execute(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
            "WHERE indrelid::regclass::text = ANY(%s)",
            [tables],
        )
        indexes = sorted(cursor.fetchall())
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), "
            "condeferrable, condeferred, convalidated FROM pg_constraint "
            "WHERE conrelid::regclass::text = ANY(%s)",
            [tables],
        )
        return columns, indexes, sorted(cursor.fetchall())


def rebuild() -> None:
    with transaction.atomic(), scopes_disabled():
        rollups._recompute_sql()


# Streams that hit the edges: first reliable click after unreliable ones, ties at one
# instant across devices, chains across the window edge and midnight, late batches.
TRICKY = [
    (
        0,
        [
            (0, 0, 0, False, "bot", 0, False),
            (0, 0, 0, True, "mobile", 1, False),
            (0, 0, 0, False, "desktop", 0, False),
            (0, 0, 60, False, "desktop", 2, False),
            (0, 0, 86400, True, "mobile", 3, False),
            (0, 1, 5400, True, "tablet", 1, True),
        ],
    ),
    (
        1,
        [
            (1, 0, s, s % 7200 != 0, d, b, False)
            for s, d, b in (
                (0, "mobile", 0),
                (1800, "mobile", 1),
                (3599, "bot", 0),
                (3600, "desktop", 2),
                (5400, "mobile", 1),
                (7200, "mobile", 3),
                (86399, "tablet", 2),
                (86400, "tablet", 0),
            )
        ],
    ),
    (
        24,
        [
            (2, 0, s, r, "mobile", b, False)
            for s, r, b in (
                (0, False, 0),
                (86399, True, 1),
                (86400, True, 0),
                (90000, False, 2),
                (172800, True, 3),
                (172800, False, 3),
            )
        ],
    ),
]


# Committed, not rolled back: each example's rebuild drops and creates the rollup tables
# (clickmap.rollups._swap_in_sql), whose locks and catalog changes would otherwise pile up
# in one transaction over every example.
@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=event_plan,
    window=st.sampled_from([0, 1, 24]),
    batches=st.sets(st.integers(0, 3)),
    reclassify=st.integers(0, 3),
)
@example(plan=TRICKY[0][1], window=TRICKY[0][0], batches={1, 3}, reclassify=0)
@example(plan=TRICKY[1][1], window=TRICKY[1][0], batches={0, 2}, reclassify=1)
@example(plan=TRICKY[2][1], window=TRICKY[2][0], batches=set(), reclassify=3)
def test_incremental_batches_and_the_rebuild_leave_the_same_rows(
    world, plan, window, batches, reclassify
):
    with scopes_disabled():
        for model in (ClickEvent, OpenEvent, EventChange):
            model.objects.all().delete()
        world.workspace.unique_window_hours = window
        world.workspace.save()
        rollups.recompute()
        store(world, plan, batches, reclassify)
        check_exact(world)
        expected = rollup_rows()  # the incremental batches'
        before = schema()
        for _ in range(2):  # the rebuild again over its own tables
            rebuild()
            assert rollup_rows() == expected
            assert schema() == before


def test_after_a_rebuild_the_aggregator_goes_on_with_new_pairs(world):
    with scopes_disabled():
        delivery = world.deliveries[0]
        first, second = links_of(delivery)[:2]
        for link in (first, second, first):
            ClickEvent.objects.create(
                event_id=uuid.uuid4(),
                workspace=world.workspace,
                delivery=delivery,
                link=link,
                url=link.href,
                at=T0,
                device="mobile",
            )
        rebuild()
        assert not EventChange.objects.exists()
        other = world.deliveries[2]
        link = links_of(other)[0]
        ClickEvent.objects.create(
            event_id=uuid.uuid4(),
            workspace=world.workspace,
            delivery=other,
            link=link,
            url=link.href,
            at=T0,
            device="desktop",
        )
        EventChange.objects.create(kind="c", delivery=other, link=link)
        rollups.aggregate()  # a new PairRollup id must not collide with the rebuilt ones
        assert PairRollup.objects.count() == 3
        assert sum(LinkRollup.objects.values_list("total_all", flat=True)) == 4
        check_exact(world)
