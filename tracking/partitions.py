"""Monthly range partitions of the raw event tables (docs/partitioning.md).

`partition_event_tables` turns tracking_clickevent and tracking_openevent into tables
partitioned by month of `at` (a migration runs it once); `ensure_partitions` creates
the coming months' partitions (celery beat runs it daily) so that the DEFAULT partition,
which catches only far-off timestamps, stays empty; rows that land there anyway move into
their month's partition when it is created.
"""

from datetime import UTC, date, datetime

from django.db import connection, transaction

EVENT_TABLES = ("tracking_clickevent", "tracking_openevent")
MONTHS_AHEAD = 3


def _month(day: date, offset: int = 0) -> date:
    index = day.year * 12 + day.month - 1 + offset
    return date(index // 12, index % 12 + 1, 1)


def is_partitioned(cursor, table: str) -> bool:
    cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s", [table])
    row = cursor.fetchone()
    return bool(row) and row[0] == "p"


def ensure_partitions(today: date | None = None, months_ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create missing monthly partitions from this month to `months_ahead` ahead."""
    today = today or datetime.now(UTC).date()
    created = []
    with connection.cursor() as cursor:
        for table in EVENT_TABLES:
            if not is_partitioned(cursor, table):
                continue
            for offset in range(months_ahead + 1):
                with transaction.atomic():  # each month's locks, only while it is made
                    created += _create_month(cursor, table, _month(today, offset))
    return created


def _create_month(cursor, table: str, month: date) -> list[str]:
    """Create `table`'s partition of `month` unless it exists.

    Rows of that month already in the DEFAULT partition (a far-off timestamp that came
    first) would make PostgreSQL refuse the new partition, so they are moved into it:
    the partition is built beside the table, filled with them, and attached, while the
    table takes no writes (a few moments, and only when such rows exist)."""
    name = f"{table}_y{month.year}m{month.month:02d}"
    cursor.execute("SELECT 1 FROM pg_class WHERE relname = %s", [name])
    if cursor.fetchone():
        return []
    bounds = [month.isoformat(), _month(month, 1).isoformat()]
    default = f"{table}_default"
    cursor.execute(
        f'SELECT EXISTS (SELECT 1 FROM "{default}" WHERE at >= %s AND at < %s)',  # noqa: S608
        bounds,
    )
    if not cursor.fetchone()[0]:
        cursor.execute(
            f'CREATE TABLE "{name}" PARTITION OF "{table}" FOR VALUES FROM (%s) TO (%s)', bounds
        )
        return [name]
    cursor.execute(f'LOCK TABLE "{table}" IN SHARE ROW EXCLUSIVE MODE')
    cursor.execute(f'CREATE TABLE "{name}" (LIKE "{table}" INCLUDING DEFAULTS)')
    cursor.execute(
        f"""WITH moved AS (DELETE FROM "{default}" WHERE at >= %s AND at < %s RETURNING *)
            INSERT INTO "{name}" SELECT * FROM moved""",  # noqa: S608
        bounds,
    )
    # Attaching creates the table's indexes, keys and foreign keys on the partition.
    cursor.execute(
        f'ALTER TABLE "{table}" ATTACH PARTITION "{name}" FOR VALUES FROM (%s) TO (%s)', bounds
    )
    return [name]


def _fetch(cursor, sql: str, params=None) -> list:
    cursor.execute(sql, params)
    return cursor.fetchall()


def partition_event_tables(today: date | None = None) -> None:
    """Rebuild each event table as a partitioned one, keeping every row.

    The primary key becomes (id, at) and each unique constraint (the event id's) gains
    `at`: a partitioned table's unique keys must hold the partition key. Ingestion still
    inserts each spooled event once, since a re-read event has the same id and time. The
    indexes and foreign keys are recreated on the new table as the old one had them,
    under the same names (read from the catalog, so later migrations find them).
    """
    today = today or datetime.now(UTC).date()
    with connection.cursor() as cursor:
        for table in EVENT_TABLES:
            if is_partitioned(cursor, table):
                continue
            old = f"{table}_unpartitioned"
            indexes = _fetch(
                cursor,
                """SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x
                   JOIN pg_class i ON i.oid = x.indexrelid
                   WHERE x.indrelid = %s::regclass
                     AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)
                   ORDER BY i.relname""",
                [table],
            )
            uniques = _fetch(
                cursor,
                """SELECT conname, array_agg(a.attname ORDER BY k.n) FROM pg_constraint c
                   CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                   WHERE c.conrelid = %s::regclass AND c.contype = 'u'
                   GROUP BY conname ORDER BY conname""",
                [table],
            )
            foreign_keys = _fetch(
                cursor,
                """SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
                   WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname""",
                [table],
            )
            cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
            cursor.execute(f'ALTER TABLE "{old}" RENAME CONSTRAINT "{table}_pkey" TO "{old}_pkey"')
            for name, _ in uniques:
                cursor.execute(f'ALTER TABLE "{old}" DROP CONSTRAINT "{name}"')
            for name, _ in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
            cursor.execute(
                f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS) PARTITION BY RANGE (at)'
            )
            cursor.execute(f'ALTER TABLE "{table}" ALTER COLUMN id DROP DEFAULT')
            cursor.execute(f'CREATE SEQUENCE "{table}_id_partitioned_seq" OWNED BY "{table}".id')
            # The old identity sequence goes with the old table; this one continues it.
            sequence = f'"{table}_id_partitioned_seq"'
            cursor.execute(f'SELECT COALESCE(max(id), 0) + 1 FROM "{old}"')  # noqa: S608
            cursor.execute("SELECT setval(%s, %s, false)", [sequence, cursor.fetchone()[0]])
            cursor.execute(
                f"ALTER TABLE \"{table}\" ALTER COLUMN id SET DEFAULT nextval('{sequence}')"
            )
            cursor.execute(
                f'ALTER TABLE "{table}" ADD CONSTRAINT "{table}_pkey" PRIMARY KEY (id, at)'
            )
            for name, columns in uniques:
                keys = ", ".join(f'"{c}"' for c in dict.fromkeys([*columns, "at"]))
                cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" UNIQUE ({keys})')
            for _, definition in indexes:  # the old table's own statements, same names
                cursor.execute(definition)
            for name, definition in foreign_keys:
                cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
            cursor.execute(f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT')
            cursor.execute(f'SELECT min(at) FROM "{old}"')  # noqa: S608
            first = cursor.fetchone()[0]
            month = _month(first.date() if first else today)
            while month <= _month(today, MONTHS_AHEAD):
                _create_month(cursor, table, month)
                month = _month(month, 1)
            cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{old}"')  # noqa: S608
            cursor.execute(f'DROP TABLE "{old}"')
