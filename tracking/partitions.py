"""Monthly range partitions of the raw event tables (docs/partitioning.md).

`partition_event_tables` turns tracking_clickevent and tracking_openevent into tables
partitioned by month of `at` (a migration runs it once); `ensure_partitions` creates
the coming months' partitions (celery beat runs it daily) so that the DEFAULT partition,
which catches only far-off timestamps, stays empty.
"""

from datetime import UTC, date, datetime

from django.db import connection

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
                created += _create_month(cursor, table, _month(today, offset))
    return created


def _create_month(cursor, table: str, month: date) -> list[str]:
    name = f"{table}_y{month.year}m{month.month:02d}"
    cursor.execute("SELECT 1 FROM pg_class WHERE relname = %s", [name])
    if cursor.fetchone():
        return []
    cursor.execute(
        f'CREATE TABLE "{name}" PARTITION OF "{table}" '  # noqa: S608 (names are ours)
        "FOR VALUES FROM (%s) TO (%s)",
        [month.isoformat(), _month(month, 1).isoformat()],
    )
    return [name]


# Per table: the indexes and constraints Django created, recreated on the parent under the
# same names so later migrations find them.
_INDEXES = {
    "tracking_clickevent": [
        ("tracking_cl_deliver_c23f46_idx", "(delivery_id, at)"),
        ("tracking_cl_workspa_53394f_idx", "(workspace_id, at)"),
        ("tracking_clickevent_delivery_id_0a71e636", "(delivery_id)"),
        ("tracking_clickevent_link_id_2b4b831b", "(link_id)"),
        ("tracking_clickevent_workspace_id_11f4d73b", "(workspace_id)"),
    ],
    "tracking_openevent": [
        ("tracking_op_deliver_8e98f2_idx", "(delivery_id, at)"),
        ("tracking_op_workspa_93d2a1_idx", "(workspace_id, at)"),
        ("tracking_openevent_delivery_id_5715228d", "(delivery_id)"),
        ("tracking_openevent_workspace_id_7e8462ea", "(workspace_id)"),
    ],
}
_FOREIGN_KEYS = {
    "tracking_clickevent": [
        ("delivery_id", "campaigns_delivery"),
        ("link_id", "campaigns_templatelink"),
        ("workspace_id", "campaigns_workspace"),
    ],
    "tracking_openevent": [
        ("delivery_id", "campaigns_delivery"),
        ("workspace_id", "campaigns_workspace"),
    ],
}


def partition_event_tables(today: date | None = None) -> None:
    """Rebuild each event table as a partitioned one, keeping every row.

    The primary key becomes (id, at) and the event id's uniqueness (event_id, at): a
    partitioned table's unique keys must hold the partition key. Ingestion still
    inserts each spooled event once, since a re-read event has the same id and time.
    """
    today = today or datetime.now(UTC).date()
    with connection.cursor() as cursor:
        for table in EVENT_TABLES:
            if is_partitioned(cursor, table):
                continue
            old = f"{table}_unpartitioned"
            cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
            cursor.execute(f'ALTER TABLE "{old}" RENAME CONSTRAINT "{table}_pkey" TO "{old}_pkey"')
            cursor.execute(f'ALTER TABLE "{old}" DROP CONSTRAINT "{table}_event_id_key"')
            for name, _ in _INDEXES[table]:
                cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
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
            cursor.execute(
                f'ALTER TABLE "{table}" ADD CONSTRAINT "{table}_event_id_key" UNIQUE (event_id, at)'
            )
            for name, columns in _INDEXES[table]:
                cursor.execute(f'CREATE INDEX "{name}" ON "{table}" {columns}')
            for column, target in _FOREIGN_KEYS[table]:
                cursor.execute(
                    f'ALTER TABLE "{table}" ADD FOREIGN KEY ({column}) REFERENCES "{target}" (id) '
                    "DEFERRABLE INITIALLY DEFERRED"
                )
            cursor.execute(f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT')
            cursor.execute(f'SELECT min(at) FROM "{old}"')  # noqa: S608
            first = cursor.fetchone()[0]
            month = _month(first.date() if first else today)
            while month <= _month(today, MONTHS_AHEAD):
                _create_month(cursor, table, month)
                month = _month(month, 1)
            cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{old}"')  # noqa: S608
            cursor.execute(f'DROP TABLE "{old}"')
