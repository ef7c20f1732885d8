"""The aggregator: applies tracking's change log to the rollups (clickmap/models.py).

Each batch runs in one transaction: take change rows (skipping rows another worker
holds), bring every touched pair and recipient up to date, apply the differences to the
per-link and per-email counters, delete the change rows. A pair or recipient whose
changes all come after its stored state takes the in-order fast path
(clickmap/fast_path.py: its new events applied to that state, no history read); the
others are recomputed from all their raw events. So:

- exact: a contribution is either recomputed from all its raw events or extended by
  events later than all it holds, and the stored rows are always what was added;
- idempotent: a change applied twice recomputes the same values (or finds no event
  after the state), adds nothing;
- safe with several workers: rows are locked in one global order (pairs, recipients,
  link counters, email counters; each by key), and a killed worker's transaction rolls
  back whole;
- parallel without waiting: Celery's runs (`aggregate_free_shards`) split the change log
  by customer into shards, each drained by one run at a time, so overlapping runs share
  the work instead of queueing on each other's pair locks;
- incremental: the cost follows the changed pairs, not the history.

A batch is a handful of set-based statements (the pairs' clicks are read through the
index clickmap_click_pair_idx, in window order, and the counted-click flags come from
window functions), and `recompute` rebuilds every table with INSERT … SELECT.
docs/aggregation.md follows one event through them to the dashboard's numbers.
"""

import datetime
import threading
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from django.conf import settings
from django.db import connection, connections, transaction
from django_scopes import scopes_disabled

from campaigns.models import Delivery
from clickmap import fast_path, segment_rollups, spans
from clickmap.counters import add_counters
from clickmap.models import (
    COUNTERS,
    EMAIL_COUNTERS,
    LINK_COUNTERS,
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
from clickmap.statements import fetch_typed, temp_table
from tracking.models import ClickEvent, EventChange, OpenEvent

# Change rows per batch: a bigger batch recomputes a pair or recipient named by several
# ingested files once, and its statements cost less per row (at 100k new clicks, 50k
# rows a batch took 31 s where 10k took 46 s); its locks are held a few seconds.
BATCH_SIZE = 50_000
BATCH_WORK_MEM = "64MB"
RECOMPUTE_WORK_MEM = "256MB"
RECOMPUTE_MAINTENANCE_WORK_MEM = "1GB"


# Advisory lock key (the two-int space) of the change log's shards: classid, shard number;
# and, with MEMBERSHIP_TURN for number, of the run applying the segments' membership log.
SHARD_LOCK = 0x636D  # "cm"
MEMBERSHIP_TURN = -1


@dataclass
class AggregateReport:
    changes: int = 0
    pairs: int = 0
    recipients: int = 0
    batches: int = 0
    memberships: int = 0  # membership log entries applied (clickmap/segment_rollups.py)
    fast_pairs: int = 0  # pairs applied in order from their state (clickmap/fast_path.py)
    fast_recipients: int = 0
    busy_shards: int = 0  # left to the runs that held them (aggregate_free_shards)
    # The largest change id applied so far: the run's next batch starts after it, so it
    # does not walk again over the rows it deleted (rows another worker held when they
    # were passed are left to a later run).
    applied_up_to: int = field(default=0, repr=False, compare=False)

    def add(self, other: "AggregateReport") -> None:
        for name in (
            "changes",
            "pairs",
            "recipients",
            "batches",
            "memberships",
            "busy_shards",
            "fast_pairs",
            "fast_recipients",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def aggregate(
    batch_size: int = BATCH_SIZE, max_batches: int | None = None, shard: tuple | None = None
) -> AggregateReport:
    """Apply the change log until it is empty (or `max_batches` were applied).

    shard: (number, of): just the change rows of the customers in that
    shard (see `aggregate_free_shards`, which applies the segments' membership log).
    """
    report = AggregateReport()
    with scopes_disabled():
        if not shard:
            report.memberships = segment_rollups.refresh()
        while max_batches is None or report.batches < max_batches:
            if not apply_batch(batch_size, report, shard):
                if not report.applied_up_to:
                    break
                # Once more from the start, for rows another worker held when passed.
                report.applied_up_to = 0
                continue
            report.batches += 1
    return report


def aggregate_free_shards(batch_size: int = BATCH_SIZE) -> AggregateReport:
    """What Celery runs: `aggregate` each shard of the change log (its rows split by
    customer into settings.AGGREGATE_SHARDS) that no other run holds, under a session
    advisory lock.

    Beat starts a run every few seconds, however long the last one takes. Overlapping
    runs so drain different customers side by side (no two ever touch the same pair or
    recipient), and a run that finds every shard taken returns at once instead of
    waiting on row locks, which would hold its worker from ingestion and previews. Each
    run drains every shard it can take, so one worker alone still covers them all.
    The segments' membership log is applied first, by one run at a time (the same kind
    of lock) and under no shard: a big segment's build, many transactions long
    (clickmap/segment_rollups.py), holds up no shard, whose events other runs go on
    applying between its transactions.
    Inside a transaction it is `aggregate`.
    """
    if _single_run():
        return aggregate(batch_size)
    shards = settings.AGGREGATE_SHARDS
    report = AggregateReport()
    with connection.cursor() as cursor, _shard_taken(cursor, MEMBERSHIP_TURN) as taken:
        if taken:
            report.memberships = segment_rollups.refresh()
    for number in range(shards):
        with connection.cursor() as cursor, _shard_taken(cursor, number) as taken:
            if taken:
                report.add(aggregate(batch_size, shard=(number, shards)))
            else:
                report.busy_shards += 1
    return report


def aggregate_now(batch_size: int = BATCH_SIZE) -> AggregateReport:
    """Bring the rollups up to date now (`manage.py aggregate`):
    settings.AGGREGATE_SHARDS runs of `aggregate_free_shards` at once, each in a thread
    with its own connection, as that many Celery workers would; inside a transaction,
    `aggregate`."""
    runs = settings.AGGREGATE_SHARDS
    if _single_run() or runs < 2:
        return aggregate(batch_size)
    reports, errors = [], []

    def run():
        try:
            reports.append(aggregate_free_shards(batch_size))
        except Exception as error:  # raised again below, in the caller's thread
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, name=f"aggregate-{n}") for n in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    report = AggregateReport()
    for each in reports:
        report.add(each)
    report.busy_shards = 0  # held by these runs themselves
    return report


def _single_run() -> bool:
    # Inside a caller's transaction other connections would not see its writes, and
    # session locks would outlive it.
    return connection.in_atomic_block


@contextmanager
def _shard_taken(cursor, number: int):
    """Whether this session took shard `number` (or MEMBERSHIP_TURN), never waiting for
    it, held until the block ends."""
    taken = _fetch(cursor, "SELECT pg_try_advisory_lock(%s, %s)", [SHARD_LOCK, number])[0][0]
    try:
        yield taken
    finally:
        if taken:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [SHARD_LOCK, number])


@transaction.atomic
def apply_batch(
    batch_size: int,
    report: AggregateReport,
    shard: tuple | None = None,
    deliveries: list[int] | None = None,
) -> int:
    """Apply up to `batch_size` change rows (of the customers in `shard`, or of the
    `deliveries`, when given) in one transaction; returns how many.

    Every pair and recipient the rows name is recomputed from its raw events under a row
    lock and the difference to its stored contribution is added to the link and email
    counters, so the result is exact and applying a row again changes nothing.
    """
    return _apply_batch_sql(batch_size, report, shard, deliveries)


@transaction.atomic
def take_out(**deliveries) -> AggregateReport:
    """Delete the click and open events of the deliveries (a filter: customer_id__in=…
    or pk__in=…) and apply the change log's rows of those deliveries alone, so their
    pairs and recipients are recomputed with nothing left and every counter, day row,
    span and segment rollup loses what they added; then delete the deliveries. Other
    customers' pending changes stay in the log for the aggregator. Run before customers
    or deliveries are deleted (clickmap/apps.py): the deliveries still name the pairs to
    recompute, and deleting them first would leave the counters counting events that no
    longer exist."""
    with scopes_disabled():
        chosen = Delivery.objects.filter(**deliveries)
        ids = list(chosen.values_list("pk", flat=True))
        clicks = ClickEvent.objects.filter(delivery__in=chosen.values("pk"))
        opens = OpenEvent.objects.filter(delivery__in=chosen.values("pk"))
        changes = [
            EventChange(kind=EventChange.Kind.CLICK, delivery_id=delivery, link_id=link)
            for delivery, link in clicks.values_list("delivery_id", "link_id").distinct()
        ] + [
            EventChange(kind=EventChange.Kind.OPEN, delivery_id=delivery)
            for delivery in opens.values_list("delivery_id", flat=True).distinct()
        ]
        clicks.delete()
        opens.delete()
        EventChange.objects.bulk_create(changes, batch_size=1000)
        report = AggregateReport()
        while apply_batch(BATCH_SIZE, report, deliveries=ids):
            report.batches += 1
        # The deliveries now, while their customers' segment memberships are still there
        # to take them out of each segment's sent and delivered counts (database triggers).
        chosen._taken_out = True  # nothing left to take out (clickmap/apps.py)
        chosen.delete()
    return report


@transaction.atomic
def recompute() -> AggregateReport:
    """Rebuild every rollup from the raw events (for a changed window setting, or a check).

    Pending change rows are consumed: the rebuild covers their events. The rebuild holds
    the change log exclusively (aggregators and ingestion wait for it; the click
    redirect does not). It builds the new tables beside the live ones, which dashboards
    go on reading, and swaps them in at its end; from then until it commits, dashboards
    wait, and so do writes to the tables the rollups reference (workspaces, variants,
    links) while their foreign keys are checked. Returns what the rebuild stands for: one
    batch of every pair and recipient.
    """
    with scopes_disabled():
        return _recompute_sql()


# A pair's state for the fast path (clickmap/fast_path.py): its last click's time and its
# last counted click's, all and reliable; per cell, and the pair's is its cells' latest.
PAIR_STATE = ("last_at", "counted_at_all", "counted_at_rel")
STATE_SQL = """max(at) AS last_at, max(at) FILTER (WHERE counted_all) AS counted_at_all,
               max(at) FILTER (WHERE counted_rel) AS counted_at_rel"""


def _cells_sql(events: str, window_mode: bool, key: tuple = ("delivery_id", "link_id")) -> str:
    """A SELECT of (*key, day, device, *COUNTERS, *PAIR_STATE) over `events`: each pair's
    clicks counted per UTC day and device, with the cell's last click and last counted
    clicks (the pair's, for the fast path, are the latest of its cells').

    `events` is a SELECT of clicks with the `key` columns (naming the pair), at, id,
    reliable, device and hours (the workspace's window). A click is *counted*
    (docs/metrics.md, unique clicks) in "ever" mode when it is the pair's first click
    (reliable-only: its first reliable click); in window mode when no counted click of
    the pair lies within `hours` before it (reliable-only counts chain over reliable
    clicks alone): exactly when the running clickmap_window_last changes at its row.
    """
    keys = _listed(key, "e.")
    day = "(e.at AT TIME ZONE 'UTC')::date"
    pair = f"PARTITION BY {keys} ORDER BY e.at, e.id"
    if window_mode:
        flags = f"""
            SELECT {keys}, e.at, e.day, e.device, e.reliable,
                   e.last_all IS DISTINCT FROM lag(e.last_all) OVER w AS counted_all,
                   e.reliable AND e.last_rel IS DISTINCT FROM lag(e.last_rel) OVER w
                       AS counted_rel
            FROM (SELECT {keys}, e.at, e.id, {day} AS day, e.device, e.reliable,
                         clickmap_window_last(e.at, e.hours) OVER w AS last_all,
                         clickmap_window_last(e.at, e.hours) FILTER (WHERE e.reliable) OVER w
                             AS last_rel
                  FROM ({events}) e WINDOW w AS ({pair})) e
            WINDOW w AS ({pair})"""
    else:
        flags = f"""
            SELECT {keys}, e.at, {day} AS day, e.device, e.reliable,
                   row_number() OVER w = 1 AS counted_all,
                   e.reliable AND count(*) FILTER (WHERE e.reliable) OVER w = 1 AS counted_rel
            FROM ({events}) e WINDOW w AS ({pair})"""
    return f"""
        SELECT {_listed(key)}, day, device,
               count(*) AS total_all,
               count(*) FILTER (WHERE reliable) AS total_rel,
               count(*) FILTER (WHERE counted_all) AS window_all,
               count(*) FILTER (WHERE counted_rel) AS window_rel,
               {STATE_SQL}
        FROM ({flags}) f
        GROUP BY {_listed(key)}, day, device"""


def _fetch(cursor, sql: str, params=None) -> list:
    cursor.execute(sql, params)
    return cursor.fetchall() if cursor.description else []


def _commit_without_waiting(cursor) -> None:
    """Let this transaction's commit return before its WAL reaches the disk, when the
    transaction is ours alone: a crash then loses it whole (rollups and consumed change
    rows together), which leaves the rollups as they were and the change rows to apply."""
    if not connection.savepoint_ids:  # not inside a caller's transaction
        cursor.execute("SET LOCAL synchronous_commit = off")


@contextmanager
def _settings(cursor, **values):
    """Run the block with these server settings (SET LOCAL), then put back what they
    were, so an enclosing transaction (a test, a request) keeps its own."""
    names = list(values)
    before = _fetch(cursor, f"SELECT {_listed(['current_setting(%s)'] * len(names))}", names)[0]
    change = _listed(["set_config(%s, %s, true)"] * len(names))
    cursor.execute(f"SELECT {change}", [v for n in names for v in (n, str(values[n]))])
    yield
    cursor.execute(
        f"SELECT {change}", [v for n, b in zip(names, before, strict=True) for v in (n, b)]
    )


# The shard of a change row: its delivery's customer, hashed (customer ids need not be
# spread evenly). Pairs and recipients belong to one customer, so to one shard.
SHARD_OF_CHANGE = """
    CROSS JOIN LATERAL (SELECT d.customer_id FROM campaigns_delivery d
                        WHERE d.id = c.delivery_id OFFSET 0) d
    WHERE (hashint8(d.customer_id) & 2147483647) %% %s = %s AND"""


def _apply_batch_sql(
    batch_size: int, report: AggregateReport, shard: tuple | None, deliveries: list | None
) -> int:
    # The batch's sets are CTEs whose sizes the planner cannot know: lookups into the
    # tables are written as LATERAL index walks, and joins between the sets are hashed
    # (no nested loops over CTE scans). Plans are cheap to run, too cheap to compile
    # (JIT); a big batch's clicks should sort in memory.
    with (
        connection.cursor() as cursor,
        _settings(cursor, jit="off", work_mem=BATCH_WORK_MEM, enable_nestloop="off"),
    ):
        _commit_without_waiting(cursor)
        segment_rollups.lock_for_batch(cursor)
        # Claim and delete the rows in one statement; the deletion commits with the batch.
        if deliveries is not None:
            in_shard, chosen = "WHERE c.delivery_id = ANY(%s::bigint[]) AND", (deliveries,)
        elif shard:
            in_shard, chosen = SHARD_OF_CHANGE, tuple(reversed(shard))
        else:
            in_shard, chosen = "WHERE", ()
        changes = _fetch(
            cursor,
            f"""
            WITH claimed AS (
                DELETE FROM tracking_eventchange
                WHERE id = ANY(ARRAY(SELECT c.id FROM tracking_eventchange c {in_shard} c.id > %s
                                     ORDER BY c.id LIMIT %s FOR UPDATE OF c SKIP LOCKED))
                RETURNING id, kind, delivery_id, link_id, at)
            SELECT c.id, c.kind, c.delivery_id, c.link_id, c.at, d.workspace_id, d.variant_id,
                   d.customer_id, w.unique_window_hours
            FROM claimed c
            LEFT JOIN LATERAL (
                SELECT d.workspace_id, d.variant_id, d.customer_id FROM campaigns_delivery d
                WHERE d.id = c.delivery_id OFFSET 0) d ON true
            LEFT JOIN campaigns_workspace w ON w.id = d.workspace_id""",
            [*chosen, report.applied_up_to, batch_size],
        )
        if not changes:
            return 0
        pairs: dict[tuple, fast_path.PairChange] = {}  # (variant, link, customer) ->
        recipients: dict[tuple, fast_path.RecipientChange] = {}  # (variant, customer) ->
        for change in changes:
            _, kind, delivery_id, link_id, at, workspace_id, variant_id, customer_id, hours = change
            if workspace_id is None:
                continue  # the delivery was deleted with its events
            recipient = recipients.setdefault(
                (variant_id, customer_id), fast_path.RecipientChange(workspace_id, delivery_id)
            )
            recipient.saw(at)
            if kind == EventChange.Kind.CLICK:
                recipient.clicks = True
                if link_id:
                    key = (variant_id, link_id, customer_id)
                    pair = pairs.setdefault(
                        key, fast_path.PairChange(workspace_id, delivery_id, hours, at)
                    )
                    if at is None or pair.earliest is None:
                        pair.earliest = None
                    else:
                        pair.earliest = min(pair.earliest, at)
            else:
                recipient.opens = True
        deltas = fast_path.Deltas()
        fast_pairs, slow_pairs = _apply_pairs(cursor, pairs, deltas)
        fast_recipients = _apply_recipients(cursor, recipients, fast_pairs, slow_pairs, deltas)
        # The counters every batch adds to come last, in one table order: their rows stay
        # locked only for the end of the transaction, so another shard's batch waits for
        # them moments, not for this batch's recipient statements.
        add_counters(
            "clickmap_linkrollup",
            ("workspace_id", "variant_id", "link_id"),
            LINK_COUNTERS,
            [(*key, *values) for key, values in deltas.links.items()],
        )
        add_counters(
            "clickmap_emailrollup",
            ("workspace_id", "variant_id"),
            EMAIL_COUNTERS,
            [(*key, *values) for key, values in deltas.emails.items()],
        )
        segment_rollups.add_batch_deltas(deltas.segment_rows())
        spans.add_deltas_sql(
            {key: values for key, values in deltas.link_days.items()},
            deltas.link_spans,
            deltas.email_spans,
            deltas.segment_email_spans,
        )
    report.fast_pairs += len(fast_pairs)
    report.fast_recipients += fast_recipients
    report.applied_up_to = max(change[0] for change in changes)
    report.changes += len(changes)
    report.pairs += len(pairs)
    report.recipients += len(recipients)
    return len(changes)


def _apply_pairs(cursor, pairs: dict, deltas: fast_path.Deltas) -> tuple[dict, dict]:
    """Lock the batch's pairs (creating missing rows) in key order and apply them: those
    whose changes all come after their stored state by the fast path, the others by a
    recompute from their clicks. Adds what they change to `deltas`; returns the fast
    pairs' results {key: PairResult} and, for the recipients of recomputed pairs, the
    clicked flags (all, rel) those pairs show {(variant, customer): (bool, bool)}."""
    if not pairs:
        return {}, {}
    keys = sorted(pairs)
    _lock_rows_sql(
        cursor,
        "clickmap_pairrollup",
        ("variant_id", "link_id", "customer_id"),
        [(pairs[k].workspace_id, *k) for k in keys],
        dict.fromkeys(COUNTERS, "0"),
    )
    states = fast_path.pair_states(cursor, keys)
    fast = [k for k in keys if states[k].applies(pairs[k])]
    results = {}
    if fast:
        days, clicks = fast_path.pair_news(cursor, [(states[k], pairs[k], k[1]) for k in fast])
        for k in fast:
            state = states[k]
            results[k] = fast_path.apply_pair(
                state, pairs[k].hours, days.get(state.id, {}), clicks.get(state.id, [])
            )
        fast_path.write_pairs(cursor, sorted(results.items()))
        segments_of = fast_path.members(cursor, {k[2] for k in fast})
        for (variant, link, customer), result in results.items():
            _fast_pair_deltas(deltas, result, variant, link, segments_of.get(customer, ()))
    slow = {k: pairs[k] for k in keys if k not in results}
    proofs = {}
    if slow:
        recomputed = _recompute_pairs_sql(cursor, slow)
        for r in recomputed.links:
            deltas.add(deltas.links, (r.workspace_id, r.variant_id, r.link_id), r[3:])
        for r in recomputed.link_days:
            deltas.add(deltas.link_days, r[:5], r[5:])
        for r in recomputed.link_spans:
            deltas.link_spans[r[:-1]] += r.n
        for table, rows in (
            ("clickmap_segmentlinkrollup", recomputed.segment_links),
            ("clickmap_segmentlinkdayrollup", recomputed.segment_link_days),
            ("clickmap_segmentlinkspanrollup", recomputed.segment_link_spans),
        ):
            width = len(segment_rollups.SEGMENT_KEYS[table][0])
            for row in rows:
                deltas.add_segment(table, row[:width], row[width:])
        unproven = {
            (r.variant_id, r.customer_id): (r.clicked_all, r.clicked_rel)
            for r in recomputed.unproven
        }
        for variant, _, customer in slow:
            proofs[(variant, customer)] = unproven.get((variant, customer), (True, True))
    return results, proofs


def _fast_pair_deltas(deltas, result, variant: int, link: int, segments) -> None:
    """What a fast pair adds: its cells to the link and its day rows, its spans, and the
    link's unique clickers when it turns clicked; the same to its segments'."""
    w = result.state.workspace_id
    added = [sum(cell[i] for cell in result.cells.values()) for i in range(4)]
    before = (result.state.total_all - added[0], result.state.total_rel - added[1])
    unique = [int(before[0] == 0 and added[0] > 0), int(before[1] == 0 and added[1] > 0)]
    for owner, table in (((w,), None), *(((w, s), "segment") for s in segments)):
        key = (*owner, variant, link)
        deltas.add(
            deltas.segments["clickmap_segmentlinkrollup"] if table else deltas.links,
            key,
            [*added, *unique],
        )
        for (day, device), values in result.cells.items():
            deltas.add(
                deltas.segments["clickmap_segmentlinkdayrollup"] if table else deltas.link_days,
                (*key, day, device),
                values,
            )
        for span, n in result.spans.items():
            if table:
                deltas.add(deltas.segments["clickmap_segmentlinkspanrollup"], (*key, *span), [n])
            else:
                deltas.link_spans[(*key, *span)] += n


def _apply_recipients(
    cursor, recipients: dict, fast_pairs: dict, proofs: dict, deltas: fast_path.Deltas
) -> int:
    """Lock the batch's recipients in key order and apply them, by the fast path when
    their changes and every event to apply come after their stored state and none of
    their pairs here was recomputed, else by the recompute. Returns how many went fast."""
    if not recipients:
        return 0
    keys = sorted(recipients)
    _lock_rows_sql(
        cursor,
        "clickmap_recipientrollup",
        ("variant_id", "customer_id"),
        [(recipients[k].workspace_id, *k) for k in keys],
        dict.fromkeys(RECIPIENT_TO_EMAIL, "false"),
    )
    states = fast_path.recipient_states(cursor, keys)
    recomputed_pairs = set(proofs)  # recipients with a pair recomputed in this batch
    clicks_of = defaultdict(list)
    for (variant, _, customer), result in fast_pairs.items():
        clicks_of[(variant, customer)].extend(result.clicks)
        shown = proofs.get((variant, customer), (False, False))
        proofs[(variant, customer)] = (shown[0] or result.proof[0], shown[1] or result.proof[1])
    candidates = [
        (k, states[k], recipients[k])
        for k in keys
        if k not in recomputed_pairs and states[k].applies(recipients[k])
    ]
    results = {}
    if candidates:
        days, opens = fast_path.recipient_news(cursor, candidates)
        for key, state, _ in candidates:
            events = [
                fast_path.RecipientEvent(c.at, True, c.reliable, c.device)
                for c in clicks_of.get(key, ())
            ] + opens.get(key, [])
            events.sort(key=lambda e: e.at)
            if state.last_at is not None and events and events[0].at <= state.last_at:
                continue  # an event not after the state: recomputed
            results[key] = fast_path.apply_recipient(state, days.get(key, {}), events)
        fast_path.write_recipients(cursor, sorted(results.items()))
        segments_of = fast_path.members(cursor, {k[1] for k in results})
        for (variant, customer), result in results.items():
            w = result.state.workspace_id
            deltas.add(deltas.emails, (w, variant), result.turned_on)
            for segment in segments_of.get(customer, ()):
                deltas.add_segment(
                    "clickmap_segmentemailrollup", (w, segment, variant), result.turned_on
                )
            for (device, kind, reliable, day, since), n in result.spans.items():
                span = (kind, device, reliable, day, since)
                deltas.email_spans[(w, variant, *span)] += n
                for segment in segments_of.get(customer, ()):
                    deltas.segment_email_spans[(w, segment, variant, *span)] += n
    slow = {k: recipients[k] for k in keys if k not in results}
    if slow:
        for key, change in slow.items():
            if change.clicks:
                change.proof = proofs.get(key, (False, False))
        emails, segment_emails = _recompute_recipients_sql(cursor, slow)
        for w, v, *values in emails:
            deltas.add(deltas.emails, (w, v), values)
        for w, segment, v, *values in segment_emails:
            deltas.add_segment("clickmap_segmentemailrollup", (w, segment, v), values)
        email_spans, segment_email_spans = spans.recipient_days_sql(
            cursor, {k: (c.workspace_id, c.delivery_id) for k, c in slow.items()}
        )
        deltas.email_spans.update(email_spans)
        deltas.segment_email_spans.update(segment_email_spans)
        _recipients_last_at_sql(cursor, slow, [states[k].id for k in sorted(slow)])
    return len(results)


def _recipients_last_at_sql(cursor, recipients: dict, ids: list) -> None:
    """Store recomputed recipients' last_at: their last click (their pairs' last_at) or
    open. Read after their rows were (so never earlier than what they count: an event
    committed in between is not after it, and its change row has it recomputed)."""
    keys = sorted(recipients)
    cursor.execute(
        """UPDATE clickmap_recipientrollup r
           SET last_at = greatest(
               (SELECT max(p.last_at) FROM clickmap_pairrollup p
                WHERE p.customer_id = t.customer_id AND p.variant_id = t.variant_id),
               (SELECT max(o.at) FROM tracking_openevent o WHERE o.delivery_id = t.delivery_id))
           FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[])
                AS t(variant_id, customer_id, delivery_id)
           WHERE r.variant_id = t.variant_id AND r.customer_id = t.customer_id
           AND r.id = ANY(%s::bigint[])""",
        [
            [k[0] for k in keys],
            [k[1] for k in keys],
            [recipients[k].delivery_id for k in keys],
            ids,  # the rows by their key: no join over the whole table
        ],
    )


def _lock_rows_sql(cursor, table: str, key: tuple, rows: list, zeros: dict) -> None:
    """Create missing rows (with `zeros`) and lock every row of `rows` ((workspace, *key)
    tuples) in key order, in one statement, so inserting and locking follow one order."""
    columns = ("workspace_id", *key)
    cursor.execute(
        f"""
        INSERT INTO {table} AS r ({", ".join((*columns, *zeros))})
        SELECT *, {", ".join(zeros.values())}
        FROM unnest({", ".join("%s::bigint[]" for _ in columns)}) AS t({", ".join(columns)})
        ORDER BY {", ".join(key)}
        ON CONFLICT ({", ".join(key)}) DO UPDATE SET workspace_id = r.workspace_id
        WHERE false""",  # noqa: S608 (names are ours)
        [list(column) for column in zip(*rows, strict=True)],
    )


def _listed(names, prefix: str = "", suffix: str = "") -> str:
    return ", ".join(f"{prefix}{name}{suffix}" for name in names)


class LinkDelta(NamedTuple):
    """What the recomputed pairs add to one link's row (LinkRollup, LINK_COUNTERS)."""

    workspace_id: int
    variant_id: int
    link_id: int
    total_all: int
    total_rel: int
    window_all: int
    window_rel: int
    unique_all: int
    unique_rel: int


class SegmentLinkDelta(NamedTuple):
    """The same for one segment's link row (SegmentLinkRollup)."""

    workspace_id: int
    segment_id: int
    variant_id: int
    link_id: int
    total_all: int
    total_rel: int
    window_all: int
    window_rel: int
    unique_all: int
    unique_rel: int


class RecipientClicks(NamedTuple):
    """What a recipient's recomputed pairs show: any click, any reliable click (listed
    only when not both, so its other pairs may have to be read)."""

    variant_id: int
    customer_id: int
    clicked_all: bool
    clicked_rel: bool


class LinkDayDelta(NamedTuple):
    """What the recomputed pairs add to one link day row (LinkDayRollup, COUNTERS)."""

    workspace_id: int
    variant_id: int
    link_id: int
    day: datetime.date
    device: str
    total_all: int
    total_rel: int
    window_all: int
    window_rel: int


class SegmentLinkDayDelta(NamedTuple):
    """The same for one segment's link day row (SegmentLinkDayRollup)."""

    workspace_id: int
    segment_id: int
    variant_id: int
    link_id: int
    day: datetime.date
    device: str
    total_all: int
    total_rel: int
    window_all: int
    window_rel: int


class LinkSpanDelta(NamedTuple):
    """What the recomputed pairs add to one link span (LinkSpanRollup.n)."""

    workspace_id: int
    variant_id: int
    link_id: int
    device: str
    reliable: bool
    day: datetime.date
    since: datetime.date
    n: int


class SegmentLinkSpanDelta(NamedTuple):
    """The same for one segment's link span (SegmentLinkSpanRollup.n)."""

    workspace_id: int
    segment_id: int
    variant_id: int
    link_id: int
    device: str
    reliable: bool
    day: datetime.date
    since: datetime.date
    n: int


@dataclass
class PairRecompute:
    """What `_recompute_pairs_sql` returns: the differences its pairs make, each kind
    from its own statement."""

    links: list  # [LinkDelta]
    unproven: list  # [RecipientClicks]
    link_days: list  # [LinkDayDelta]
    link_spans: list  # [LinkSpanDelta]
    segment_links: list  # [SegmentLinkDelta]
    segment_link_days: list  # [SegmentLinkDayDelta]
    segment_link_spans: list  # [SegmentLinkSpanDelta]


# The temporary tables of one `_recompute_pairs_sql` (docs/aggregation.md, "What each
# statement of a recompute does"), dropped at its end.
PAIR_TEMP_TABLES = (
    "batch_pair",
    "batch_member",
    "batch_cell",
    "batch_pair_new",
    "batch_old_day",
    "batch_day",
    "batch_span_from",
    "batch_signed",
    "batch_segment_signed",
)


def _recompute_pairs_sql(cursor, pairs: dict) -> PairRecompute:
    """Recompute the pairs' rows and day rows from their clicks, write what changed, and
    return the differences they make to the links, link days and link spans, the same
    per segment of their customers (clickmap/segment_rollups.py), and, for each
    recipient whose pairs here do not show both a click and a reliable click, what they
    do show.

    A sequence of statements in the caller's transaction (docs/aggregation.md, "The
    batch"), each reading the temporary tables of those before it: the tables are read
    once each (the pairs, locked by the caller; their clicks; their day rows; their
    customers' segments), and the writes and the differences come from those reads.
    """
    result = PairRecompute([], [], [], [], [], [], [])
    if not pairs:
        return result
    keys = sorted(pairs)  # locked by the caller
    # batch_pair: the pairs, with their stored counters and state (to tell what changed).
    temp_table(
        cursor,
        "batch_pair",
        f"""
        SELECT r.id, r.workspace_id, t.variant_id, t.link_id, t.customer_id,
               t.delivery_id, t.hours, {_listed(COUNTERS, "r.")}, {_listed(PAIR_STATE, "r.")}
        FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::int[])
             AS t(variant_id, link_id, customer_id, delivery_id, hours)
        CROSS JOIN LATERAL (
            SELECT r.id, r.workspace_id, {_listed(COUNTERS, "r.")},
                   {_listed(PAIR_STATE, "r.")}
            FROM clickmap_pairrollup r WHERE r.variant_id = t.variant_id
            AND r.link_id = t.link_id AND r.customer_id = t.customer_id OFFSET 0) r""",  # noqa: S608
        [
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [pairs[k].delivery_id for k in keys],
            [pairs[k].hours for k in keys],
        ],
    )
    # batch_member: the segments the pairs' customers are members of.
    temp_table(
        cursor,
        "batch_member",
        f"WITH {spans.MEMBERS_SQL.format(source='batch_pair')} SELECT * FROM member",
    )
    # batch_cell: each pair's day cells (day × device: counters and state) from its
    # clicks, one range of clickmap_click_pair_idx.
    events = """
        SELECT p.id AS pair_id, e.at, e.id, e.reliable, e.device, p.hours
        FROM batch_pair p CROSS JOIN LATERAL (
            SELECT e.at, e.id, e.reliable, e.device FROM tracking_clickevent e
            WHERE e.delivery_id = p.delivery_id AND e.link_id = p.link_id OFFSET 0) e
        WHERE (p.hours > 0) = {mode}"""
    modes = sorted({pairs[k].hours > 0 for k in keys})
    temp_table(
        cursor,
        "batch_cell",
        " UNION ALL ".join(
            _cells_sql(events.format(mode=mode), window_mode=mode, key=("pair_id",))
            for mode in modes
        ),
    )
    # batch_pair_new: each pair's new counters and state (its cells' sums and latest),
    # beside its old ones (o_…).
    temp_table(
        cursor,
        "batch_pair_new",
        f"""
        SELECT p.id, p.workspace_id, p.variant_id, p.link_id, p.customer_id,
               {", ".join(f"p.{c} AS o_{c}" for c in (*COUNTERS, *PAIR_STATE))},
               {", ".join(f"coalesce(s.{c}, 0)::int AS {c}" for c in COUNTERS)},
               {_listed(PAIR_STATE, "s.")}
        FROM batch_pair p LEFT JOIN (
            SELECT pair_id, {", ".join(f"sum({c}) AS {c}" for c in COUNTERS)},
                   {", ".join(f"max({c}) AS {c}" for c in PAIR_STATE)}
            FROM batch_cell GROUP BY pair_id) s ON s.pair_id = p.id""",  # noqa: S608
    )
    # batch_old_day: the pairs' stored day rows.
    temp_table(
        cursor,
        "batch_old_day",
        f"""
        SELECT x.* FROM batch_pair p CROSS JOIN LATERAL (
            SELECT x.id, x.pair_id, x.day, x.device, {_listed(COUNTERS, "x.")}
            FROM clickmap_pairdayrollup x WHERE x.pair_id = p.id OFFSET 0) x""",  # noqa: S608
    )
    # batch_day: new cells against stored day rows (a side NULL where there is none).
    temp_table(
        cursor,
        "batch_day",
        f"""
        SELECT o.id AS old_id, c.pair_id, c.day, c.device, {_listed(COUNTERS, "c.")},
               {", ".join(f"o.{c} AS o_{c}" for c in COUNTERS)},
               o.pair_id AS o_pair_id, o.day AS o_day
        FROM batch_cell c FULL JOIN batch_old_day o
          ON o.pair_id = c.pair_id AND o.day = c.day AND o.device = c.device""",  # noqa: S608
    )
    # batch_span_from: each pair's first day on which it turns clicked or not (on a
    # device, reliably or not): its spans before that day are the same before and after.
    temp_table(
        cursor,
        "batch_span_from",
        """
        SELECT coalesce(pair_id, o_pair_id) AS pair_id, min(coalesce(day, o_day)) AS from_day
        FROM batch_day
        WHERE (coalesce(total_all, 0) > 0) <> (coalesce(o_total_all, 0) > 0)
           OR (coalesce(total_rel, 0) > 0) <> (coalesce(o_total_rel, 0) > 0)
        GROUP BY 1""",
    )
    # The writes: the changed pair rows, and the day rows gone, changed and new.
    changed = " OR ".join(f"o_{c} IS DISTINCT FROM {c}" for c in COUNTERS)
    state_changed = " OR ".join(f"o_{c} IS DISTINCT FROM {c}" for c in PAIR_STATE)
    cursor.execute(
        f"""
        UPDATE clickmap_pairrollup r
        SET {", ".join(f"{c} = n.{c}" for c in (*COUNTERS, *PAIR_STATE))}
        FROM batch_pair_new n WHERE r.id = n.id
        AND r.id = ANY(ARRAY(SELECT id FROM batch_pair_new
                             WHERE {changed} OR {state_changed}))"""  # noqa: S608
    )
    cursor.execute(
        """DELETE FROM clickmap_pairdayrollup
           WHERE id = ANY(ARRAY(SELECT old_id FROM batch_day WHERE pair_id IS NULL))"""
    )
    cursor.execute(
        f"""
        UPDATE clickmap_pairdayrollup x SET {", ".join(f"{c} = d.{c}" for c in COUNTERS)}
        FROM batch_day d WHERE x.id = d.old_id
        AND x.id = ANY(ARRAY(SELECT old_id FROM batch_day
                             WHERE pair_id IS NOT NULL AND ({changed})))"""  # noqa: S608
    )
    cursor.execute(
        f"""
        INSERT INTO clickmap_pairdayrollup (pair_id, workspace_id, variant_id, link_id,
            customer_id, day, device, {_listed(COUNTERS)})
        SELECT d.pair_id, p.workspace_id, p.variant_id, p.link_id, p.customer_id, d.day,
               d.device, {_listed(COUNTERS, "d.")}
        FROM batch_day d JOIN batch_pair p ON p.id = d.pair_id WHERE d.old_id IS NULL
        ORDER BY p.variant_id, p.link_id, p.customer_id, d.day, d.device"""  # noqa: S608
    )
    # batch_signed: the pairs' cells, new (sign +1) and old (-1), for the day rows and
    # spans; batch_segment_signed: the same once per segment of the pair's customer.
    temp_table(
        cursor,
        "batch_signed",
        f"""
        SELECT 1 AS sign, p.workspace_id, p.variant_id, p.link_id, p.customer_id,
               c.pair_id, c.day, c.device, {_listed(COUNTERS, "c.")}
        FROM batch_cell c JOIN batch_pair p ON p.id = c.pair_id
        UNION ALL
        SELECT -1, p.workspace_id, p.variant_id, p.link_id, p.customer_id, o.pair_id,
               o.day, o.device, {_listed(COUNTERS, "o.")}
        FROM batch_old_day o JOIN batch_pair p ON p.id = o.pair_id""",  # noqa: S608
    )
    temp_table(
        cursor,
        "batch_segment_signed",
        """SELECT s.*, m.segment_id
           FROM batch_signed s JOIN batch_member m ON m.customer_id = s.customer_id""",
    )
    # The differences, one statement per kind.
    link_deltas = ", ".join(
        [
            *(f"sum({c} - o_{c})::bigint AS {c}" for c in COUNTERS),
            "sum((total_all > 0)::int - (o_total_all > 0)::int)::bigint AS unique_all",
            "sum((total_rel > 0)::int - (o_total_rel > 0)::int)::bigint AS unique_rel",
        ]
    )
    day_deltas = ", ".join(f"sum(sign * {c})::bigint AS {c}" for c in COUNTERS)
    result.links = fetch_typed(
        cursor,
        LinkDelta,
        f"""SELECT workspace_id, variant_id, link_id, {link_deltas}
            FROM batch_pair_new GROUP BY workspace_id, variant_id, link_id""",  # noqa: S608
    )
    result.unproven = fetch_typed(
        cursor,
        RecipientClicks,
        """SELECT variant_id, customer_id, bool_or(total_all > 0) AS clicked_all,
                  bool_or(total_rel > 0) AS clicked_rel
           FROM batch_pair_new GROUP BY variant_id, customer_id
           HAVING NOT (bool_or(total_all > 0) AND bool_or(total_rel > 0))""",
    )
    result.link_days = fetch_typed(
        cursor,
        LinkDayDelta,
        f"""SELECT workspace_id, variant_id, link_id, day, device, {day_deltas}
            FROM batch_signed GROUP BY workspace_id, variant_id, link_id, day, device""",  # noqa: S608
    )
    result.link_spans = fetch_typed(
        cursor,
        LinkSpanDelta,
        f"""SELECT workspace_id, variant_id, link_id, device, reliable, day, since,
                   sum(sign * n)::bigint AS n
            FROM ({spans.link_spans_sql("batch_signed", signed=True, from_days="batch_span_from")}) s
            GROUP BY workspace_id, variant_id, link_id, day, device, reliable, since
            HAVING sum(sign * n) <> 0""",  # noqa: S608
    )
    result.segment_links = fetch_typed(
        cursor,
        SegmentLinkDelta,
        f"""SELECT n.workspace_id, m.segment_id, n.variant_id, n.link_id, {link_deltas}
            FROM batch_pair_new n JOIN batch_member m ON m.customer_id = n.customer_id
            GROUP BY n.workspace_id, m.segment_id, n.variant_id, n.link_id""",  # noqa: S608
    )
    result.segment_link_days = fetch_typed(
        cursor,
        SegmentLinkDayDelta,
        f"""SELECT workspace_id, segment_id, variant_id, link_id, day, device, {day_deltas}
            FROM batch_segment_signed
            GROUP BY workspace_id, segment_id, variant_id, link_id, day, device""",  # noqa: S608
    )
    segment_spans = spans.link_spans_sql(
        "batch_segment_signed", by_segment=True, signed=True, from_days="batch_span_from"
    )
    result.segment_link_spans = fetch_typed(
        cursor,
        SegmentLinkSpanDelta,
        f"""SELECT workspace_id, segment_id, variant_id, link_id, device, reliable, day,
                   since, sum(sign * n)::bigint AS n
            FROM ({segment_spans}) s
            GROUP BY workspace_id, segment_id, variant_id, link_id, day, device, reliable,
                     since
            HAVING sum(sign * n) <> 0""",  # noqa: S608
    )
    cursor.execute(f"DROP TABLE {', '.join(PAIR_TEMP_TABLES)}")
    return result


RECIPIENT_TO_EMAIL = dict(zip(RECIPIENT_FLAGS, EMAIL_COUNTERS, strict=True))


def _recompute_recipients_sql(cursor, recipients: dict) -> tuple[list, list]:
    """Recompute the recipients' clicked/opened flags; returns the email deltas as
    (workspace, variant, *EMAIL_COUNTERS) rows, and the same per segment of the
    recipients as (workspace, segment, variant, *EMAIL_COUNTERS) rows.

    Clicked flags follow the pairs, and change only with a click change row; opened flags
    follow the open events and the clicked flags (a click implies an open:
    docs/metrics.md). A clicked flag that one of the batch's own
    pairs (locked, just recomputed) proves true needs no look at the other pairs.
    """
    if not recipients:
        return [], []
    keys = sorted(recipients)  # locked by the caller
    flags = tuple(RECIPIENT_TO_EMAIL)
    changed = " OR ".join(f"o_{f} IS DISTINCT FROM {f}" for f in flags)
    deltas = ", ".join(f"sum({f}::int - o_{f}::int)::bigint" for f in flags)
    proofs = [recipients[k].proof or (False, False) for k in keys]
    rows = _fetch(
        cursor,
        f"""
        WITH r AS MATERIALIZED (
            SELECT x.id, x.workspace_id, t.variant_id, t.customer_id, t.delivery_id,
                   t.clicks, t.opens, t.proof_all, t.proof_rel, {_listed(flags, "x.")}
            FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bool[], %s::bool[],
                        %s::bool[], %s::bool[])
                 AS t(variant_id, customer_id, delivery_id, clicks, opens, proof_all,
                      proof_rel)
            CROSS JOIN LATERAL (
                SELECT x.id, x.workspace_id, {_listed(flags, "x.")}
                FROM clickmap_recipientrollup x
                WHERE x.variant_id = t.variant_id AND x.customer_id = t.customer_id
                OFFSET 0) x),
        {spans.MEMBERS_SQL.format(source="r")},
        k AS MATERIALIZED (
            SELECT r.*,
                   CASE WHEN NOT r.clicks THEN r.clicked_all
                        ELSE r.proof_all OR c.clicked_all END AS new_clicked_all,
                   CASE WHEN NOT r.clicks THEN r.clicked_rel
                        ELSE r.proof_rel OR c.clicked_rel END AS new_clicked_rel
            FROM r
            CROSS JOIN LATERAL (
                SELECT coalesce(bool_or(p.total_all > 0), false) AS clicked_all,
                       coalesce(bool_or(p.total_rel > 0), false) AS clicked_rel
                FROM clickmap_pairrollup p
                WHERE r.clicks AND NOT (r.proof_all AND r.proof_rel)
                AND p.customer_id = r.customer_id AND p.variant_id = r.variant_id) c),
        -- A click implies an open (docs/metrics.md): opened = an open event or a click
        -- (reliable-only: a reliable open or a reliable click). A stored opened flag is
        -- the open events' alone where the stored clicked flag is off; the open events
        -- are read only where it is on and turns off, or the batch has opens.
        n AS MATERIALIZED (
            SELECT k.id, k.workspace_id, k.variant_id, k.customer_id,
                   {", ".join(f"k.{f} AS o_{f}" for f in flags)},
                   k.new_clicked_all AS clicked_all, k.new_clicked_rel AS clicked_rel,
                   k.new_clicked_all OR CASE WHEN w.read THEN o.opened_all
                                             ELSE k.opened_all END AS opened_all,
                   k.new_clicked_rel OR CASE WHEN w.read THEN o.opened_rel
                                             ELSE k.opened_rel END AS opened_rel
            FROM k
            CROSS JOIN LATERAL (
                SELECT k.opens OR (k.clicked_all AND NOT k.new_clicked_all)
                       OR (k.clicked_rel AND NOT k.new_clicked_rel) AS read) w
            CROSS JOIN LATERAL (
                SELECT count(*) > 0 AS opened_all,
                       coalesce(bool_or(o.reliable), false) AS opened_rel
                FROM tracking_openevent o WHERE w.read AND o.delivery_id = k.delivery_id) o),
        recipient_update AS (
            UPDATE clickmap_recipientrollup x SET {", ".join(f"{f} = n.{f}" for f in flags)}
            FROM n WHERE x.id = n.id
            AND x.id = ANY(ARRAY(SELECT id FROM n WHERE {changed})))
        SELECT n.workspace_id, NULL::bigint, n.variant_id, {deltas}
        FROM n GROUP BY n.workspace_id, n.variant_id
        UNION ALL
        SELECT n.workspace_id, m.segment_id, n.variant_id, {deltas}
        FROM n JOIN member m ON m.customer_id = n.customer_id
        GROUP BY n.workspace_id, m.segment_id, n.variant_id""",  # noqa: S608 (names are ours)
        [
            [k[0] for k in keys],
            [k[1] for k in keys],
            [recipients[k].delivery_id for k in keys],
            [recipients[k].clicks for k in keys],
            [recipients[k].opens for k in keys],
            [p[0] for p in proofs],
            [p[1] for p in proofs],
        ],
    )
    emails = [(w, v, *deltas) for w, segment, v, *deltas in rows if segment is None]
    return emails, [row for row in rows if row[1] is not None]


ROLLUP_MODELS = (
    PairDayRollup,
    PairRollup,
    LinkRollup,
    RecipientRollup,
    EmailRollup,
    LinkDayRollup,
    LinkSpanRollup,
    RecipientDayRollup,
    EmailSpanRollup,
)
ROLLUP_TABLES = tuple(model._meta.db_table for model in ROLLUP_MODELS)
REBUILT = "__rebuilt"  # the suffix of a table built beside its live one


def _recompute_sql() -> AggregateReport:
    """The rebuild: cells from every click in one pass over the pair index, then each
    table built beside the live one with CREATE TABLE … AS (which, unlike INSERT …
    SELECT, may run a parallel plan), and all swapped in at the end: the live tables are
    dropped and the new ones renamed and given the live ones' constraints, indexes,
    identity and storage settings under the same names, so the schema (and Django's
    model state) is as before. Until the swap, dashboards read the old rows."""
    with (
        connection.cursor() as cursor,
        _settings(
            cursor,
            work_mem=RECOMPUTE_WORK_MEM,
            maintenance_work_mem=RECOMPUTE_MAINTENANCE_WORK_MEM,
            jit="off",
        ),
    ):
        _commit_without_waiting(cursor)
        # Before the change log: a batch takes the segment lock before it waits for that.
        segment_rollups.lock_exclusively(cursor)
        # Aggregators and ingestion write the change log: holding it makes the rebuild
        # see a fixed set of events, and what arrives later waits in the log for it.
        cursor.execute("LOCK TABLE tracking_eventchange IN EXCLUSIVE MODE")
        pairs = _recompute_cells_sql(cursor)
        shapes = {}
        for table, select in _rebuild_selects():
            shapes[table] = _build_beside_sql(cursor, table, select)
        cursor.execute("DROP TABLE recompute_cell")
        cursor.execute("DELETE FROM tracking_eventchange")
        (recipients, opened) = _fetch(
            cursor,
            f"SELECT count(*), count(*) FILTER (WHERE opened_all) "
            f"FROM clickmap_recipientrollup{REBUILT}",
        )[0]
        # The swap, in one go: the live tables go (their rows were never read again).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # DROP refuses pending checks
        cursor.execute(f"DROP TABLE {', '.join(ROLLUP_TABLES)}")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        for table in ROLLUP_TABLES:
            _swap_in_sql(cursor, table, shapes[table])
        segment_rollups.rebuild(cursor)
    return AggregateReport(changes=pairs + opened, pairs=pairs, recipients=recipients, batches=1)


@dataclass
class TableShape:
    """What a table is beyond its rows, as PostgreSQL describes it."""

    columns: list  # (name, type, not null, identity) in column order
    constraints: list  # (name, kind, definition): primary, unique, check, foreign keys
    not_null: list  # (name, kind, definition) of NOT NULL constraints (PostgreSQL 18)
    indexes: list  # CREATE INDEX statements of the indexes no constraint owns
    options: list  # storage parameters (fillfactor)


def _shape(cursor, table: str) -> TableShape:
    columns = _fetch(
        cursor,
        """SELECT attname, format_type(atttypid, atttypmod), attnotnull, attidentity <> ''
           FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0
           AND NOT attisdropped ORDER BY attnum""",
        [table],
    )
    constraints = _fetch(
        cursor,
        """SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint
           WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'c', 'f')
           -- keys and checks first, foreign keys (checked against them) last
           ORDER BY contype = 'f', conname""",
        [table],
    )
    not_null = _fetch(
        cursor,
        """SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint
           WHERE conrelid = %s::regclass AND contype = 'n'""",
        [table],
    )
    indexes = _fetch(
        cursor,
        """SELECT pg_get_indexdef(x.indexrelid) FROM pg_index x
           WHERE x.indrelid = %s::regclass
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
           ORDER BY x.indexrelid::regclass::text""",
        [table],
    )
    options = _fetch(cursor, "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", [table])
    return TableShape(columns, constraints, not_null, [i for (i,) in indexes], options[0][0] or [])


def _build_beside_sql(cursor, table: str, select: str) -> TableShape:
    """CREATE TABLE {table}__rebuilt AS the SELECT, with the live table's columns (by
    name, in its order and types: `id` numbered when the SELECT has none) and storage
    settings. Returns the live table's shape, for the swap."""
    shape = _shape(cursor, table)
    columns = ", ".join(f"s.{name}::{kind} AS {name}" for name, kind, _, _ in shape.columns)
    options = f" WITH ({', '.join(shape.options)})" if shape.options else ""
    cursor.execute(f"DROP TABLE IF EXISTS {table}{REBUILT}")  # a failed run's leftover
    cursor.execute(f"CREATE TABLE {table}{REBUILT}{options} AS SELECT {columns} FROM ({select}) s")
    return shape


def _swap_in_sql(cursor, table: str, shape: TableShape) -> None:
    """Give the table built beside `table` (dropped) its name, and then the live one's
    NOT NULL columns, identity, constraints and indexes, under their own names."""
    cursor.execute(f"ALTER TABLE {table}{REBUILT} RENAME TO {table}")
    # PostgreSQL 18 names its NOT NULL constraints: each keeps its name.
    named = {definition: name for name, kind, definition in shape.not_null}
    not_null = [
        f'ADD CONSTRAINT "{named[f"NOT NULL {column}"]}" NOT NULL {column}'
        if f"NOT NULL {column}" in named
        else f"ALTER COLUMN {column} SET NOT NULL"
        for column, _, on, _ in shape.columns
        if on
    ]
    if not_null:  # one statement: one scan of the table
        cursor.execute(f"ALTER TABLE {table} {', '.join(not_null)}")
    for name, _, _, identity in shape.columns:
        if identity:
            cursor.execute(
                f"ALTER TABLE {table} ALTER COLUMN {name} ADD GENERATED BY DEFAULT AS IDENTITY"
            )
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence(%s, %s), "
                f"greatest((SELECT max({name}) FROM {table}), 1))",
                [table, name],
            )
    for name, _, definition in shape.constraints:
        cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for statement in shape.indexes:
        cursor.execute(statement)
    cursor.execute(f"ANALYZE {table}")


def _rebuild_selects() -> list[tuple[str, str]]:
    """(table, SELECT of its rows) for every rollup table, from recompute_cell, the open
    events and the tables built before it (named with REBUILT), in build order."""
    counters = _listed(COUNTERS)
    numbered = "row_number() OVER () AS id"
    pairs, pair_days = f"clickmap_pairrollup{REBUILT}", f"clickmap_pairdayrollup{REBUILT}"
    recipients = f"clickmap_recipientrollup{REBUILT}"
    recipient_days = f"clickmap_recipientdayrollup{REBUILT}"
    return [
        (
            "clickmap_pairrollup",
            f"""SELECT pair_id AS id, workspace_id, variant_id, link_id, customer_id,
                       {", ".join(f"pair_{c} AS {c}" for c in (*COUNTERS, *PAIR_STATE))}
                FROM recompute_cell WHERE pair_total_all IS NOT NULL""",
        ),
        (
            "clickmap_pairdayrollup",
            f"""SELECT {numbered}, pair_id, workspace_id, variant_id, link_id, customer_id,
                       day, device, {counters}
                FROM recompute_cell""",
        ),
        (
            "clickmap_linkrollup",
            f"""SELECT {numbered}, workspace_id, variant_id, link_id,
                       {", ".join(f"sum({c}) AS {c}" for c in COUNTERS)},
                       count(*) FILTER (WHERE total_all > 0) AS unique_all,
                       count(*) FILTER (WHERE total_rel > 0) AS unique_rel
                FROM {pairs} GROUP BY workspace_id, variant_id, link_id""",
        ),
        (
            "clickmap_recipientrollup",
            f"""SELECT {numbered}, d.workspace_id, d.variant_id, d.customer_id,
                       coalesce(c.clicked_all, false) AS clicked_all,
                       coalesce(c.clicked_rel, false) AS clicked_rel,
                       -- a click implies an open (docs/metrics.md)
                       o.delivery_id IS NOT NULL OR coalesce(c.clicked_all, false)
                           AS opened_all,
                       coalesce(o.opened_rel, false) OR coalesce(c.clicked_rel, false)
                           AS opened_rel,
                       greatest(c.last_at, o.last_at) AS last_at
                FROM (SELECT delivery_id, bool_or(pair_total_all > 0) AS clicked_all,
                             bool_or(pair_total_rel > 0) AS clicked_rel,
                             max(pair_last_at) AS last_at
                      FROM recompute_cell WHERE pair_total_all IS NOT NULL
                      GROUP BY delivery_id) c
                FULL JOIN (SELECT delivery_id, bool_or(reliable) AS opened_rel,
                                  max(at) AS last_at
                           FROM tracking_openevent GROUP BY delivery_id) o
                  ON o.delivery_id = c.delivery_id
                JOIN campaigns_delivery d ON d.id = coalesce(c.delivery_id, o.delivery_id)""",
        ),
        (
            "clickmap_emailrollup",
            f"""SELECT {numbered}, workspace_id, variant_id,
                       {
                ", ".join(
                    f"count(*) FILTER (WHERE {f}) AS {RECIPIENT_TO_EMAIL[f]}"
                    for f in RECIPIENT_TO_EMAIL
                )
            }
                FROM {recipients} GROUP BY workspace_id, variant_id""",
        ),
        *spans.rebuild_selects(pair_days, recipient_days, numbered),
    ]


def _recompute_cells_sql(cursor) -> int:
    """Fill recompute_cell with every pair's (day, device) cells and the pair's delivery
    columns, numbering the pairs from 1 (their PairRollup ids in the rebuilt table);
    each pair's first row also carries the pair's totals and state."""
    # Not a temporary table: parallel workers, which the rebuilt tables' plans may use,
    # cannot read one. Only the rebuild (under the segment lock, so one at a time) has it.
    cursor.execute("DROP TABLE IF EXISTS recompute_cell")  # a failed run's leftover
    cursor.execute(
        f"""
        CREATE UNLOGGED TABLE recompute_cell (pair_id bigint, delivery_id bigint,
            workspace_id bigint, variant_id bigint, link_id bigint, customer_id bigint,
            day date, device varchar(8), {_listed(COUNTERS, suffix=" int")},
            {_listed(COUNTERS, "pair_", " int")}, {_listed(PAIR_STATE, "pair_", " timestamptz")})"""
    )
    groups = defaultdict(list)  # window hours -> workspaces
    for pk, window in _fetch(cursor, "SELECT id, unique_window_hours FROM campaigns_workspace"):
        groups[window].append(pk)
    pairs = 0
    for window, workspace_ids in sorted(groups.items()):
        only = "" if len(groups) == 1 else "AND e.workspace_id = ANY(%(ids)s)"
        events = f"""
            SELECT e.delivery_id, e.link_id, e.at, e.id, e.reliable, e.device,
                   {int(window)} AS hours
            FROM tracking_clickevent e WHERE e.link_id IS NOT NULL {only}"""
        # The cells come out in (delivery, link) order, so numbering the pairs and summing
        # them are window functions over the same order: no sort, no hash of 1.7M pairs.
        pair_sums = ", ".join(
            [
                f"CASE WHEN row_number() OVER pair = 1 THEN sum(c.{c}) OVER pair END AS pair_{c}"
                for c in COUNTERS
            ]
            + [
                f"CASE WHEN row_number() OVER pair = 1 THEN max(c.{c}) OVER pair END AS pair_{c}"
                for c in PAIR_STATE
            ]
        )
        # Sorted grouping keeps that order (a hash aggregate would need a sort after).
        with _settings(cursor, enable_hashagg="off"):
            cursor.execute(
                f"""
                INSERT INTO recompute_cell
                SELECT c.pair_id, c.delivery_id, d.workspace_id, d.variant_id, c.link_id,
                       d.customer_id, c.day, c.device, {_listed(COUNTERS, "c.")},
                       {_listed(COUNTERS, "c.pair_")}, {_listed(PAIR_STATE, "c.pair_")}
                FROM (SELECT %(offset)s + dense_rank() OVER (ORDER BY c.delivery_id, c.link_id)
                                 AS pair_id, c.*,
                             {pair_sums}
                      FROM ({_cells_sql(events, window_mode=window > 0)}) c
                      WINDOW pair AS (PARTITION BY c.delivery_id, c.link_id)) c
                JOIN campaigns_delivery d ON d.id = c.delivery_id""",  # noqa: S608
                {"ids": workspace_ids, "offset": pairs},
            )
        pairs = _fetch(cursor, "SELECT coalesce(max(pair_id), 0) FROM recompute_cell")[0][0]
    cursor.execute("ANALYZE recompute_cell")  # joins of millions of rows need true sizes
    return pairs
