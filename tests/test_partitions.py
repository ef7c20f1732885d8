"""The raw event tables are partitioned by month on PostgreSQL, and stay correct."""

import uuid
from datetime import UTC, date, datetime

from django.db import connection
from django_scopes import scopes_disabled

from tests.rollup_world import links_of
from tracking.models import ClickEvent
from tracking.partitions import EVENT_TABLES, ensure_partitions


def partition_of(table, event_id):
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT tableoid::regclass::text FROM {table} WHERE event_id = %s",  # noqa: S608
            [event_id],
        )
        return cursor.fetchone()[0]


def test_event_tables_are_partitioned_by_month(db):
    with connection.cursor() as cursor:
        for table in EVENT_TABLES:
            cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s", [table])
            assert cursor.fetchone() == ("p",), table


def test_events_land_in_their_month_and_far_ones_in_the_default(world):
    ensure_partitions(today=date(2026, 11, 1), months_ahead=1)
    with scopes_disabled():
        delivery = world.deliveries[0]
        link = links_of(delivery)[0]
        ids = {}
        for label, at in {
            "nov": datetime(2026, 11, 20, tzinfo=UTC),
            "dec": datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
            "far": datetime(2031, 1, 1, tzinfo=UTC),
        }.items():
            ids[label] = uuid.uuid4()
            ClickEvent.objects.create(
                event_id=ids[label],
                workspace=world.workspace,
                delivery=delivery,
                link=link,
                url=link.href,
                at=at,
            )
    assert partition_of("tracking_clickevent", ids["nov"]) == "tracking_clickevent_y2026m11"
    assert partition_of("tracking_clickevent", ids["dec"]) == "tracking_clickevent_y2026m12"
    assert partition_of("tracking_clickevent", ids["far"]) == "tracking_clickevent_default"


def test_ensure_partitions_creates_coming_months_once(db):
    created = ensure_partitions(today=date(2030, 5, 10), months_ahead=2)
    assert sorted(created) == sorted(
        f"{table}_y2030m{month:02d}" for table in EVENT_TABLES for month in (5, 6, 7)
    )
    assert ensure_partitions(today=date(2030, 5, 10), months_ahead=2) == []
