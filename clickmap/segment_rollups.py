"""Segment rollups: a segment's click map from a few rows, kept exact.

A segment is a rule on customer attributes and/or a member list (campaigns.segments).
Counting it live means touching every pair, recipient and delivery of its customers:
seconds for a segment of a third of a million customers. So the aggregator keeps, per
segment, the sums a click map needs (clickmap/models.py): SegmentMember (the members),
SegmentLinkRollup, SegmentEmailRollup, SegmentLinkDayRollup, SegmentLinkSpanRollup and
SegmentEmailSpanRollup (the members' rows summed like LinkRollup, EmailRollup,
LinkDayRollup, LinkSpanRollup and EmailSpanRollup: any period and device stays exact)
and SegmentDeliveryCount (the members' deliveries per variant and status).

Three kinds of change move them, and each is applied exactly once:

- membership: database triggers log (MembershipChange) every customer that is new or
  whose attributes or explicit memberships change, and every segment that is new or
  whose rule changes. `refresh` evaluates the logged ones again with the live rule
  (campaigns.segments) and adds or subtracts the whole contribution of each customer
  that joined or left;
- events: each aggregator batch adds its pairs' and recipients' changes to the segments
  of their customers (clickmap/rollups.py, with `MEMBERS_SQL`);
- deliveries: a trigger on campaigns_delivery adds each statement's changes to the
  segments of the deliveries' customers.

They never interleave: a batch holds SEGMENT_LOCK shared for its transaction, `refresh`
holds it exclusively and campaigns_delivery in SHARE mode, so while members change no
batch and no delivery write is in flight, and every later one reads the new members.

A segment whose rule has a volatile condition (campaigns.segments: received, clicked,
opened, unsubscribed, signed up within N days) keeps no members and no rollups: its
membership moves with deliveries, events, unsubscribes and the clock, none of which this
log follows (following clicks would mean a trigger on the event tables' hot path), so it
is never `current` and every number of it is counted live from its rule, exactly.

The membership log lags by one aggregator run (seconds, like every rollup). A segment
that is new or has a new rule is counted live until its rollups are rebuilt (`current`);
a big one is rebuilt REFRESH_MEMBERS members a transaction, so the locks above are
held seconds at a time, and batches and delivery writes go on between them.
"""

from collections import defaultdict

from django.db import OperationalError, connection, transaction
from django.db.models.expressions import RawSQL
from django_scopes import scopes_disabled

from campaigns.models import Customer, Segment
from campaigns.segments import rule_volatile, segment_customers
from clickmap import spans
from clickmap.counters import add_counters
from clickmap.models import (
    COUNTERS,
    RECIPIENT_FLAGS,
    SEGMENT_ROLLUPS,
    MembershipChange,
    SegmentDeliveryCount,
    SegmentMember,
    segment_key,
)

SEGMENT_LOCK = 0x5E6_0E17  # pg_advisory lock key: batches shared, `refresh` exclusive
REFRESH_BATCH = 50_000  # log entries per refresh transaction
# Members joining or leaving a segment evaluated whole, per refresh transaction, so
# batches and delivery writers wait seconds for its locks, not a whole build: a rule
# moving 666k members (bench_clickmap's segment) took 7 transactions of at most 12 s
# where one took 52 s; 72 s in all, as smaller sets read the members' rows by index.
REFRESH_MEMBERS = 100_000
REFRESH_LOCK_TIMEOUT = "2s"  # waiting longer on delivery writers: try again next run


def current(segment) -> bool:
    """Whether the segment's rollups stand for its present rule: the segment is not
    waiting in the log to be evaluated whole (new, or its rule changed), and its rule has
    no volatile condition (those are counted live)."""
    if rule_volatile(segment.rule):
        return False
    return not MembershipChange.objects.filter(segment_id=segment.pk, customer_id=None).exists()


def lock_for_batch(cursor) -> None:
    """An aggregator batch's share of SEGMENT_LOCK, for its whole transaction."""
    cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [SEGMENT_LOCK])


def lock_exclusively(cursor) -> None:
    """SEGMENT_LOCK for the rest of the transaction: no batch runs, members can change."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEGMENT_LOCK])


# {table: (key columns, counter columns)} of every segment rollup, from the models.
SEGMENT_KEYS = {
    model._meta.db_table: (segment_key(model), model.counter_names)
    for model in (*SEGMENT_ROLLUPS, SegmentDeliveryCount)
}


def add_batch_deltas(deltas: dict) -> None:
    """Add a batch's segment deltas ({table: (workspace, segment, …key, *counters) rows})."""
    for table in sorted(deltas):
        key, counters = SEGMENT_KEYS[table]
        add_counters(table, key, counters, deltas[table])


def refresh() -> int:
    """Apply the membership log; returns how many entries were applied. Entries stay for
    a later run when delivery writers hold campaigns_delivery past REFRESH_LOCK_TIMEOUT."""
    applied = 0
    # An empty log needs no lock: the exclusive one would wait for other runs' batches.
    while MembershipChange.objects.exists():
        try:
            with scopes_disabled():
                done = _refresh_batch()
        except OperationalError as error:
            if getattr(error.__cause__, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            return applied
        if not done:
            return applied
        applied += done
    return applied


@transaction.atomic
def _refresh_batch() -> int:
    with connection.cursor() as cursor:
        # Waits on the locks are bounded, and the enclosing transaction's setting restored.
        cursor.execute(
            "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)",
            [REFRESH_LOCK_TIMEOUT],
        )
        before = cursor.fetchone()[0]
        lock_exclusively(cursor)
        cursor.execute(
            """
            DELETE FROM clickmap_membershipchange
            WHERE id = ANY(ARRAY(SELECT id FROM clickmap_membershipchange ORDER BY id LIMIT %s))
            RETURNING customer_id, segment_id""",
            [REFRESH_BATCH],
        )
        claimed = cursor.fetchall()
        if claimed:
            cursor.execute("LOCK TABLE campaigns_delivery IN SHARE MODE")
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [before])
        if not claimed:
            return 0
        _apply(cursor, _membership_changes(cursor, claimed, REFRESH_MEMBERS))
        return len(claimed)


def rebuild(cursor) -> None:
    """Every segment's members and rollups from scratch (in `recompute`'s transaction,
    after the other rollups were rebuilt)."""
    lock_exclusively(cursor)
    cursor.execute("LOCK TABLE campaigns_delivery IN SHARE MODE")
    # TRUNCATE refuses tables with foreign-key checks still pending in this transaction.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cursor.execute(
        "TRUNCATE clickmap_membershipchange, clickmap_segmentmember, " + ", ".join(SEGMENT_KEYS)
    )
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    segments = list(Segment.objects.values_list("pk", flat=True))
    _apply(cursor, _membership_changes(cursor, [(None, pk) for pk in segments]))


def _membership_changes(cursor, claimed, limit: int | None = None) -> list[tuple[int, int, int]]:
    """(segment, customer, +1 joined / -1 left) for the claimed log entries: a segment
    alone is evaluated whole, a customer alone against every segment of its workspace,
    a customer with a segment against that segment.

    limit: at most this many changes of the segments evaluated whole (after the
    customers' own); a segment with more is logged whole again, so the next transaction
    goes on where this one stops and the segment is counted live (`current`) until its
    last member is in. Its members and rollups agree after each transaction."""
    whole = {s for c, s in claimed if c is None and s is not None}
    candidates = defaultdict(set)  # segment -> customers to evaluate
    anywhere = set()
    for customer_id, segment_id in claimed:
        if customer_id is not None and segment_id is not None:
            candidates[segment_id].add(customer_id)
        elif customer_id is not None:
            anywhere.add(customer_id)
    if anywhere:
        by_workspace = defaultdict(set)
        for workspace_id, pk in Customer.objects.filter(
            pk__in=RawSQL("SELECT unnest(%s::bigint[])", [sorted(anywhere)])
        ).values_list("workspace_id", "pk"):
            by_workspace[workspace_id].add(pk)
        for workspace_id, segment_id in Segment.objects.filter(
            workspace_id__in=by_workspace
        ).values_list("workspace_id", "pk"):
            candidates[segment_id] |= by_workspace[workspace_id]
    segments = Segment.objects.in_bulk(whole | set(candidates))
    changes = []
    for pk in sorted(set(segments) - whole):
        changes += [(pk, c, sign) for c, sign in _diff(cursor, segments[pk], candidates[pk])]
    for pk in sorted(set(segments) & whole):
        if limit is None:
            found = _diff(cursor, segments[pk], None)
        else:
            room = max(limit - len(changes), 0)
            found = _diff(cursor, segments[pk], None, room + 1)  # one more: is there more?
            if len(found) > room:
                found = found[:room]
                cursor.execute(
                    "INSERT INTO clickmap_membershipchange (segment_id) VALUES (%s)", [pk]
                )
        changes += [(pk, c, sign) for c, sign in found]
    return changes


def _diff(cursor, segment, candidates, limit: int | None = None) -> list[tuple[int, int]]:
    """(customer, +1 / -1): who joined or left the segment, among `candidates` (None:
    every customer of its workspace); `limit`: the first that many by customer id. A
    volatile segment has no kept members: all of them leave."""
    if rule_volatile(segment.rule):
        now = Customer.objects.filter(pk__isnull=True)  # no row; none() compiles to no SQL
    else:
        now = segment_customers(segment).filter(workspace_id=segment.workspace_id)
    before = SegmentMember.objects.filter(segment_id=segment.pk)
    if candidates is not None:
        ids = RawSQL("SELECT unnest(%s::bigint[])", [sorted(candidates)])
        now, before = now.filter(pk__in=ids), before.filter(customer_id__in=ids)
    now_sql, now_params = now.order_by().values("pk").query.sql_with_params()
    before_sql, before_params = before.order_by().values("customer_id").query.sql_with_params()
    cursor.execute(
        f"""
        SELECT coalesce(n.id, b.id), CASE WHEN b.id IS NULL THEN 1 ELSE -1 END
        FROM ({now_sql}) AS n(id) FULL JOIN ({before_sql}) AS b(id) ON b.id = n.id
        WHERE n.id IS NULL OR b.id IS NULL
        {"" if limit is None else "ORDER BY 1 LIMIT %s"}""",
        [*now_params, *before_params, *([] if limit is None else [limit])],
    )
    return cursor.fetchall()


# A table's rows of the changed members, with the member's segment and sign.
_MEMBER_ROWS = """(SELECT x.*, c.segment_id, c.sign FROM segment_change c
                   JOIN {table} x ON x.customer_id = c.customer_id) AS x"""
# Per-segment sums of the changed members' rows: (SQL over segment_change, table). Each row of a member counts with the member's sign.
_CONTRIBUTIONS = [
    (
        f"""SELECT p.workspace_id, c.segment_id, p.variant_id, p.link_id,
                   {", ".join(f"sum(c.sign * p.{n})" for n in COUNTERS)},
                   sum(c.sign * (p.total_all > 0)::int), sum(c.sign * (p.total_rel > 0)::int)
            FROM segment_change c JOIN clickmap_pairrollup p ON p.customer_id = c.customer_id
            GROUP BY 1, 2, 3, 4""",
        "clickmap_segmentlinkrollup",
    ),
    (
        f"""SELECT r.workspace_id, c.segment_id, r.variant_id,
                   {", ".join(f"sum(c.sign * r.{f}::int)" for f in RECIPIENT_FLAGS)}
            FROM segment_change c
            JOIN clickmap_recipientrollup r ON r.customer_id = c.customer_id
            GROUP BY 1, 2, 3""",
        "clickmap_segmentemailrollup",
    ),
    (
        f"""SELECT p.workspace_id, c.segment_id, p.variant_id, p.link_id, p.day, p.device,
                   {", ".join(f"sum(c.sign * p.{n})" for n in COUNTERS)}
            FROM segment_change c
            JOIN clickmap_pairdayrollup p ON p.customer_id = c.customer_id
            GROUP BY 1, 2, 3, 4, 5, 6""",
        "clickmap_segmentlinkdayrollup",
    ),
    (
        f"""SELECT workspace_id, segment_id, variant_id, link_id, device, reliable, day, since,
                   sum(sign * n)
            FROM ({
            spans.link_spans_sql(
                _MEMBER_ROWS.format(table="clickmap_pairdayrollup"), by_segment=True, signed=True
            )
        }) s
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8""",
        "clickmap_segmentlinkspanrollup",
    ),
    (
        f"""SELECT workspace_id, segment_id, variant_id, kind, device, reliable, day, since,
                   sum(sign * n)
            FROM ({
            spans.email_spans_sql(
                _MEMBER_ROWS.format(table="clickmap_recipientdayrollup"),
                by_segment=True,
                signed=True,
            )
        }) s
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8""",
        "clickmap_segmentemailspanrollup",
    ),
    (
        """SELECT d.workspace_id, c.segment_id, d.variant_id, d.status, sum(c.sign)
           FROM segment_change c JOIN campaigns_delivery d ON d.customer_id = c.customer_id
           GROUP BY 1, 2, 3, 4""",
        "clickmap_segmentdeliverycount",
    ),
]


def _apply(cursor, changes) -> None:
    """Move the members and add each joining (subtract each leaving) member's rows."""
    if not changes:
        return
    changes.sort()
    segment_ids, customer_ids, signs = (list(column) for column in zip(*changes, strict=True))
    cursor.execute("DROP TABLE IF EXISTS segment_change")  # an outer transaction's leftover
    cursor.execute(
        """CREATE TEMP TABLE segment_change ON COMMIT DROP AS
           SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::int[])
                AS t(segment_id, customer_id, sign)""",
        [segment_ids, customer_ids, signs],
    )
    cursor.execute("ANALYZE segment_change")
    cursor.execute(
        """DELETE FROM clickmap_segmentmember m USING segment_change c
           WHERE c.sign < 0 AND m.segment_id = c.segment_id AND m.customer_id = c.customer_id"""
    )
    cursor.execute(
        """INSERT INTO clickmap_segmentmember (workspace_id, segment_id, customer_id)
           SELECT s.workspace_id, c.segment_id, c.customer_id
           FROM segment_change c JOIN campaigns_segment s ON s.id = c.segment_id
           WHERE c.sign > 0 ORDER BY c.segment_id, c.customer_id"""
    )
    for select, table in _CONTRIBUTIONS:
        cursor.execute(select)
        add_counters(table, *SEGMENT_KEYS[table], cursor.fetchall())
    cursor.execute("DELETE FROM clickmap_segmentdeliverycount WHERE n = 0")
    cursor.execute("DROP TABLE segment_change")


# --- Triggers (installed by migration clickmap 0005) ------------------------------------

_DELIVERY_UPSERT = """
    WITH changed AS (
        INSERT INTO clickmap_segmentdeliverycount AS c
            (workspace_id, segment_id, variant_id, status, n)
        SELECT m.workspace_id, m.segment_id, d.variant_id, d.status, sum(d.d)
        FROM ({deltas}) AS d JOIN clickmap_segmentmember m ON m.customer_id = d.customer_id
        GROUP BY m.workspace_id, m.segment_id, d.variant_id, d.status HAVING sum(d.d) <> 0
        ORDER BY m.segment_id, d.variant_id, d.status
        ON CONFLICT (segment_id, variant_id, status) DO UPDATE SET n = c.n + EXCLUDED.n
        RETURNING c.id, c.n
    )
    SELECT array_agg(id) INTO zero FROM changed WHERE n = 0;
    IF zero IS NOT NULL THEN
        DELETE FROM clickmap_segmentdeliverycount WHERE id = ANY(zero) AND n = 0;
    END IF;
"""
_NEW = "SELECT customer_id, variant_id, status, 1 AS d FROM new_rows"
_OLD = "SELECT customer_id, variant_id, status, -1 AS d FROM old_rows"
_LOG_NEW_CUSTOMERS = """
    INSERT INTO clickmap_membershipchange (customer_id) SELECT id FROM new_rows ORDER BY id;"""
_LOG_CHANGED_ATTRIBUTES = """
    INSERT INTO clickmap_membershipchange (customer_id)
    SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.attributes IS DISTINCT FROM o.attributes ORDER BY n.id;"""
_LOG_MEMBERS = """
    INSERT INTO clickmap_membershipchange (customer_id, segment_id)
    SELECT customer_id, segment_id FROM {rows};"""
_LOG_SEGMENTS = """
    INSERT INTO clickmap_membershipchange (segment_id) SELECT n.id FROM new_rows n {changed};"""

# (trigger and function name, table, event, transition tables, function body)
TRIGGERS = [
    (
        "clickmap_segment_delivery_insert",
        "campaigns_delivery",
        "INSERT",
        "REFERENCING NEW TABLE AS new_rows",
        _DELIVERY_UPSERT.format(deltas=_NEW),
    ),
    (
        "clickmap_segment_delivery_update",
        "campaigns_delivery",
        "UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        _DELIVERY_UPSERT.format(deltas=f"{_OLD} UNION ALL {_NEW}"),
    ),
    (
        "clickmap_segment_delivery_delete",
        "campaigns_delivery",
        "DELETE",
        "REFERENCING OLD TABLE AS old_rows",
        _DELIVERY_UPSERT.format(deltas=_OLD),
    ),
    (
        "clickmap_segment_delivery_truncate",
        "campaigns_delivery",
        "TRUNCATE",
        "",
        "DELETE FROM clickmap_segmentdeliverycount;",
    ),
    (
        "clickmap_membership_new_customer",
        "campaigns_customer",
        "INSERT",
        "REFERENCING NEW TABLE AS new_rows",
        _LOG_NEW_CUSTOMERS,
    ),
    (
        "clickmap_membership_customer_attributes",
        "campaigns_customer",
        "UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        _LOG_CHANGED_ATTRIBUTES,
    ),
    (
        "clickmap_membership_member_added",
        "campaigns_segment_members",
        "INSERT",
        "REFERENCING NEW TABLE AS new_rows",
        _LOG_MEMBERS.format(rows="new_rows"),
    ),
    (
        "clickmap_membership_member_removed",
        "campaigns_segment_members",
        "DELETE",
        "REFERENCING OLD TABLE AS old_rows",
        _LOG_MEMBERS.format(rows="old_rows"),
    ),
    (
        "clickmap_membership_new_segment",
        "campaigns_segment",
        "INSERT",
        "REFERENCING NEW TABLE AS new_rows",
        _LOG_SEGMENTS.format(changed=""),
    ),
    (
        "clickmap_membership_segment_rule",
        "campaigns_segment",
        "UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        _LOG_SEGMENTS.format(
            changed="JOIN old_rows o ON o.id = n.id WHERE n.rule IS DISTINCT FROM o.rule"
        ),
    ),
]


def install(schema_editor) -> None:
    """Create the triggers (ENABLE ALWAYS: bulk loads under session_replication_role =
    replica fire them too) and log every segment for evaluation."""
    uninstall(schema_editor)
    for name, table, event, transition, body in TRIGGERS:
        schema_editor.execute(
            f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                DECLARE zero bigint[];
                BEGIN
                    {body}
                    RETURN NULL;
                END $$""",
            params=None,
        )
        schema_editor.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} {transition} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()",
            params=None,
        )
        schema_editor.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}", params=None)
    schema_editor.execute(
        "INSERT INTO clickmap_membershipchange (segment_id) SELECT id FROM campaigns_segment",
        params=None,
    )


def uninstall(schema_editor) -> None:
    for name, table, *_ in TRIGGERS:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}", params=None)
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {name}()", params=None)
