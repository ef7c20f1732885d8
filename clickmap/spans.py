"""Day rollups and spans (see clickmap/models.py and docs/aggregation.md), kept with every
aggregator batch, set-based.

- LinkDayRollup: the pairs' new day cells minus their old ones, per link × day × device;
- LinkSpanRollup: the spans of the pairs' new click days minus those of the old ones;
- RecipientDayRollup: each recipient's clicked / opened flags per day and device,
  recomputed from all its pairs' cells and its open events (a click implies an open:
  docs/metrics.md); rows only change under the recipient's lock, so the stored rows are
  the state last counted in the spans;
- EmailSpanRollup: the spans of the recipients' new flags minus those of the old rows.

The link day and span changes come out of the pairs' own statements (clickmap/rollups.py,
`link_spans_sql`), the recipients' from `recipient_days_sql`, and `add_deltas_sql` adds
them, in key order, after the batch's other rollups, so workers lock rows in one global
order. The chains are window functions and only differences travel. `rebuild_selects`
fills the four tables from scratch.
"""

import datetime
from collections import Counter
from typing import NamedTuple

from clickmap.counters import add_counters
from clickmap.models import COUNTERS, RECIPIENT_FLAGS
from clickmap.statements import fetch_typed, temp_table

LINK_CHAINS = [(None, "false", "total_all > 0"), (None, "true", "total_rel > 0")]
EMAIL_CHAINS = [
    ("'c'", "false", "clicked_all"),
    ("'c'", "true", "clicked_rel"),
    ("'o'", "false", "opened_all"),
    ("'o'", "true", "opened_rel"),
]


# The customers of a batch's pairs or recipients (the CTE `source`) with the segments
# they are members of (clickmap/segment_rollups.py), as a CTE to join the batch's changes
# to: a LATERAL walk of the member index per customer.
MEMBERS_SQL = """
    member AS MATERIALIZED (
        SELECT c.customer_id, m.segment_id
        FROM (SELECT DISTINCT customer_id FROM {source}) c
        CROSS JOIN LATERAL (
            SELECT m.segment_id FROM clickmap_segmentmember m
            WHERE m.customer_id = c.customer_id OFFSET 0) m)"""


SPAN_KEY = ("device", "reliable", "day", "since")  # a span's key after its owner's
SEGMENT_EMAIL_SPAN_KEY = ("workspace_id", "segment_id", "variant_id", "kind", *SPAN_KEY)


def email_spans_sql(
    source: str, by_segment: bool = False, signed: bool = False, from_days: str | None = None
) -> str:
    """The email spans of `source`'s recipient day rows (variant_id, customer_id,
    workspace_id, day, device, flags): (…key, kind, device, reliable, day, since, n) with
    the key (sign,) workspace_id, (segment_id,) variant_id, per segment `by_segment` and
    kept apart by a `sign` column when `signed`. `from_days`: a table of (variant_id,
    customer_id, from_day), each recipient's first changed day: only its recipients, and
    only their spans from that day on (the spans before it are unchanged)."""
    segment = ["segment_id"] if by_segment else []
    sign = ["sign"] if signed else []
    return _spans_sql(
        source,
        [*sign, *segment, "variant_id", "customer_id"],
        [*sign, "workspace_id", *segment, "variant_id"],
        EMAIL_CHAINS,
        from_days and (from_days, ["variant_id", "customer_id"]),
    )


def link_spans_sql(
    source: str, by_segment: bool = False, signed: bool = False, from_days: str | None = None
) -> str:
    """The link spans of `source`'s pair day cells (pair_id, workspace_id, variant_id,
    link_id, day, device, counters): (…key, device, reliable, day, since, n) with the key
    (sign,) workspace_id, (segment_id,) variant_id, link_id, per segment `by_segment` and
    kept apart by a `sign` column (+1 new, -1 old) when `signed`. `from_days`: a table
    of (pair_id, from_day), as for email spans."""
    segment = ["segment_id"] if by_segment else []
    sign = ["sign"] if signed else []
    return _spans_sql(
        source,
        [*sign, *segment, "pair_id"],
        [*sign, "workspace_id", *segment, "variant_id", "link_id"],
        LINK_CHAINS,
        from_days and (from_days, ["pair_id"]),
    )


class EmailSpanDelta(NamedTuple):
    """What the recomputed recipients add to one email span (EmailSpanRollup.n)."""

    workspace_id: int
    variant_id: int
    kind: str
    device: str
    reliable: bool
    day: datetime.date
    since: datetime.date
    n: int


class SegmentEmailSpanDelta(NamedTuple):
    """The same for one segment's email span (SegmentEmailSpanRollup.n)."""

    workspace_id: int
    segment_id: int
    variant_id: int
    kind: str
    device: str
    reliable: bool
    day: datetime.date
    since: datetime.date
    n: int


# The temporary tables of one `recipient_days_sql` (docs/aggregation.md), dropped at its end.
RECIPIENT_TEMP_TABLES = (
    "batch_recipient",
    "batch_recipient_member",
    "batch_recipient_old_day",
    "batch_recipient_day",
    "batch_recipient_day_change",
    "batch_recipient_from",
)


def recipient_days_sql(cursor, recipients: dict) -> tuple[Counter, Counter]:
    """Write the batch's recipients' day rows (recomputed from their pairs' day cells and
    their opens); returns the changes to the email spans, for everyone and per segment,
    for `add_deltas_sql` (the link day and span changes come with the pairs' recompute,
    clickmap.rollups). recipients: (variant, customer) -> (workspace, delivery), locked.

    A sequence of statements, each reading the temporary tables of those before it: the
    recipients' day rows as last counted (old) and anew; only the differences are
    written, and the spans of both are computed, the old ones subtracted."""
    if not recipients:
        return Counter(), Counter()
    keys = sorted(recipients)
    flags = ", ".join(RECIPIENT_FLAGS)
    # batch_recipient: the recipients; batch_recipient_member: their customers' segments.
    temp_table(
        cursor,
        "batch_recipient",
        """SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
               AS t(workspace_id, variant_id, customer_id, delivery_id)""",
        [
            [recipients[k][0] for k in keys],
            [k[0] for k in keys],
            [k[1] for k in keys],
            [recipients[k][1] for k in keys],
        ],
    )
    temp_table(
        cursor,
        "batch_recipient_member",
        f"WITH {MEMBERS_SQL.format(source='batch_recipient')} SELECT * FROM member",
    )
    # batch_recipient_old_day: their stored day rows.
    temp_table(
        cursor,
        "batch_recipient_old_day",
        f"""
        SELECT x.* FROM batch_recipient k CROSS JOIN LATERAL (
            SELECT x.id, x.workspace_id, x.variant_id, x.customer_id, x.day, x.device,
                   {", ".join(f"x.{f}" for f in RECIPIENT_FLAGS)}
            FROM clickmap_recipientdayrollup x
            WHERE x.variant_id = k.variant_id AND x.customer_id = k.customer_id
            OFFSET 0) x""",  # noqa: S608
    )
    # batch_recipient_day: their day rows anew, from their pairs' day rows (just written)
    # and their open events.
    temp_table(
        cursor,
        "batch_recipient_day",
        """
        SELECT workspace_id, variant_id, customer_id, day, device,
               bool_or(ca) AS clicked_all, bool_or(cr) AS clicked_rel,
               bool_or(oa) AS opened_all, bool_or(orl) AS opened_rel
        -- A click implies an open on its day and device (docs/metrics.md).
        FROM (SELECT k.workspace_id, k.variant_id, k.customer_id, x.day, x.device,
                     x.total_all > 0 AS ca, x.total_rel > 0 AS cr,
                     x.total_all > 0 AS oa, x.total_rel > 0 AS orl
              FROM batch_recipient k CROSS JOIN LATERAL (
                  SELECT x.day, x.device, x.total_all, x.total_rel
                  FROM clickmap_pairdayrollup x
                  WHERE x.customer_id = k.customer_id AND x.variant_id = k.variant_id
                  OFFSET 0) x
              UNION ALL
              SELECT k.workspace_id, k.variant_id, k.customer_id,
                     (o.at AT TIME ZONE 'UTC')::date, o.device, false, false, true,
                     o.reliable
              FROM batch_recipient k CROSS JOIN LATERAL (
                  SELECT o.at, o.device, o.reliable FROM tracking_openevent o
                  WHERE o.delivery_id = k.delivery_id OFFSET 0) o) s
        GROUP BY workspace_id, variant_id, customer_id, day, device""",
    )
    # batch_recipient_day_change: new rows against stored ones (a side NULL where there
    # is none).
    temp_table(
        cursor,
        "batch_recipient_day_change",
        f"""
        SELECT o.id, r.*, {", ".join(f"o.{f} AS o_{f}" for f in RECIPIENT_FLAGS)},
               o.variant_id AS o_variant_id, o.customer_id AS o_customer_id,
               o.day AS o_day
        FROM batch_recipient_day r FULL JOIN batch_recipient_old_day o
          ON o.variant_id = r.variant_id AND o.customer_id = r.customer_id
         AND o.day = r.day AND o.device = r.device""",  # noqa: S608
    )
    # batch_recipient_from: each recipient's first day whose row changes: the spans
    # before it are the same before and after, so only those from it on are computed
    # (and subtracted).
    changed = " OR ".join(f"j.{f} IS DISTINCT FROM j.o_{f}" for f in RECIPIENT_FLAGS)
    temp_table(
        cursor,
        "batch_recipient_from",
        f"""
        SELECT coalesce(variant_id, o_variant_id) AS variant_id,
               coalesce(customer_id, o_customer_id) AS customer_id,
               min(coalesce(day, o_day)) AS from_day
        FROM batch_recipient_day_change j WHERE {changed} GROUP BY 1, 2""",  # noqa: S608
    )
    # The writes: the day rows gone, changed and new.
    cursor.execute(
        """DELETE FROM clickmap_recipientdayrollup
           WHERE id = ANY(ARRAY(SELECT id FROM batch_recipient_day_change
                                WHERE variant_id IS NULL))"""
    )
    cursor.execute(
        f"""
        UPDATE clickmap_recipientdayrollup x
        SET {", ".join(f"{f} = j.{f}" for f in RECIPIENT_FLAGS)}
        FROM batch_recipient_day_change j WHERE x.id = j.id
        AND x.id = ANY(ARRAY(SELECT id FROM batch_recipient_day_change j
                             WHERE id IS NOT NULL AND variant_id IS NOT NULL
                             AND ({changed})))"""  # noqa: S608
    )
    cursor.execute(
        f"""
        INSERT INTO clickmap_recipientdayrollup (workspace_id, variant_id, customer_id,
            day, device, {flags})
        SELECT workspace_id, variant_id, customer_id, day, device, {flags}
        FROM batch_recipient_day_change WHERE id IS NULL
        ORDER BY variant_id, customer_id, day, device"""  # noqa: S608
    )

    # The differences: the new rows' spans minus the old rows'.
    def signed(spans_of) -> str:
        return f"""
            SELECT -1 AS sign, s.* FROM ({spans_of("batch_recipient_old_day")}) s
            UNION ALL
            SELECT 1, s.* FROM ({spans_of("batch_recipient_day")}) s"""

    def email_spans(rows: str) -> str:
        return email_spans_sql(rows, from_days="batch_recipient_from")

    def segment_spans(rows: str) -> str:
        return email_spans_sql(
            f"(SELECT x.*, m.segment_id FROM {rows} x "
            "JOIN batch_recipient_member m ON m.customer_id = x.customer_id) AS x",
            by_segment=True,
            from_days="batch_recipient_from",
        )

    span = "kind, device, reliable, day, since"
    email_deltas = Counter()
    for row in fetch_typed(
        cursor,
        EmailSpanDelta,
        f"""SELECT workspace_id, variant_id, {span}, sum(sign * n)::bigint AS n
            FROM ({signed(email_spans)}) s GROUP BY workspace_id, variant_id, {span}""",  # noqa: S608
    ):
        email_deltas[row[:-1]] += row.n
    segment_deltas = Counter()
    for row in fetch_typed(
        cursor,
        SegmentEmailSpanDelta,
        f"""SELECT workspace_id, segment_id, variant_id, {span}, sum(sign * n)::bigint AS n
            FROM ({signed(segment_spans)}) s
            GROUP BY workspace_id, segment_id, variant_id, {span}""",  # noqa: S608
    ):
        segment_deltas[row[:-1]] += row.n
    cursor.execute(f"DROP TABLE {', '.join(RECIPIENT_TEMP_TABLES)}")
    return email_deltas, segment_deltas


def _add_deltas(day_deltas: dict, link_deltas: Counter, email_deltas: Counter) -> None:
    """Add the batch's differences to the link day rows and the link and email spans."""
    add_counters(
        "clickmap_linkdayrollup",
        ("workspace_id", "variant_id", "link_id", "day", "device"),
        COUNTERS,
        [(*key, *values) for key, values in day_deltas.items()],
    )
    add_counters(
        "clickmap_linkspanrollup",
        ("workspace_id", "variant_id", "link_id", "device", "reliable", "day", "since"),
        ("n",),
        [(*key, n) for key, n in link_deltas.items()],
    )
    add_counters(
        "clickmap_emailspanrollup",
        ("workspace_id", "variant_id", "kind", "device", "reliable", "day", "since"),
        ("n",),
        [(*key, n) for key, n in email_deltas.items()],
    )


def add_deltas_sql(
    day_deltas: dict, link_deltas: Counter, email_deltas: Counter, segment_deltas: Counter
) -> None:
    """Add a batch's link day and span changes and `recipient_days_sql`'s email span
    changes."""
    _add_deltas(day_deltas, link_deltas, email_deltas)
    add_counters(
        "clickmap_segmentemailspanrollup",
        SEGMENT_EMAIL_SPAN_KEY,
        ("n",),
        [(*key, n) for key, n in segment_deltas.items()],
    )


# --- The rebuild -------------------------------------------------------------------------


def _spans_sql(source: str, owner: list, key: list, chains: list, from_days: tuple | None) -> str:
    """A SELECT of (key…, [kind,] device, reliable, day, since, n): the spans of
    `source`'s rows (owner columns, key columns, device, day, and what `chains` test),
    one per chain (kind SQL or None, reliable SQL, condition of a day in the chain), per
    device and for any device (''). Two sorts in all: each row (one per owner × day ×
    device) finds the previous day of each chain as a running max over the rows before
    it, per device; then, once per owner and day, over the owner's earlier days on any
    device. `from_days` (table, its owner columns): only the owners it names, and only
    their spans ending on or after its from_day."""
    columns = ", ".join(f"s.{c}" for c in dict.fromkeys(owner + key))
    owners = ", ".join(owner)
    flags = ", ".join(f"{condition} AS f{i}" for i, (_, _, condition) in enumerate(chains))
    rows, since, later = f"(SELECT * FROM {source}) s", "", ""
    if from_days:
        table, on = from_days
        rows += f" JOIN {table} f ON " + " AND ".join(f"f.{c} = s.{c}" for c in on)
        since = ", f.from_day"
        # After the windows, which still see the earlier days (the spans' starts).
        later = "WHERE day >= from_day"
    cells = f"SELECT {columns}, s.device, s.day, {flags}{since} FROM {rows}"
    keys = ", ".join(key)
    kind = ", kind" if chains[0][0] else ""
    each = range(len(chains))

    def spans_of(device: str, before: str, windows: str, flag: str) -> str:
        prev = ", ".join(f"max(day) FILTER (WHERE f{i}) OVER ({before}) AS p{i}" for i in each)
        # Rows alike (same day, flags and previous days) are counted first: a few
        # thousand groups for millions of rows, and only those are split by chain.
        alike = ", ".join([f"{flag.format(i=i)} AS g{i}" for i in each] + [f"p{i}" for i in each])
        values = ", ".join(
            f"({k or 'NULL'}, {reliable}, g{i}, p{i})" for i, (k, reliable, _) in enumerate(chains)
        )
        return f"""
            SELECT {keys}{kind}, {device} AS device, reliable, day,
                   coalesce(prev, DATE '0001-01-01') AS since, sum(n)::bigint AS n
            FROM (SELECT {keys}, {device} AS device, day, {alike}, count(*) AS n
                  FROM (SELECT s.*, {prev}{windows} FROM ({cells}) s) s {later}
                  -- by place: the device may be the constant ''
                  GROUP BY {", ".join(str(i) for i in range(1, len(key) + 2 * len(chains) + 3))}) s
            CROSS JOIN LATERAL (VALUES {values}) AS c(kind, reliable, flag, prev)
            WHERE flag
            GROUP BY {keys}{kind}, s.device, reliable, day, since"""

    day = f"PARTITION BY {owners}, day"
    return (
        spans_of(
            "device",
            f"PARTITION BY {owners}, device ORDER BY day "
            "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING",
            "",
            "f{i}",
        )
        + " UNION ALL "
        + spans_of(
            "''",
            f"PARTITION BY {owners} ORDER BY day "
            "RANGE BETWEEN UNBOUNDED PRECEDING AND '1 day' PRECEDING",
            f", row_number() OVER ({day}) = 1 AS first, "
            + ", ".join(f"bool_or(f{i}) OVER ({day}) AS d{i}" for i in each),
            "first AND d{i}",
        )
    )


def rebuild_selects(pair_days: str, recipient_days: str, numbered: str) -> list:
    """(table, SELECT of its rows) of the four tables, from the rebuilt pair day cells
    (`pair_days`) and the open events; the email spans from `recipient_days`, built
    before them. `numbered`: the SELECT's `id` column (clickmap.rollups builds each table
    beside the live one)."""
    return [
        (
            "clickmap_linkdayrollup",
            f"""SELECT {numbered}, workspace_id, variant_id, link_id, day, device,
                       {", ".join(f"sum({c}) AS {c}" for c in COUNTERS)}
                FROM {pair_days} GROUP BY workspace_id, variant_id, link_id, day, device""",
        ),
        (
            "clickmap_linkspanrollup",
            f"SELECT {numbered}, s.* FROM ({link_spans_sql(pair_days)}) s",
        ),
        (
            "clickmap_recipientdayrollup",
            f"""SELECT {numbered}, workspace_id, variant_id, customer_id, day, device,
                       bool_or(ca) AS clicked_all, bool_or(cr) AS clicked_rel,
                       bool_or(oa) AS opened_all, bool_or(orl) AS opened_rel
                FROM (SELECT workspace_id, variant_id, customer_id, day, device,
                             total_all > 0 AS ca, total_rel > 0 AS cr, total_all > 0 AS oa,
                             total_rel > 0 AS orl
                      FROM {pair_days}  -- a click implies an open
                      UNION ALL
                      SELECT d.workspace_id, d.variant_id, d.customer_id,
                             (o.at AT TIME ZONE 'UTC')::date, o.device, false, false, true,
                             o.reliable
                      FROM tracking_openevent o
                      JOIN campaigns_delivery d ON d.id = o.delivery_id) s
                GROUP BY workspace_id, variant_id, customer_id, day, device""",
        ),
        (
            "clickmap_emailspanrollup",
            f"SELECT {numbered}, s.* FROM ({email_spans_sql(recipient_days)}) s",
        ),
    ]
