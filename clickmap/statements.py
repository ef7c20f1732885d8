"""Helpers for the aggregator's multi-statement steps (clickmap/rollups.py,
clickmap/spans.py): a step's intermediate results go to temporary tables that later
statements read, and each statement's rows come back as a typed row, read by name."""


def temp_table(cursor, name: str, select: str, params=None) -> None:
    """Store `select`'s rows as the temporary table `name`, for the statements after it.
    Dropped with the transaction (ON COMMIT DROP, or its rollback) if the step does not
    drop it first, as the steps do, so a later step in one transaction can create it
    again."""
    cursor.execute(f"CREATE TEMP TABLE {name} ON COMMIT DROP AS {select}", params)


def fetch_typed(cursor, row: type, sql: str, params=None) -> list:
    """Run a statement and read its rows as `row`s (a NamedTuple), each column by its
    name in `cursor.description`: a statement whose columns are not exactly `row`'s
    fields fails here, not as a shifted value somewhere downstream."""
    cursor.execute(sql, params)
    names = [column[0] for column in cursor.description]
    if sorted(names) != sorted(row._fields):
        raise RuntimeError(
            f"{row.__name__} expects the columns {row._fields}; the statement has {names}"
        )
    order = [names.index(name) for name in row._fields]
    return [row._make(values[i] for i in order) for values in cursor.fetchall()]
