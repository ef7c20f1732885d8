"""Aggregation with real workers against PostgreSQL: two at once give exact numbers (on the
whole change log, or on shards of it), a run leaves the shards another run holds without
waiting, and one killed with SIGKILL in the middle of a batch leaves nothing half-applied."""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection, connections
from django_scopes import scopes_disabled

from clickmap.models import LinkRollup, MembershipChange, SegmentMember
from clickmap.rollups import (
    MEMBERSHIP_TURN,
    SHARD_LOCK,
    aggregate,
    aggregate_free_shards,
    aggregate_now,
)
from tests.conftest import database_url
from tests.rollup_world import DEVICES, T0, links_of
from tests.test_rollups import check_exact
from tracking.models import ClickEvent, EventChange, OpenEvent

ROOT = Path(__file__).resolve().parents[1]


def backlog(world, clicks: int) -> None:
    """`clicks` click events (and some opens) with their change rows, as ingestion leaves."""
    events, changes = [], []
    for i in range(clicks):
        delivery = world.deliveries[(i * 7) % len(world.deliveries)]
        candidates = links_of(delivery)
        link = candidates[(i * 3) % len(candidates)]
        events.append(
            ClickEvent(
                event_id=uuid.uuid4(),
                workspace=world.workspace,
                delivery=delivery,
                link=link,
                url=link.href,
                at=T0 + timedelta(minutes=(i * 37) % 5000),
                reliable=i % 4 != 0,
                device=DEVICES[i % len(DEVICES)],
            )
        )
        changes.append(EventChange(kind="c", delivery=delivery, link=link, at=events[-1].at))
        if i % 5 == 0:
            OpenEvent.objects.create(
                event_id=uuid.uuid4(),
                workspace=world.workspace,
                delivery=delivery,
                at=T0 + timedelta(minutes=i),
                reliable=i % 10 != 0,
            )
            changes.append(EventChange(kind="o", delivery=delivery, at=T0 + timedelta(minutes=i)))
    ClickEvent.objects.bulk_create(events, batch_size=2000)
    EventChange.objects.bulk_create(changes, batch_size=2000)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("run", [aggregate, aggregate_free_shards], ids=["whole log", "shards"])
def test_two_workers_on_the_same_backlog_give_exact_numbers(world, run):
    with scopes_disabled():
        world.workspace.unique_window_hours = 2
        world.workspace.save()
        backlog(world, 3000)
    errors, reports = [], []

    def worker():
        try:
            reports.append(run(batch_size=40))
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(report.batches > 0 for report in reports), "both workers took part"
    assert_drained_exactly(world, 3000)


@pytest.mark.django_db(transaction=True)
def test_aggregate_now_runs_every_shard_at_once_and_gives_exact_numbers(world, settings):
    settings.AGGREGATE_SHARDS = 3
    with scopes_disabled():
        backlog(world, 2000)
        changes = EventChange.objects.count()
    report = aggregate_now(batch_size=40)
    assert (report.changes, report.busy_shards) == (changes, 0)
    assert_drained_exactly(world, 2000)


def _database_url(name: str = "crashme") -> str:
    return database_url(name)


def assert_drained_exactly(world, clicks: int) -> None:
    """The change log is empty and every rollup equals the brute force over `clicks`."""
    with scopes_disabled():
        assert not EventChange.objects.exists()
        assert sum(LinkRollup.objects.values_list("total_all", flat=True)) == clicks
        check_exact(world)


def _changes_by_shard(shards: int) -> dict:
    """{shard: change row ids}, a change row's shard being its customer's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (hashint8(d.customer_id) & 2147483647) %% %s, array_agg(c.id ORDER BY c.id) "
            "FROM tracking_eventchange c JOIN campaigns_delivery d ON d.id = c.delivery_id "
            "GROUP BY 1",
            [shards],
        )
        return dict(cursor.fetchall())


@contextmanager
def other_run():
    """A connection standing for another aggregator run, to hold advisory locks; waiting
    on it for more than 10 s fails the test."""
    other = psycopg.connect(_database_url("other-run"), autocommit=True)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '10s'")
    try:
        yield other
    finally:
        other.close()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")


@pytest.mark.django_db(transaction=True)
def test_a_run_takes_only_the_shards_no_other_run_holds_and_never_waits(world, settings):
    settings.AGGREGATE_SHARDS = 3
    with scopes_disabled():
        backlog(world, 600)
    before = _changes_by_shard(3)
    free = next(iter(before))  # a shard with rows
    with other_run() as other:
        for shard in range(3):
            other.execute("SELECT pg_advisory_lock(%s, %s)", [SHARD_LOCK, shard])
        report = aggregate_free_shards(batch_size=50)
        assert (report.busy_shards, report.changes) == (3, 0)
        assert _changes_by_shard(3) == before

        other.execute("SELECT pg_advisory_unlock(%s, %s)", [SHARD_LOCK, free])
        report = aggregate_free_shards(batch_size=50)
        assert report.busy_shards == 2
        assert report.changes == len(before[free])
        assert _changes_by_shard(3) == {k: v for k, v in before.items() if k != free}
    report = aggregate_free_shards(batch_size=50)
    assert report.busy_shards == 0
    assert_drained_exactly(world, 600)


@pytest.mark.django_db(transaction=True)
def test_the_membership_log_is_applied_by_one_run_under_no_shard(world, settings):
    """A run applies the segments' membership log though other runs hold every shard (a
    big segment's build holds up no shard), and leaves it, without waiting, to the run
    that has the membership turn."""
    settings.AGGREGATE_SHARDS = 2
    with scopes_disabled():
        backlog(world, 50)
        aggregate()
        joining = world.customers[0]  # tier 0

    def tier(value: int) -> tuple[int, bool, bool]:
        """Move `joining` to tier `value` and run: (memberships applied, a member now,
        its log entry left)."""
        with scopes_disabled():
            joining.attributes = {"tier": value}
            joining.save()
            report = aggregate_free_shards()
            assert report.busy_shards == 2
            return (
                report.memberships,
                SegmentMember.objects.filter(customer=joining).exists(),
                MembershipChange.objects.filter(customer_id=joining.pk).exists(),
            )

    with other_run() as other:
        for shard in range(2):
            other.execute("SELECT pg_advisory_lock(%s, %s)", [SHARD_LOCK, shard])
        assert tier(1) == (1, True, False)
        other.execute("SELECT pg_advisory_lock(%s, %s)", [SHARD_LOCK, MEMBERSHIP_TURN])
        assert tier(0) == (0, True, True)
    assert aggregate_free_shards().memberships == 1
    with scopes_disabled():
        assert not SegmentMember.objects.filter(customer=joining).exists()
        check_exact(world)


def _aggregator_waiting_in_a_transaction() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            # `aggregate` runs a connection per shard: any of them waiting will do.
            "SELECT bool_or(xact_start IS NOT NULL AND wait_event_type = 'Lock') "
            "FROM pg_stat_activity WHERE application_name = 'crashme'"
        )
        row = cursor.fetchone()
    return bool(row and row[0])


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_leaves_nothing_half_applied(world, spool_dir):
    with scopes_disabled():
        backlog(world, 20000)
        before = EventChange.objects.count()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(DATABASE_URL=_database_url(), TRACKING_SPOOL_DIR=str(spool_dir))
    process = subprocess.Popen(
        [sys.executable, "manage.py", "aggregate", "--batch-size", "500"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # Once a batch has committed, hold the change log so that the next batch waits inside
    # its transaction (a batch claims its rows and applies them in one), then kill it
    # there: deterministic however fast a batch is.
    holder = psycopg.connect(_database_url("holder"))
    killed_in_transaction = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            with scopes_disabled():
                progressed = EventChange.objects.count() < before
            if progressed:
                holder.execute("LOCK TABLE tracking_eventchange IN EXCLUSIVE MODE")
                break
            time.sleep(0.005)
        while time.monotonic() < deadline and process.poll() is None:
            if _aggregator_waiting_in_a_transaction():
                process.send_signal(signal.SIGKILL)
                killed_in_transaction = True
                break
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        holder.rollback()
        holder.close()
    assert killed_in_transaction, "the aggregator finished before it could be killed"
    with scopes_disabled():
        left = EventChange.objects.count()
        assert 0 < left < before  # some batches committed, the killed one did not
        aggregate()  # the restarted worker
    assert_drained_exactly(world, 20000)
