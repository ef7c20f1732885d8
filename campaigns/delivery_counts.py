"""Database triggers that keep DeliveryCount (deliveries per variant and status) exact.

Every write to campaigns_delivery, whoever makes it (ORM save, bulk_create, queryset
update or delete, cascades, raw SQL, bulk loads), changes the counts in the same
transaction, so `DeliveryCount.n` always equals
`SELECT count(*) FROM campaigns_delivery GROUP BY variant_id, status`. A row whose count
reaches 0 is deleted, so deleting a campaign leaves no counts behind (the table has no
foreign key to clean up after it).

One statement-level trigger per event over transition tables: each statement becomes one
upsert of its per-(variant, status) deltas, in key order so concurrent writers lock the
counters in the same order. The triggers are ENABLE ALWAYS: they fire under
session_replication_role = replica too, which bulk loads use to skip foreign-key checks
(bench/rollups_data.py).
"""

# (variant_id, status, d): the statement's change per key; keys whose change nets to 0
# (an update of other columns) are skipped, so they lock nothing.
_UPSERT = """
    WITH changed AS (
        INSERT INTO campaigns_deliverycount AS c (variant_id, status, n)
        SELECT variant_id, status, sum(d) FROM ({deltas}) AS delta
        GROUP BY variant_id, status HAVING sum(d) <> 0
        ORDER BY variant_id, status
        ON CONFLICT (variant_id, status) DO UPDATE SET n = c.n + EXCLUDED.n
        RETURNING c.id, c.n
    )
    SELECT array_agg(id) INTO zero FROM changed WHERE n = 0;
    -- A separate statement: a data-modifying CTE cannot delete the rows it just updated.
    IF zero IS NOT NULL THEN
        DELETE FROM campaigns_deliverycount WHERE id = ANY(zero) AND n = 0;
    END IF;
"""
_NEW = "SELECT variant_id, status, 1 AS d FROM new_rows"
_OLD = "SELECT variant_id, status, -1 AS d FROM old_rows"

_POSTGRES_FUNCTION = """
    CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE zero bigint[];
    BEGIN
        {body}
        RETURN NULL;
    END $$
"""
# (trigger and function name, event, transition tables, function body)
_POSTGRES_TRIGGERS = [
    (
        "campaigns_delivery_count_insert",
        "INSERT",
        "REFERENCING NEW TABLE AS new_rows",
        _UPSERT.format(deltas=_NEW),
    ),
    (
        "campaigns_delivery_count_update",
        # Transition tables rule out `UPDATE OF variant_id, status`: it fires on every update.
        "UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        _UPSERT.format(deltas=f"{_OLD} UNION ALL {_NEW}"),
    ),
    (
        "campaigns_delivery_count_delete",
        "DELETE",
        "REFERENCING OLD TABLE AS old_rows",
        _UPSERT.format(deltas=_OLD),
    ),
    (
        "campaigns_delivery_count_truncate",
        "TRUNCATE",
        "",
        "DELETE FROM campaigns_deliverycount;",
    ),
]

_FILL = """
    INSERT INTO campaigns_deliverycount (variant_id, status, n)
    SELECT variant_id, status, count(*) FROM campaigns_delivery GROUP BY variant_id, status
"""


def install(schema_editor) -> None:
    """Create the triggers and count the existing deliveries (run in a migration).

    The triggers go in first: creating them locks campaigns_delivery against writes
    until the migration commits, so no delivery is missed or counted twice between the
    count and the triggers."""
    uninstall(schema_editor)
    for name, event, transition, body in _POSTGRES_TRIGGERS:
        schema_editor.execute(_POSTGRES_FUNCTION.format(name=name, body=body), params=None)
        schema_editor.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON campaigns_delivery {transition} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()",
            params=None,
        )
        schema_editor.execute(
            f"ALTER TABLE campaigns_delivery ENABLE ALWAYS TRIGGER {name}", params=None
        )
    schema_editor.execute("DELETE FROM campaigns_deliverycount", params=None)
    schema_editor.execute(_FILL, params=None)


def uninstall(schema_editor) -> None:
    """Drop the triggers and their functions; the counts stay as they are."""
    for name, *_ in _POSTGRES_TRIGGERS:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON campaigns_delivery", params=None)
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {name}()", params=None)
