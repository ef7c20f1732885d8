"""Reads of the customer pages: the searched list, its attribute columns, the CSV export
and a customer's segments. Run inside a workspace scope."""

import csv
import json
from collections.abc import Iterator

from django.db import connection
from django.db.models import Q, QuerySet

from campaigns.customer_import import safe_cell
from campaigns.models import Customer, Segment
from campaigns.segments import SegmentRuleError, segment_customers

LIST_COLUMNS = 6  # attribute columns the list shows
NAME_ATTRIBUTES = ("name", "first_name", "last_name", "full_name")
SAMPLE = 1000


def customer_search(q: str = "") -> QuerySet:
    """The workspace's customers, newest first, matching `q` in their email, external id
    or name attributes (case-insensitive, anywhere in the value)."""
    customers = Customer.objects.order_by("-created_at", "-pk")
    q = q.strip()
    if q:
        match = Q(email__icontains=q) | Q(external_id__icontains=q)
        for name in NAME_ATTRIBUTES:
            match |= Q(**{f"attributes__{name}__icontains": q})
        customers = customers.filter(match)
    return customers


def attribute_columns(workspace_id: int, limit: int = LIST_COLUMNS) -> list[str]:
    """The attributes most customers have (of the newest SAMPLE), scalar values only:
    the list's columns."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT e.key FROM (
                SELECT attributes FROM campaigns_customer WHERE workspace_id = %s
                ORDER BY created_at DESC, id DESC LIMIT %s
            ) c, jsonb_each(CASE jsonb_typeof(c.attributes) WHEN 'object'
                                 THEN c.attributes ELSE '{}' END) e
            WHERE jsonb_typeof(e.value) IN ('string', 'number', 'boolean')
            GROUP BY e.key ORDER BY count(*) DESC, e.key LIMIT %s""",
            [workspace_id, SAMPLE, limit],
        )
        return [row[0] for row in cursor.fetchall()]


def all_attribute_names(customers: QuerySet) -> list[str]:
    """Every attribute name among `customers`, sorted (the export's columns)."""
    with connection.cursor() as cursor:
        sql, params = customers.order_by().values("attributes").query.sql_with_params()
        cursor.execute(
            f"""SELECT DISTINCT k FROM ({sql}) c(attributes),
                jsonb_object_keys(CASE jsonb_typeof(c.attributes) WHEN 'object'
                                  THEN c.attributes ELSE '{{}}' END) k ORDER BY k""",  # noqa: S608
            params,
        )
        return [row[0] for row in cursor.fetchall()]


def attribute_text(value) -> str:
    """An attribute as a cell: text as is, numbers and booleans as JSON writes them,
    lists and objects as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class _Echo:
    def write(self, value):
        return value


def export_rows(customers: QuerySet) -> Iterator[str]:
    """The customers as CSV lines (RFC 4180, UTF-8, formula-safe like clickmap/exports):
    external id, email, unsubscribed at, created at, then every attribute."""
    names = all_attribute_names(customers)
    writer = csv.writer(_Echo())
    yield writer.writerow(["external_id", "email", "unsubscribed_at", "created_at", *names])
    rows = customers.order_by("pk").values_list(
        "external_id", "email", "unsubscribed_at", "created_at", "attributes"
    )
    for external_id, email, unsubscribed_at, created_at, attributes in rows.iterator(2000):
        attributes = attributes if isinstance(attributes, dict) else {}
        yield writer.writerow(
            [
                safe_cell(external_id),
                safe_cell(email),
                unsubscribed_at.isoformat() if unsubscribed_at else "",
                created_at.isoformat(),
                *(safe_cell(attribute_text(attributes.get(n))) for n in names),
            ]
        )


def customer_segments(customer: Customer) -> list[Segment]:
    """The segments the customer is in now (by rule or as a listed member)."""
    found = []
    for segment in Segment.objects.order_by("name"):
        try:
            if segment_customers(segment).filter(pk=customer.pk).exists():
                found.append(segment)
        except SegmentRuleError:
            continue
    return found
