"""The click map's figures recounted by brute force from raw rows, in plain Python: an
oracle for page, export and compare tests that never asks clickmap.metrics.

Definitions (docs/metrics.md), restated here on purpose: total = click events; unique =
distinct customers who clicked; rate = unique ÷ distinct delivered customers × 100;
share = total ÷ all links' total × 100; a link and its Outlook-only copy (shown on it)
are one row whose clicks and unique clicks add; clickers = distinct customers with a
click; CTR = clickers ÷ delivered × 100. Rounded to 4 places, as percentages are shown.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from math import erfc, sqrt

from campaigns.models import Delivery, TemplateLink, Variant
from campaigns.segments import segment_customers
from tracking.models import ClickEvent

DELIVERED = ("sent", "delivered")


@dataclass
class Row:
    link: int  # the visible link (Outlook-only copies folded in)
    total: int = 0
    unique: int = 0
    rate: float = 0.0
    share: float = 0.0
    unique_share: float = 0.0


@dataclass
class Recount:
    rows: dict[int, Row]
    delivered: int
    clickers: int
    total_clicks: int

    @property
    def ctr(self) -> float:
        return pct(self.clickers, self.delivered)


def pct(part, whole) -> float:
    return round(100.0 * part / whole, 4) if whole else 0.0


def recount(
    variant_ids,
    fmt: str | None = "html",
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    reliable: bool = False,
    device: str | None = None,
    segment=None,
    customer=None,
) -> Recount:
    """The figures of the given variants' deliveries, from raw rows: the links of their
    template versions in format ``fmt`` (None: every format)."""
    people = None
    if segment is not None:
        people = set(segment_customers(segment).values_list("pk", flat=True))
    if customer is not None:
        people = {customer.pk} if people is None else people & {customer.pk}
    deliveries = {
        d.pk: d
        for d in Delivery.objects.filter(variant_id__in=variant_ids)
        if people is None or d.customer_id in people
    }
    delivered = len({d.customer_id for d in deliveries.values() if d.status in DELIVERED})
    versions = set(
        Variant.objects.filter(pk__in=variant_ids).values_list("template_version_id", flat=True)
    )
    links = TemplateLink.objects.filter(version_id__in=versions)
    if fmt is not None:
        links = links.filter(format=fmt)
    shown_as = {}
    for link in links:
        shown_as[link.pk] = link.twin_id if link.mso and link.twin_id else link.pk
    rows = {pk: Row(pk) for pk in set(shown_as.values())}
    start = datetime.combine(date_from, time.min, tzinfo=UTC) if date_from else None
    end = datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=UTC) if date_to else None
    clickers = set()
    per_link_who = defaultdict(set)
    for click in ClickEvent.objects.filter(delivery_id__in=deliveries, link__isnull=False):
        if click.link_id not in shown_as:
            continue
        if reliable and not click.reliable:
            continue
        if device and click.device != device:
            continue
        if (start and click.at < start) or (end and click.at >= end):
            continue
        customer_id = deliveries[click.delivery_id].customer_id
        rows[shown_as[click.link_id]].total += 1
        per_link_who[click.link_id].add(customer_id)
        clickers.add(customer_id)
    for link_id, who in per_link_who.items():
        rows[shown_as[link_id]].unique += len(who)  # a copy's clickers add to its twin's
    all_total = sum(r.total for r in rows.values())
    all_unique = sum(r.unique for r in rows.values())
    for row in rows.values():
        row.rate = pct(row.unique, delivered)
        row.share = pct(row.total, all_total)
        row.unique_share = pct(row.unique, all_unique)
    return Recount(rows, delivered, len(clickers), all_total)


def z_test(x_a, n_a, x_b, n_b):
    """(difference in points, two-sided p) of B's proportion against A's, written out:
    pooled proportion, its standard error, z, and the normal tail on both sides."""
    p_a, p_b = x_a / n_a, x_b / n_b
    pooled = (x_a + x_b) / (n_a + n_b)
    se = sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return round(100 * (p_b - p_a), 4), None
    z = (p_b - p_a) / se
    return round(100 * (p_b - p_a), 4), erfc(abs(z) / sqrt(2))
