"""The click pipeline as Celery runs it: ingestion and aggregation taking turns in one
run, so neither can starve the other, and the marks that say how fresh the rollups are.

Why one run does both: beat used to queue an ingestion and an aggregation task every
few seconds. Under a click storm both worker slots ran ingestions, the queued
aggregations expired unrun and the map's numbers stood still for as long as the storm
lasted. A pipeline run instead alternates: it ingests the spool (complete files, for
at most PIPELINE_INGEST_SECONDS), then brings each shard of the change log it can take
up to what existed when it looked, then ingests again, and so on until neither finds
work or its time slice (PIPELINE_SLICE_SECONDS) ends. A run whose slice ends with work
left queues its continuation at once (never expiring); a run that finds nothing to do
ends. Runs that overlap share the work: spool files are locked by the ingester that
claims them, shards by the run that drains them (clickmap/rollups.py).

At most PIPELINE_RUNS runs hold a slot at a time (a cache lock: Redis in production),
so ticks and continuations never pile up into runs that wait on each other; a tick
that finds every slot taken returns at once, since the runs holding them loop while
there is work.

Freshness: ingestion moves its spool's mark (tracking.models.SpoolMark) to a time
before which every event of the spool is stored. A run about to drain a shard reads
the oldest spool mark, W, then the change log's highest id; once no change row of the
shard up to that id is left, every event spooled before W counts in the shard's
numbers, and the shard's mark (ShardMark) moves to W. The map shows the oldest shard
mark (clickmap/freshness.py): a lower bound computed from the pipeline's own state,
never an estimate.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django_scopes import scopes_disabled

from clickmap import rollups, segment_rollups
from tracking.ingest import IngestReport, ingest_spool
from tracking.models import SpoolMark

log = logging.getLogger(__name__)

SLOT_KEY = "clickmap:pipeline:slot:{}"
CONTINUATION_KEY = "clickmap:pipeline:continuation"


@dataclass
class PipelineReport:
    rounds: int = 0
    files: int = 0
    clicks: int = 0
    opens: int = 0
    changes: int = 0
    drained_shards: int = 0  # shard drains that reached the change log's end as it was
    busy_shards: int = 0  # shards other runs held when this one came to them
    work_left: bool = False  # the slice ended before the run found nothing to do
    ingest_seconds: float = 0.0
    aggregate_seconds: float = 0.0


def run(slice_seconds: float | None = None) -> PipelineReport:
    """Alternate ingestion and aggregation until neither finds work, or for at most
    `slice_seconds` (PIPELINE_SLICE_SECONDS). What a pipeline task does once it holds a
    slot; `manage.py` and tests call it directly."""
    slice_seconds = settings.PIPELINE_SLICE_SECONDS if slice_seconds is None else slice_seconds
    deadline = time.monotonic() + slice_seconds
    report = PipelineReport()
    while True:
        report.rounds += 1
        began = time.monotonic()
        # A turn of ingestion is bounded, so a spool that fills faster than it drains
        # still lets the run aggregate every few seconds: the map keeps moving.
        ingested = (
            ingest_spool(seconds=settings.PIPELINE_INGEST_SECONDS)
            if settings.PIPELINE_INGEST
            else IngestReport()
        )
        report.files += ingested.files
        report.clicks += ingested.clicks
        report.opens += ingested.opens
        ingest_done = time.monotonic()
        aggregated = aggregate_shards(deadline, report)
        report.ingest_seconds += ingest_done - began
        report.aggregate_seconds += time.monotonic() - ingest_done
        if not ingested.files and not aggregated:
            return report
        if time.monotonic() >= deadline:
            report.work_left = True
            return report


def aggregate_shards(deadline: float, report: PipelineReport) -> int:
    """Bring every shard this run can take up to the change log as it was when the run
    came to it (the segments' membership log first, by one run at a time); returns how
    many change rows were applied."""
    shards = settings.AGGREGATE_SHARDS
    applied = 0
    with scopes_disabled():
        with (
            connection.cursor() as cursor,
            rollups._shard_taken(cursor, rollups.MEMBERSHIP_TURN) as taken,
        ):
            if taken:
                applied += segment_rollups.refresh()
        for number in range(shards):
            with connection.cursor() as cursor, rollups._shard_taken(cursor, number) as taken:
                if not taken:
                    report.busy_shards += 1
                    continue
                drained, changes = drain((number, shards), deadline)
            applied += changes
            report.changes += changes
            report.drained_shards += drained
    return applied


def drain(shard: tuple[int, int] | None, deadline: float) -> tuple[bool, int]:
    """Apply the change rows of `shard` (number, of; None: the whole log) until none is
    left of those that existed at the start, then move the shard's mark (every shard's,
    for the whole log). Stops at `deadline` (time.monotonic()) with rows left. Returns
    (whether it got there, change rows applied)."""
    watermark = spool_watermark()
    top = _last_change_id()
    report = rollups.AggregateReport()
    idle = 0
    while _pending(shard, top):
        # One batch at least, whatever the deadline: every run makes progress.
        if report.batches and time.monotonic() >= deadline:
            return False, report.changes
        if rollups.apply_batch(settings.PIPELINE_BATCH_SIZE, report, shard):
            report.batches += 1
            idle = 0
            continue
        # Nothing taken: the rows left are past applied_up_to or held by another
        # transaction (a customer being deleted): from the start once, then leave them.
        idle += 1
        if idle > 2:
            return False, report.changes
        report.applied_up_to = 0
        time.sleep(0.05 * idle)
    if watermark is not None:
        _mark(shard, watermark)
    return True, report.changes


def drain_everything() -> int:
    """The whole change log, in this process (the embedded default's inline
    aggregation, tracking's events_stored signal): returns change rows applied."""
    with scopes_disabled():
        segment_rollups.refresh()
        return drain(None, deadline=float("inf"))[1]


def spool_watermark() -> datetime | None:
    """Every event spooled before this time, on every spool, is stored (None before
    any ingestion recorded a mark)."""
    return SpoolMark.objects.order_by("at").values_list("at", flat=True).first()


def _last_change_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM tracking_eventchange")
        return cursor.fetchone()[0]


def _pending(shard: tuple[int, int] | None, top: int) -> bool:
    """Whether a change row of `shard` with an id up to `top` is still in the log. Rows
    another transaction is deleting count until it commits."""
    where, params = (rollups.SHARD_OF_CHANGE, list(reversed(shard))) if shard else ("WHERE", [])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM tracking_eventchange c {where} c.id <= %s)",  # noqa: S608
            [*params, top],
        )
        return cursor.fetchone()[0]


def _mark(shard: tuple[int, int] | None, at: datetime) -> None:
    """Move the shard's mark (every current shard's, for None) forward to `at`."""
    of = settings.AGGREGATE_SHARDS
    numbers = [shard[0]] if shard else list(range(of))
    of = shard[1] if shard else of
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO clickmap_shardmark (shard, "of", at)
               SELECT number, %s, %s FROM unnest(%s::int[]) AS number
               ON CONFLICT ("of", shard)
               DO UPDATE SET at = GREATEST(EXCLUDED.at, clickmap_shardmark.at)""",
            [of, at, numbers],
        )


# --- Celery's side: slots ------------------------------------------------------------


def take_slot() -> tuple[str, str] | None:
    """One of the PIPELINE_RUNS run slots, or None when every one is held. A slot
    expires on its own after a few slices, so a killed worker's is freed."""
    token = uuid.uuid4().hex
    for number in range(settings.PIPELINE_RUNS):
        key = SLOT_KEY.format(number)
        if cache.add(key, token, timeout=_slot_timeout()):
            return key, token
    return None


def free_slot(slot: tuple[str, str]) -> None:
    key, token = slot
    if cache.get(key) == token:  # still ours: not expired and taken by another run
        cache.delete(key)


def _slot_timeout() -> int:
    return int(settings.PIPELINE_SLICE_SECONDS * 3 + 60)


def continuation_wanted() -> bool:
    """Whether to queue a continuation: not when one is queued already (at most one
    waits, whatever the number of runs ending with work left)."""
    return cache.add(CONTINUATION_KEY, 1, timeout=_slot_timeout())


def continuation_started() -> None:
    cache.delete(CONTINUATION_KEY)


def run_in_slot() -> PipelineReport | None:
    """A pipeline run in a free slot (None when every slot is held: the runs holding
    them do the work)."""
    slot = take_slot()
    if slot is None:
        return None
    try:
        report = run()
    finally:
        free_slot(slot)
    log.debug(
        "pipeline run: %s rounds, %s files, %s clicks, %s opens, %s changes, work left: %s",
        report.rounds,
        report.files,
        report.clicks,
        report.opens,
        report.changes,
        report.work_left,
    )
    return report
