"""Move spooled events into the database, classified. Exactly once.

Claimed spool files are stored a group at a time (up to GROUP_FILES files or
GROUP_EVENTS events) in one transaction with INSERT … ON CONFLICT DO NOTHING (the
event's id and time are unique), and deleted only after the commit; a crash in
between makes the next run read them again and insert nothing twice. Several ingesters may
run at once: each file is locked by the one that claimed it.

A delivery's stored click verdicts always equal classify_clicks over all of its
stored clicks, whatever the batching, order and concurrency of ingestion. A batch
first locks its deliveries (PostgreSQL transaction-level advisory locks, taken in
one sorted order so two ingesters never deadlock; on SQLite write transactions run
one at a time anyway), so it sees every click an earlier batch stored. Then it
judges the stored clicks that its new ones can affect (those within
classify.verdict_reach of one) over everything within that reach of them, and
stores the changed verdicts with their rollup change log rows.
"""

import logging
import os
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction
from django_scopes import scopes_disabled

from campaigns.models import Delivery, TemplateLink, Workspace
from tracking import telemetry
from tracking.classify import (
    MAX_USER_AGENT_LENGTH,
    ClickFacts,
    Reason,
    Thresholds,
    classify_clicks,
    classify_open,
    device_class,
    verdict_reach,
)
from tracking.models import ClickEvent, EventChange, OpenEvent
from tracking.signals import events_stored
from tracking.spool import claim_files, oldest_file_time, read_records, release

log = logging.getLogger(__name__)

# PostgreSQL advisory locks (the two-int form), all of class INGEST_LOCK: one per slot
# (a delivery's slot is its id modulo LOCK_SLOTS; two deliveries sharing one are only
# ingested one after the other), and ALL_SLOTS, which stands for every slot. A batch
# of at most MAX_SLOT_LOCKS slots takes ALL_SLOTS shared, then its slots; a bigger one
# takes ALL_SLOTS alone, exclusive. So no transaction holds more than MAX_SLOT_LOCKS
# + 1 of the server's shared lock table (a few thousand entries for every session),
# and every batch takes its locks in one order: ALL_SLOTS first, then slots sorted.
INGEST_LOCK = 0x696E  # "in"
ALL_SLOTS = -1
LOCK_SLOTS = 1024
MAX_SLOT_LOCKS = 32


@dataclass
class IngestReport:
    files: int = 0
    clicks: int = 0
    opens: int = 0
    dropped: int = 0  # events naming a delivery or link that no longer exists
    bad_lines: int = 0  # skipped spool lines: not a whole event (kept in the spool's bad/)
    bad_bytes: int = 0
    reclassified: int = 0
    lost: list[str] = field(default_factory=list)  # per file: what was skipped
    # New clicks by verdict: "reliable", or the reason they are not (the metrics' labels).
    verdicts: Counter = field(default_factory=Counter)


def ingest_spool(directory=None, seconds: float | None = None) -> IngestReport:
    """Store every complete spool file's events; returns what was done, and for each
    file with lines that were not whole events, exactly what was skipped (also logged
    at ERROR; the lines are kept in the spool's bad/ directory). With `seconds`, takes
    no further file once that long has passed (the pipeline's turns: clickmap/pipeline.py).

    Then moves the spool's mark (SpoolMark, named TRACKING_SPOOL_NAME) forward: to this
    run's start, or to the oldest file left in the spool (a writer's, still open, or one
    another ingester is storing: files go only after their commit) when that is older.
    Every event spooled before the mark is stored: one spooled before the run started
    was in a file the run stored, or in one still there."""
    started = time.time()
    until = time.monotonic() + seconds if seconds is not None else None
    directory = directory or settings.TRACKING_SPOOL_DIR
    report = IngestReport()
    group = []  # claimed files, stored together: [(path, fd, SpoolFile)]
    try:
        for path, fd in claim_files(directory):
            try:
                group.append((path, fd, read_records(fd)))
            except BaseException:
                os.close(fd)
                raise
            over = until is not None and time.monotonic() >= until
            if over or len(group) >= GROUP_FILES or _events(group) >= GROUP_EVENTS:
                _store_group(group, report)
                group = []
            if over:
                break  # the files left stay for the next turn; the mark says so
        if group:
            _store_group(group, report)
            group = []
    finally:
        for _, fd, _ in group:
            os.close(fd)  # not stored: the files stay, the next run reads them again
    mark_spool(min(started, oldest_file_time(directory) or started))
    if report.files:
        events_stored.send(sender=ingest_spool, report=report)
    return report


# Spool files stored in one transaction: a tracker's files are small when it is slow
# (each process rotates its file every second), and each transaction costs its locks,
# lookups and commit whatever its size.
GROUP_FILES = 64
GROUP_EVENTS = 5000


def _events(group) -> int:
    return sum(len(spooled.records) for _, _, spooled in group)


def _store_group(group, report: IngestReport) -> None:
    """Store the events of the claimed files in one transaction, then delete the files
    (only after the commit: a crash in between makes the next run read them again and
    insert nothing twice)."""
    before = (report.clicks, report.opens, report.dropped, report.verdicts.copy())
    store_records([record for _, _, spooled in group for record in spooled.records], report)
    while group:
        path, fd, spooled = group.pop(0)
        release(path, fd, spooled.bad)
        report.files += 1
        report.bad_lines += len(spooled.bad)
        report.bad_bytes += spooled.bad_bytes
        if loss := spooled.loss(path.name):
            report.lost.append(loss)
            log.error("tracking spool %s: %s; kept in bad/%s", path.parent, loss, path.name)
    _count_stored(report, before)


def mark_spool(ingested_before: float, name: str | None = None) -> None:
    """Record that every event of spool `name` spooled before `ingested_before` (a Unix
    time) is stored. Marks only move forward: a run that started earlier and ends later
    does not take back what a later run found."""
    at = datetime.fromtimestamp(ingested_before, tz=UTC)
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO tracking_spoolmark (name, at) VALUES (%s, %s)
               ON CONFLICT (name)
               DO UPDATE SET at = GREATEST(EXCLUDED.at, tracking_spoolmark.at)""",
            [name or settings.TRACKING_SPOOL_NAME, at],
        )


def _count_stored(report: IngestReport, before) -> None:
    """Count what one committed group of files added to `report` (tracking/telemetry)."""
    clicks, opens, dropped, verdicts = before
    telemetry.EVENTS_INGESTED.labels("click").inc(report.clicks - clicks)
    telemetry.EVENTS_INGESTED.labels("open").inc(report.opens - opens)
    telemetry.EVENTS_DROPPED.inc(report.dropped - dropped)
    for verdict, count in (report.verdicts - verdicts).items():
        telemetry.CLICKS_CLASSIFIED.labels(verdict).inc(count)


def _at(record) -> datetime:
    return datetime.fromtimestamp(float(record["t"]), tz=UTC)


def _thresholds(workspace: Workspace) -> Thresholds:
    return Thresholds(
        min_seconds_after_delivery=workspace.bot_min_seconds_after_delivery,
        burst_links=workspace.bot_burst_links,
        burst_seconds=workspace.bot_burst_seconds,
    )


@transaction.atomic
def store_records(records: list[dict], report: IngestReport) -> None:
    """Classify and insert one batch of spool records (idempotent by event id), and
    reclassify the stored clicks of its deliveries that the new ones affect."""
    with scopes_disabled():
        delivery_ids = {int(r["d"]) for r in records}
        _lock_deliveries(delivery_ids)
        deliveries = {
            d.pk: d
            for d in Delivery.objects.filter(pk__in=delivery_ids).select_related("workspace")
        }
        link_ids = {int(r["l"]) for r in records if r.get("k") == "c" and r.get("l")}
        links = set(TemplateLink.objects.filter(pk__in=link_ids).values_list("pk", flat=True))
        clicks = [r for r in records if r.get("k") == "c"]
        opens = [r for r in records if r.get("k") == "o"]
        _store_clicks(clicks, deliveries, links, report)
        _store_opens(opens, deliveries, report)


def _lock_deliveries(delivery_ids) -> None:
    """Hold, until the transaction ends, the ingestion lock of each delivery: another
    batch of the same deliveries waits, then sees this one's rows."""
    if connection.vendor != "postgresql":
        return  # SQLite: the write transactions (BEGIN IMMEDIATE) already take turns
    slots = sorted({delivery_id % LOCK_SLOTS for delivery_id in delivery_ids})
    with connection.cursor() as cursor:
        if len(slots) > MAX_SLOT_LOCKS:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [INGEST_LOCK, ALL_SLOTS])
            return
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", [INGEST_LOCK, ALL_SLOTS])
        # unnest yields the sorted array in order: every batch locks in the same order.
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(%s, slot)) FROM unnest(%s::int[]) AS slot",
            [INGEST_LOCK, slots],
        )


def _facts(record, delivery) -> ClickFacts:
    # As stored (user agent and method cut to their stored length), so a verdict made
    # now is the one a later batch makes again from the stored row.
    return ClickFacts(
        event_id=uuid.UUID(record["id"]).hex,
        delivery_id=delivery.pk,
        link_id=int(record.get("l") or 0),
        at=_at(record),
        delivered_at=delivery.sent_at,
        user_agent=str(record.get("ua") or "")[:MAX_USER_AGENT_LENGTH],
        method=str(record.get("m") or "GET")[:8],
        headers=record.get("hd") or {},
        honeypot=bool(record.get("h")),
    )


def _history_facts(event: ClickEvent, delivery) -> ClickFacts:
    # Request headers are not stored; a stored prefetch verdict stands for them.
    headers = {"Purpose": "prefetch"} if event.reason == Reason.PREFETCH else {}
    return ClickFacts(
        event_id=event.event_id.hex,
        delivery_id=event.delivery_id,
        link_id=event.link_id or 0,
        at=event.at,
        delivered_at=delivery.sent_at,
        user_agent=event.user_agent,
        method=event.method,
        headers=headers,
        honeypot=event.honeypot,
    )


def _store_clicks(records, deliveries, links, report: IngestReport) -> None:
    by_workspace = defaultdict(list)
    for record in records:
        delivery = deliveries.get(int(record["d"]))
        link_id = int(record.get("l") or 0)
        if delivery is None or (link_id and link_id not in links):
            report.dropped += 1
            continue
        by_workspace[delivery.workspace].append((record, delivery))
    for workspace, items in by_workspace.items():
        thresholds = _thresholds(workspace)
        batch = {}  # event_id -> (record, facts); a repeated event counts once
        for record, delivery in items:
            facts = _facts(record, delivery)
            batch.setdefault(facts.event_id, (record, facts))
        # Stored clicks within `reach` of a new one may change verdict; each of them is
        # judged over the clicks within `reach` of it: read twice as far.
        reach = verdict_reach(thresholds)
        first = min(facts.at for _, facts in batch.values())
        last = max(facts.at for _, facts in batch.values())
        stored = list(
            ClickEvent.objects.filter(
                delivery_id__in={facts.delivery_id for _, facts in batch.values()},
                at__gte=first - 2 * reach,
                at__lte=last + 2 * reach,
            )
        )
        known = {e.event_id.hex for e in stored}
        new = [(record, facts) for record, facts in batch.values() if facts.event_id not in known]
        history = [_history_facts(e, deliveries[e.delivery_id]) for e in stored]
        reasons = classify_clicks(history + [facts for _, facts in new], thresholds)
        affected = [e for e in stored if first - reach <= e.at <= last + reach]
        _reclassify(affected, reasons, report)
        rows = []
        for record, facts in new:
            reason = reasons[facts.event_id]
            report.verdicts[str(reason) or "reliable"] += 1
            rows.append(
                ClickEvent(
                    event_id=uuid.UUID(facts.event_id),
                    workspace_id=workspace.pk,
                    delivery_id=facts.delivery_id,
                    link_id=facts.link_id or None,
                    url=record.get("u", ""),
                    honeypot=facts.honeypot,
                    method=facts.method,
                    at=facts.at,
                    user_agent=facts.user_agent,
                    ip=record.get("ip", ""),
                    device=device_class(facts.user_agent),
                    reliable=reason == Reason.NONE,
                    reason=str(reason),
                )
            )
        created = _insert_new(ClickEvent, CLICK_COLUMNS, rows, ("delivery_id", "link_id", "at"))
        _log_changes(EventChange.Kind.CLICK, [row for row in created if row[1]])
        report.clicks += len(rows)


def _reclassify(stored, reasons, report: IngestReport) -> None:
    changed = []
    for event in stored:
        reason = reasons.get(event.event_id.hex)
        if reason is not None and str(reason) != event.reason:
            event.reason = str(reason)
            event.reliable = reason == Reason.NONE
            changed.append(event)
    ClickEvent.objects.bulk_update(changed, ["reason", "reliable"])
    _log_changes(
        EventChange.Kind.CLICK, [(e.delivery_id, e.link_id, e.at) for e in changed if e.link_id]
    )
    report.reclassified += len(changed)


def _log_changes(kind: str, events) -> None:
    """Tell the rollups which (delivery, link) pairs changed, from (delivery, link, at)
    of each stored or reclassified event: one row per pair, with its events' earliest
    time (the aggregator applies events later than all it has applied without reading
    the pair's history). Honeypot clicks are left out: they only serve the classifier
    and count in no metric."""
    earliest = {}
    for delivery, link, at in events:
        if (delivery, link) not in earliest or at < earliest[(delivery, link)]:
            earliest[(delivery, link)] = at
    if not earliest:
        return
    keys = sorted(earliest, key=lambda key: (key[0], key[1] or 0))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tracking_eventchange (kind, delivery_id, link_id, at) "
            "SELECT %s, * FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[])",
            [
                kind,
                [d for d, _ in keys],
                [link for _, link in keys],
                [earliest[key] for key in keys],
            ],
        )


# The stored columns of an event and their types, for _insert_new's arrays.
EVENT_COLUMNS = {
    "event_id": "uuid",
    "workspace_id": "bigint",
    "delivery_id": "bigint",
    "at": "timestamptz",
    "user_agent": "text",
    "ip": "text",
    "device": "text",
    "reliable": "boolean",
    "reason": "text",
}
CLICK_COLUMNS = EVENT_COLUMNS | {
    "link_id": "bigint",
    "url": "text",
    "honeypot": "boolean",
    "method": "text",
}


def _insert_new(model, columns: dict, events: list, returning: tuple) -> list[tuple]:
    """Insert the events that are not stored yet (an event read again has the same id
    and time) in one statement, each column one array: the ORM's bulk_create spent
    most of ingestion's time writing a statement with a parameter per value. Returns
    the `returning` columns of the rows inserted."""
    if not events:
        return []
    names = list(columns)
    arrays = [[getattr(event, name) for event in events] for name in names]
    unnest = ", ".join(f"%s::{kind}[]" for kind in columns.values())
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {model._meta.db_table} ({', '.join(names)}, ingested_at) "  # noqa: S608 (names are ours)
            f"SELECT *, now() FROM unnest({unnest}) "
            f"ON CONFLICT DO NOTHING RETURNING {', '.join(returning)}",
            arrays,
        )
        return cursor.fetchall()


def _store_opens(records, deliveries, report: IngestReport) -> None:
    rows = []
    for record in records:
        delivery = deliveries.get(int(record["d"]))
        if delivery is None:
            report.dropped += 1
            continue
        user_agent = str(record.get("ua") or "")[:MAX_USER_AGENT_LENGTH]
        reason = classify_open(user_agent, record.get("ip") or None)
        rows.append(
            OpenEvent(
                event_id=uuid.UUID(record["id"]),
                workspace_id=delivery.workspace_id,
                delivery_id=delivery.pk,
                at=_at(record),
                user_agent=user_agent,
                ip=record.get("ip", ""),
                device=device_class(user_agent),
                reliable=reason == Reason.NONE,
                reason=str(reason),
            )
        )
    created = _insert_new(OpenEvent, EVENT_COLUMNS, rows, ("delivery_id", "at"))
    _log_changes(EventChange.Kind.OPEN, [(d, None, at) for d, at in created])
    report.opens += len(rows)
