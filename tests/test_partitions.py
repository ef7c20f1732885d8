"""The raw event tables are partitioned by month, stay correct, and are what Django's
model state says they are."""

import subprocess
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from django.db import IntegrityError, connection, transaction
from django_scopes import scopes_disabled

from tests.rollup_world import links_of
from tracking.models import ClickEvent, OpenEvent
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


def test_a_row_in_the_default_partition_never_blocks_creating_its_month(world):
    today = date(2031, 3, 10)
    ensure_partitions(today=today, months_ahead=2)  # up to May 2031
    early = datetime(2031, 6, 14, 9, 30, tzinfo=UTC)  # an open three months ahead
    with scopes_disabled():
        event = OpenEvent.objects.create(
            event_id=uuid.uuid4(), workspace=world.workspace, delivery=world.deliveries[0], at=early
        )
    assert partition_of("tracking_openevent", event.event_id) == "tracking_openevent_default"
    created = ensure_partitions(today=today, months_ahead=3)
    assert sorted(created) == ["tracking_clickevent_y2031m06", "tracking_openevent_y2031m06"]
    assert partition_of("tracking_openevent", event.event_id) == "tracking_openevent_y2031m06"
    with scopes_disabled():  # the row is whole, and the month's keys and indexes hold
        assert OpenEvent.objects.get(event_id=event.event_id).id == event.id
        with pytest.raises(IntegrityError), transaction.atomic():
            OpenEvent.objects.create(
                event_id=event.event_id,
                workspace=world.workspace,
                delivery=world.deliveries[0],
                at=early,
            )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'tracking_openevent_y2031m06'"
        )
        month_indexes = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'tracking_openevent_y2031m03'"
        )
        assert month_indexes == cursor.fetchone()[0]


def test_the_model_state_is_the_schema_makemigrations_finds_nothing_to_do():
    result = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout


def test_the_event_tables_keys_are_the_models(db):
    """The database's keys of each event table are those its model states: the primary
    key (id, at) and the unique (event_id, at), both holding the partition key."""
    for model in (ClickEvent, OpenEvent):
        table = model._meta.db_table
        with connection.cursor() as cursor:
            keys = {
                (c["primary_key"], c["unique"], tuple(c["columns"]))
                for c in connection.introspection.get_constraints(cursor, table).values()
                if c["primary_key"] or c["unique"]
            }
        pk = tuple(model._meta.get_field(n).column for n in model._meta.pk.field_names)
        unique = {
            tuple(model._meta.get_field(f).column for f in c.fields)
            for c in model._meta.constraints
        }
        assert keys == {(True, True, pk)} | {(False, True, u) for u in unique}, table
        assert pk == ("id", "at") and unique == {("event_id", "at")}
