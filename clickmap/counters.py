"""Adding deltas to rollup counters: one upsert, in key order, for every rollup table."""

from django.db import connection

TYPES = {
    "workspace_id": "bigint",
    "variant_id": "bigint",
    "link_id": "bigint",
    "segment_id": "bigint",
    "status": "text",
    "day": "date",
    "since": "date",
    "device": "text",
    "kind": "text",
    "reliable": "boolean",
}


def add_counters(table: str, key: tuple, counters: tuple, rows: list) -> None:
    """Add (*key, *counters) rows to the table's counters, creating missing rows, in key
    order (the workspace, first in `key`, is not part of the unique key); rows of zeros
    are left out. One statement."""
    rows = sorted(r for r in rows if any(r[len(key) :]))
    if not rows:
        return
    columns = (*key, *counters)
    unique = ", ".join(key[1:])
    add = ", ".join(f"{c} = x.{c} + excluded.{c}" for c in counters)
    arrays = ", ".join(f"%s::{TYPES.get(c, 'bigint')}[]" for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {table} AS x ({", ".join(columns)})
                SELECT * FROM unnest({arrays}) AS t({", ".join(columns)})
                ORDER BY {unique}
                ON CONFLICT ({unique}) DO UPDATE SET {add}""",
            [list(column) for column in zip(*rows, strict=True)],
        )
