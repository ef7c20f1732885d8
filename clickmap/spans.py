"""Day rollups and spans (see clickmap/models.py and docs/aggregation.md), kept with every
aggregator batch, set-based.

- LinkDayRollup: the pairs' new day cells minus their old ones, per link × day × device;
- LinkSpanRollup: the spans of the pairs' new click days minus those of the old ones;
- RecipientDayRollup: each recipient's clicked / opened flags per day and device,
  recomputed from all its pairs' cells and its open events (a click implies an open:
  docs/metrics.md); rows only change under the recipient's lock, so the stored rows are
  the state last counted in the spans;
- EmailSpanRollup: the spans of the recipients' new flags minus those of the old rows.

The link day and span changes come out of the pairs' own statement (clickmap/rollups.py,
`link_spans_sql`), the recipients' from `recipient_days_sql`, and `add_deltas_sql` adds
them, in key order, after the batch's other rollups, so workers lock rows in one global
order. The chains are window functions and only differences travel. `rebuild_selects`
fills the four tables from scratch.
"""

from collections import Counter

from clickmap.counters import add_counters
from clickmap.models import COUNTERS, RECIPIENT_FLAGS

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


def recipient_days_sql(cursor, recipients: dict) -> tuple[Counter, Counter]:
    """Write the batch's recipients' day rows (recomputed from their pairs' day cells and
    their opens); returns the changes to the email spans, for everyone and per segment,
    for `add_deltas_sql` (the link day and span changes come with the pairs' recompute,
    clickmap.rollups). recipients: (variant, customer) -> (workspace, delivery), locked."""
    if not recipients:
        return Counter(), Counter()
    keys = sorted(recipients)
    changed = " OR ".join(f"j.{f} IS DISTINCT FROM j.o_{f}" for f in RECIPIENT_FLAGS)
    email_columns = "workspace_id, variant_id, kind, device, reliable, day, since, n"

    def segment_spans(rows: str) -> str:
        return email_spans_sql(
            f"(SELECT x.*, m.segment_id FROM {rows} x "
            "JOIN member m ON m.customer_id = x.customer_id) AS x",
            by_segment=True,
            from_days="changed_from",
        )

    # The recipients' rows as last counted (old) and anew (r): only the differences are
    # written, and the spans of both are returned, the old ones to subtract.
    cursor.execute(
        f"""
        WITH k AS (
            SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
                AS t(workspace_id, variant_id, customer_id, delivery_id)),
        {MEMBERS_SQL.format(source="k")},
        old AS MATERIALIZED (
            SELECT x.* FROM k CROSS JOIN LATERAL (
                SELECT x.id, x.workspace_id, x.variant_id, x.customer_id, x.day, x.device,
                       {", ".join(f"x.{f}" for f in RECIPIENT_FLAGS)}
                FROM clickmap_recipientdayrollup x
                WHERE x.variant_id = k.variant_id AND x.customer_id = k.customer_id
                OFFSET 0) x),
        r AS MATERIALIZED (
            SELECT workspace_id, variant_id, customer_id, day, device,
                   bool_or(ca) AS clicked_all, bool_or(cr) AS clicked_rel,
                   bool_or(oa) AS opened_all, bool_or(orl) AS opened_rel
            -- A click implies an open on its day and device (docs/metrics.md).
            FROM (SELECT k.workspace_id, k.variant_id, k.customer_id, x.day, x.device,
                         x.total_all > 0 AS ca, x.total_rel > 0 AS cr,
                         x.total_all > 0 AS oa, x.total_rel > 0 AS orl
                  FROM k CROSS JOIN LATERAL (
                      SELECT x.day, x.device, x.total_all, x.total_rel
                      FROM clickmap_pairdayrollup x
                      WHERE x.customer_id = k.customer_id AND x.variant_id = k.variant_id
                      OFFSET 0) x
                  UNION ALL
                  SELECT k.workspace_id, k.variant_id, k.customer_id,
                         (o.at AT TIME ZONE 'UTC')::date, o.device, false, false, true,
                         o.reliable
                  FROM k CROSS JOIN LATERAL (
                      SELECT o.at, o.device, o.reliable FROM tracking_openevent o
                      WHERE o.delivery_id = k.delivery_id OFFSET 0) o) s
            GROUP BY workspace_id, variant_id, customer_id, day, device),
        j AS MATERIALIZED (
            SELECT o.id, r.*, {", ".join(f"o.{f} AS o_{f}" for f in RECIPIENT_FLAGS)},
                   o.variant_id AS o_variant_id, o.customer_id AS o_customer_id,
                   o.day AS o_day
            FROM r FULL JOIN old o
              ON o.variant_id = r.variant_id AND o.customer_id = r.customer_id
             AND o.day = r.day AND o.device = r.device),
        -- Each recipient's first day whose row changes: the spans before it are the same
        -- before and after, so only those from it on are computed (and subtracted).
        changed_from AS MATERIALIZED (
            SELECT coalesce(variant_id, o_variant_id) AS variant_id,
                   coalesce(customer_id, o_customer_id) AS customer_id,
                   min(coalesce(day, o_day)) AS from_day
            FROM j WHERE {changed} GROUP BY 1, 2),
        gone AS (
            DELETE FROM clickmap_recipientdayrollup
            WHERE id = ANY(ARRAY(SELECT id FROM j WHERE variant_id IS NULL))),
        changed AS (
            UPDATE clickmap_recipientdayrollup x
            SET {", ".join(f"{f} = j.{f}" for f in RECIPIENT_FLAGS)}
            FROM j WHERE x.id = j.id
            AND x.id = ANY(ARRAY(SELECT id FROM j
                                 WHERE id IS NOT NULL AND variant_id IS NOT NULL
                                 AND ({changed})))),
        added AS (
            INSERT INTO clickmap_recipientdayrollup (workspace_id, variant_id, customer_id,
                day, device, {", ".join(RECIPIENT_FLAGS)})
            SELECT workspace_id, variant_id, customer_id, day, device, {", ".join(RECIPIENT_FLAGS)}
            FROM j WHERE id IS NULL ORDER BY variant_id, customer_id, day, device)
        SELECT -1, NULL::bigint, * FROM ({email_spans_sql("old", from_days="changed_from")}) s
        UNION ALL
        SELECT 1, NULL, * FROM ({email_spans_sql("r", from_days="changed_from")}) s
        UNION ALL
        -- The same per segment of the recipients (clickmap/segment_rollups.py).
        SELECT -1, segment_id, {email_columns} FROM ({segment_spans("old")}) s
        UNION ALL
        SELECT 1, segment_id, {email_columns} FROM ({segment_spans("r")}) s""",
        [
            [recipients[k][0] for k in keys],
            [k[0] for k in keys],
            [k[1] for k in keys],
            [recipients[k][1] for k in keys],
        ],
    )
    email_deltas, segment_deltas = Counter(), Counter()
    for sign, segment, workspace, *key, n in cursor.fetchall():
        if segment is None:
            email_deltas[(workspace, *key)] += sign * n
        else:
            segment_deltas[(workspace, segment, *key)] += sign * n
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
