"""PostgreSQL helpers for the set-based aggregator (clickmap/rollups.py).

- `clickmap_window_last(at, hours)`: an aggregate that, run as a window function over one
  pair's clicks in (at, id) order, gives the time of the last *counted* click so far
  (a click counts when no counted click lies within `hours` before it; 0 hours: only
  the first one). A click was counted exactly when that value changes at its row.
- An index on the clicks by pair, in window order, holding what the aggregator reads:
  recomputing a pair is one index range, and a full rebuild reads the clicks already
  in order. (On the partitioned table it is created on every partition.)
- Free space in the rollup tables' pages (fillfactor): the aggregator rewrites counters
  in place, and an update that fits its page touches none of the table's indexes (a
  HOT update).

Neither is visible to Django's model state: they are a cache of how the aggregator
reads, and models.py need not know them.
"""

from django.db import migrations

# Pair counters change with every click on the pair; day cells mostly get appended.
FILLFACTORS = {
    "clickmap_pairrollup": 70,
    "clickmap_pairdayrollup": 85,
    "clickmap_recipientrollup": 85,
    "clickmap_linkrollup": 50,
    "clickmap_emailrollup": 50,
}
CREATE = [
    """
    CREATE OR REPLACE FUNCTION clickmap_window_step(last timestamptz, at timestamptz, hours integer)
    RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE WHEN last IS NULL OR (hours > 0 AND at >= last + make_interval(hours => hours))
                    THEN at ELSE last END
    $$
    """,
    """
    CREATE OR REPLACE AGGREGATE clickmap_window_last(timestamptz, integer) (
        SFUNC = clickmap_window_step, STYPE = timestamptz, PARALLEL = SAFE
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS clickmap_click_pair_idx ON tracking_clickevent
        (delivery_id, link_id, at, id) INCLUDE (reliable, device)
    """,
    *(
        f"ALTER TABLE {table} SET (fillfactor = {fillfactor})"
        for table, fillfactor in FILLFACTORS.items()
    ),
]
DROP = [
    *(f"ALTER TABLE {table} RESET (fillfactor)" for table in FILLFACTORS),
    "DROP INDEX IF EXISTS clickmap_click_pair_idx",
    "DROP AGGREGATE IF EXISTS clickmap_window_last(timestamptz, integer)",
    "DROP FUNCTION IF EXISTS clickmap_window_step(timestamptz, timestamptz, integer)",
]


def _run(statements):
    def run(apps, schema_editor):
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("clickmap", "0001_rollups"),
        # After partitioning, which rebuilds the click table (and would drop the index).
        ("tracking", "0003_partition_events"),
    ]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP))]
