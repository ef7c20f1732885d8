"""Move spooled events into the database, classified. Exactly once.

Each claimed spool file is stored in one transaction with INSERT … ON CONFLICT
(event_id) DO NOTHING, and deleted only after the commit; a crash in between makes
the next run read the file again and insert nothing twice. Several ingesters may
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
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction
from django_scopes import scopes_disabled

from campaigns.models import Delivery, TemplateLink, Workspace
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
from tracking.spool import claim_files, read_records, release

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


def ingest_spool(directory=None) -> IngestReport:
    """Store every complete spool file's events; returns what was done, and for each
    file with lines that were not whole events, exactly what was skipped (also logged
    at ERROR; the lines are kept in the spool's bad/ directory)."""
    report = IngestReport()
    for path, fd in claim_files(directory or settings.TRACKING_SPOOL_DIR):
        try:
            spooled = read_records(fd)
            store_records(spooled.records, report)
        except BaseException:
            os.close(fd)  # the file stays; the next run reads it again
            raise
        release(path, fd, spooled.bad)
        report.files += 1
        report.bad_lines += len(spooled.bad)
        report.bad_bytes += spooled.bad_bytes
        if loss := spooled.loss(path.name):
            report.lost.append(loss)
            log.error("tracking spool %s: %s; kept in bad/%s", path.parent, loss, path.name)
    if report.files:
        events_stored.send(sender=ingest_spool, report=report)
    return report


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
        created = ClickEvent.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        _log_changes(
            EventChange.Kind.CLICK,
            [(e.delivery_id, e.link_id, e.at) for e in created if e.link_id],
        )
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
    EventChange.objects.bulk_create(
        [
            EventChange(kind=kind, delivery_id=d, link_id=link, at=at)
            for (d, link), at in earliest.items()
        ],
        batch_size=1000,
    )


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
    OpenEvent.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    _log_changes(EventChange.Kind.OPEN, [(e.delivery_id, None, e.at) for e in rows])
    report.opens += len(rows)
