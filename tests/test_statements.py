"""The aggregator's statement helpers (clickmap/statements.py) on the real PostgreSQL:
rows are read by column name, a statement whose columns differ from its row type fails,
and a step's temporary table can be made again in the same transaction once dropped."""

from typing import NamedTuple

import pytest
from django.db import connection

from clickmap.statements import fetch_typed, temp_table


class Pair(NamedTuple):
    a: int
    b: str


@pytest.mark.django_db
def test_columns_are_read_by_name_not_position():
    with connection.cursor() as cursor:
        rows = fetch_typed(cursor, Pair, "SELECT 'x' AS b, 1 AS a UNION ALL SELECT 'y', 2")
    assert rows == [Pair(a=1, b="x"), Pair(a=2, b="y")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 AS a",  # a column missing
        "SELECT 1 AS a, 'x' AS b, 2 AS c",  # one too many
        "SELECT 1 AS a, 'x' AS c",  # a misnamed one
        "SELECT 1 AS a, 'x' AS a",  # the same name twice
    ],
)
def test_a_column_mismatch_fails_loudly(sql):
    with connection.cursor() as cursor, pytest.raises(RuntimeError, match="Pair expects"):
        fetch_typed(cursor, Pair, sql)


@pytest.mark.django_db
def test_a_temporary_table_is_read_and_made_again():
    with connection.cursor() as cursor:
        for n in (3, 5):
            temp_table(cursor, "batch_numbers", "SELECT generate_series(1, %s) AS a", [n])
            rows = fetch_typed(cursor, Pair, "SELECT a, a::text AS b FROM batch_numbers")
            cursor.execute("DROP TABLE batch_numbers")
            assert [r.a for r in rows] == list(range(1, n + 1))
