"""Database triggers that keep DeliveryCount (deliveries per variant and status) exact.

Every write to campaigns_delivery, whoever makes it (ORM save, bulk_create, queryset
update or delete, cascades, raw SQL, bulk loads), changes the counts in the same
transaction, so `DeliveryCount.n` always equals
`SELECT count(*) FROM campaigns_delivery GROUP BY variant_id, status`. A row whose count
reaches 0 is deleted, so deleting a campaign leaves no counts behind (the table has no
foreign key to clean up after it).

- PostgreSQL: one statement-level trigger per event over transition tables; each
  statement becomes one upsert of its per-(variant, status) deltas, in key order so
  concurrent writers lock the counters in the same order. The triggers are ENABLE ALWAYS:
  they fire under session_replication_role = replica too, which bulk loads use to skip
  foreign-key checks (bench/rollups_data.py).
- SQLite (the embedded default): row-level triggers.

SQLite rebuilds a table for most ALTERs (copy, drop, rename), which drops its triggers:
a later migration that alters campaigns_delivery must call `install` again
(tests/test_delivery_counts.py runs migrate on SQLite and would notice).
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

_SQLITE_ADD = """
    INSERT OR IGNORE INTO campaigns_deliverycount (variant_id, status, n)
    VALUES (NEW.variant_id, NEW.status, 0);
    UPDATE campaigns_deliverycount SET n = n + 1
    WHERE variant_id = NEW.variant_id AND status = NEW.status;
"""
_SQLITE_REMOVE = """
    UPDATE campaigns_deliverycount SET n = n - 1
    WHERE variant_id = OLD.variant_id AND status = OLD.status;
    DELETE FROM campaigns_deliverycount
    WHERE variant_id = OLD.variant_id AND status = OLD.status AND n = 0;
"""
_SQLITE_TRIGGERS = [
    ("campaigns_delivery_count_insert", "AFTER INSERT ON campaigns_delivery", _SQLITE_ADD),
    (
        "campaigns_delivery_count_update",
        "AFTER UPDATE OF variant_id, status ON campaigns_delivery "
        "WHEN OLD.variant_id IS NOT NEW.variant_id OR OLD.status IS NOT NEW.status",
        _SQLITE_REMOVE + _SQLITE_ADD,
    ),
    ("campaigns_delivery_count_delete", "AFTER DELETE ON campaigns_delivery", _SQLITE_REMOVE),
]

_FILL = """
    INSERT INTO campaigns_deliverycount (variant_id, status, n)
    SELECT variant_id, status, count(*) FROM campaigns_delivery GROUP BY variant_id, status
"""


def install(schema_editor) -> None:
    """Create the triggers and count the existing deliveries (run in a migration).

    The triggers go in first: on PostgreSQL creating them locks campaigns_delivery
    against writes until the migration commits, so no delivery is missed or counted
    twice between the count and the triggers."""
    uninstall(schema_editor)
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
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
    elif vendor == "sqlite":
        for name, when, body in _SQLITE_TRIGGERS:
            schema_editor.execute(f"CREATE TRIGGER {name} {when} BEGIN {body} END", params=None)
    else:
        raise NotImplementedError(f"No delivery count triggers for {vendor}.")
    schema_editor.execute("DELETE FROM campaigns_deliverycount", params=None)
    schema_editor.execute(_FILL, params=None)


def uninstall(schema_editor) -> None:
    """Drop the triggers (and on PostgreSQL their functions); the counts stay as they are."""
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for name, *_ in _POSTGRES_TRIGGERS:
            schema_editor.execute(
                f"DROP TRIGGER IF EXISTS {name} ON campaigns_delivery", params=None
            )
            schema_editor.execute(f"DROP FUNCTION IF EXISTS {name}()", params=None)
    elif vendor == "sqlite":
        for name, *_ in _SQLITE_TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}", params=None)
