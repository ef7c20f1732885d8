"""The one query module: every metric of PRODUCT.md for a scope.

The dashboard, the exports and the tests all ask here. `link_metrics(scope)` gives the
per-link numbers, `email_totals(scope)` the email's. All-time questions are answered
from LinkRollup / EmailRollup (a few rows per variant); a period, a device, a segment or
one customer is answered from the per-pair, per-day rows (PairDayRollup) and the raw
open events, which is exact as well. Days are UTC days.

Definitions (PRODUCT.md "Metric definitions"), with X = all events or reliable only:
- total: click events on the link; unique: distinct customers who clicked it, or in
  window mode (workspace unique_window_hours > 0) the counted clicks;
- rate: unique / distinct delivered customers of the scope × 100 (the period does not
  change who was delivered to);
- share: total / total of all links; unique share: unique / sum of uniques;
- clickers: distinct customers with a click on any link; CTR = clickers / delivered ×
  100; CTOR = clickers / unique openers × 100; machine openers are those whose every
  open was a machine's (Apple Mail Privacy Protection, proxies, scanners).
"""

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlsplit

from django.db.models import Count, Max, Min, Q, QuerySet, Sum

from campaigns.models import Delivery, TemplateLink, Variant
from campaigns.segments import segment_customers
from clickmap.models import EmailRollup, LinkRollup, PairDayRollup, PairRollup
from tracking.models import ClickEvent, OpenEvent, Unsubscribe

SENT = (Delivery.Status.SENT, Delivery.Status.DELIVERED, Delivery.Status.BOUNCED)
DELIVERED = (Delivery.Status.SENT, Delivery.Status.DELIVERED)


@dataclass(frozen=True)
class Scope:
    """What to count. Run inside the workspace's scope (campaigns.tenancy)."""

    workspace: object
    campaign_id: int | None = None
    node_id: int | None = None
    variant_id: int | None = None
    template_id: int | None = None  # template report: every campaign that used it
    version_id: int | None = None
    format: str | None = None  # "html" | "amp"
    date_from: date | None = None
    date_to: date | None = None  # inclusive
    reliable_only: bool = False
    segment: object | None = None
    customer_id: int | None = None
    device: str | None = None

    @property
    def window_mode(self) -> bool:
        return self.workspace.unique_window_hours > 0

    @property
    def ad_hoc(self) -> bool:
        """Needs the per-day rows: a period, a device, a segment or one customer."""
        return bool(
            self.date_from or self.date_to or self.device or self.segment or self.customer_id
        )


@dataclass
class LinkMetrics:
    link: TemplateLink
    total: int = 0
    unique: int = 0
    rate: float = 0.0
    share: float = 0.0
    unique_share: float = 0.0


@dataclass
class EmailTotals:
    sent: int = 0
    delivered: int = 0
    unique_opens: int = 0
    machine_opens: int = 0
    clickers: int = 0
    ctr: float = 0.0
    ctor: float = 0.0
    unsubscribes: int = 0
    total_clicks: int = 0


def variants(scope: Scope) -> QuerySet:
    qs = Variant.objects.all()
    if scope.campaign_id:
        qs = qs.filter(node__campaign_id=scope.campaign_id)
    if scope.node_id:
        qs = qs.filter(node_id=scope.node_id)
    if scope.variant_id:
        qs = qs.filter(pk=scope.variant_id)
    if scope.template_id:
        qs = qs.filter(template_version__template_id=scope.template_id)
    if scope.version_id:
        qs = qs.filter(template_version_id=scope.version_id)
    if scope.format:
        qs = qs.filter(format=scope.format)
    return qs


def links(scope: Scope) -> QuerySet:
    """The inventory rows the scope's emails were sent with."""
    qs = TemplateLink.objects.filter(version__variants__in=variants(scope)).distinct()
    if scope.version_id:
        qs = qs.filter(version_id=scope.version_id)
    if scope.format:
        qs = qs.filter(format=scope.format)
    return qs.order_by("version_id", "format", "ordinal")


def _customers(scope: Scope, field: str = "customer_id"):
    """A filter on `field` (a customer id) for the scope's customers, or None for all."""
    if scope.customer_id:
        return Q(**{field: scope.customer_id})
    if scope.segment is not None:
        return Q(**{f"{field}__in": segment_customers(scope.segment).values("pk")})
    return None


def _deliveries(scope: Scope) -> QuerySet:
    qs = Delivery.objects.filter(variant__in=variants(scope))
    who = _customers(scope)
    return qs.filter(who) if who is not None else qs


def delivered_customers(scope: Scope) -> int:
    return _deliveries(scope).filter(status__in=DELIVERED).values("customer_id").distinct().count()


def _suffix(scope: Scope) -> str:
    return "rel" if scope.reliable_only else "all"


def pair_days(scope: Scope) -> QuerySet:
    """Per-pair, per-day rows of the scope (period, device and customers applied)."""
    qs = PairDayRollup.objects.filter(variant__in=variants(scope))
    if scope.date_from:
        qs = qs.filter(day__gte=scope.date_from)
    if scope.date_to:
        qs = qs.filter(day__lte=scope.date_to)
    if scope.device:
        qs = qs.filter(device=scope.device)
    who = _customers(scope)
    return qs.filter(who) if who is not None else qs


def _single_node(scope: Scope) -> bool:
    return variants(scope).values("node_id").distinct().count() <= 1


def link_counts(scope: Scope) -> dict[int, tuple[int, int]]:
    """link id -> (total, unique) for the scope."""
    x = _suffix(scope)
    if not scope.ad_hoc:
        rows = (
            LinkRollup.objects.filter(variant__in=variants(scope))
            .values("link_id")
            .annotate(
                total=Sum(f"total_{x}"),
                unique=Sum(f"window_{x}" if scope.window_mode else f"unique_{x}"),
            )
        )
        counts = {r["link_id"]: (r["total"], r["unique"]) for r in rows}
        if not scope.window_mode and not _single_node(scope):
            # One customer can click the same link in two emails of a scenario.
            distinct = (
                PairRollup.objects.filter(variant__in=variants(scope), **{f"total_{x}__gt": 0})
                .values("link_id")
                .annotate(unique=Count("customer_id", distinct=True))
            )
            for r in distinct:
                counts[r["link_id"]] = (counts[r["link_id"]][0], r["unique"])
        return counts
    rows = pair_days(scope).values("link_id")
    if scope.window_mode:
        rows = rows.annotate(total=Sum(f"total_{x}"), unique=Sum(f"window_{x}"))
    else:
        rows = rows.annotate(
            total=Sum(f"total_{x}"),
            unique=Count("customer_id", distinct=True, filter=Q(**{f"total_{x}__gt": 0})),
        )
    return {r["link_id"]: (r["total"] or 0, r["unique"] or 0) for r in rows}


def link_metrics(scope: Scope, *, counts=None, delivered=None) -> list[LinkMetrics]:
    """Every inventory link of the scope's emails with its metrics, in inventory order.
    `counts` (link_counts) and `delivered` may be passed when the caller has them."""
    counts = link_counts(scope) if counts is None else counts
    delivered = delivered_customers(scope) if delivered is None else delivered
    all_total = sum(total for total, _ in counts.values())
    all_unique = sum(unique for _, unique in counts.values())
    result = []
    for link in links(scope):
        total, unique = counts.get(link.pk, (0, 0))
        result.append(
            LinkMetrics(
                link=link,
                total=total,
                unique=unique,
                rate=_pct(unique, delivered),
                share=_pct(total, all_total),
                unique_share=_pct(unique, all_unique),
            )
        )
    return result


def email_totals(scope: Scope, *, counts=None, delivered=None) -> EmailTotals:
    """Sent, delivered, opens, clickers, CTR, CTOR, unsubscribes for the scope.
    `counts` (link_counts) and `delivered` may be passed when the caller has them."""
    x = _suffix(scope)
    deliveries = _deliveries(scope)
    totals = EmailTotals(
        sent=deliveries.filter(status__in=SENT).values("customer_id").distinct().count(),
        delivered=delivered_customers(scope) if delivered is None else delivered,
        unsubscribes=Unsubscribe.objects.filter(delivery__in=deliveries).count(),
    )
    counts = link_counts(scope) if counts is None else counts
    totals.total_clicks = sum(total for total, _ in counts.values())
    if not scope.ad_hoc and _single_node(scope):
        sums = EmailRollup.objects.filter(variant__in=variants(scope)).aggregate(
            clickers=Sum(f"clickers_{x}"), openers=Sum("openers_all"), human=Sum("openers_rel")
        )
        clickers, openers, human = (sums[k] or 0 for k in ("clickers", "openers", "human"))
    else:
        clickers = (
            pair_days(scope)
            .filter(**{f"total_{x}__gt": 0})
            .values("customer_id")
            .distinct()
            .count()
        )
        opens = OpenEvent.objects.filter(delivery__in=deliveries)
        if scope.date_from:
            opens = opens.filter(at__gte=_utc_midnight(scope.date_from))
        if scope.date_to:
            opens = opens.filter(at__lt=_utc_midnight(scope.date_to + timedelta(days=1)))
        if scope.device:
            opens = opens.filter(device=scope.device)
        openers = opens.values("delivery__customer_id").distinct().count()
        human = opens.filter(reliable=True).values("delivery__customer_id").distinct().count()
    totals.clickers = clickers
    totals.unique_opens = human if scope.reliable_only else openers
    totals.machine_opens = openers - human
    totals.ctr = _pct(clickers, totals.delivered)
    totals.ctor = _pct(clickers, totals.unique_opens)
    return totals


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 4) if whole else 0.0


def clicks_per_day(scope: Scope) -> list[tuple[date, int]]:
    """Clicks per UTC day in the scope, oldest first."""
    x = _suffix(scope)
    rows = pair_days(scope).values("day").annotate(n=Sum(f"total_{x}")).order_by("day")
    return [(r["day"], r["n"] or 0) for r in rows]


def _clicks(scope: Scope) -> QuerySet:
    """Raw click events of the scope (for breakdowns the rollups do not keep)."""
    clicks = ClickEvent.objects.filter(delivery__variant__in=variants(scope), link__isnull=False)
    if scope.reliable_only:
        clicks = clicks.filter(reliable=True)
    if scope.device:
        clicks = clicks.filter(device=scope.device)
    if scope.date_from:
        clicks = clicks.filter(at__gte=_utc_midnight(scope.date_from))
    if scope.date_to:
        clicks = clicks.filter(at__lt=_utc_midnight(scope.date_to + timedelta(days=1)))
    who = _customers(scope, "delivery__customer_id")
    return clicks.filter(who) if who is not None else clicks


def destination_domains(scope: Scope, link_ids) -> list[dict]:
    """Clicks on the given (personalised) links grouped by the destination's domain:
    [{"domain", "total", "unique"}], most clicked first."""
    groups = defaultdict(lambda: [0, set()])
    for url, customer_id in (
        _clicks(scope).filter(link_id__in=link_ids).values_list("url", "delivery__customer_id")
    ).iterator():
        group = groups[urlsplit(url).hostname or "(none)"]
        group[0] += 1
        group[1].add(customer_id)
    return sorted(
        ({"domain": d, "total": n, "unique": len(who)} for d, (n, who) in groups.items()),
        key=lambda g: (-g["total"], g["domain"]),
    )


def link_clickers(scope: Scope, link_ids) -> QuerySet:
    """Who clicked the links: one row per customer with first and last click, clicks and
    reliable clicks, most recent first."""
    return (
        _clicks(replace(scope, reliable_only=False))
        .filter(link_id__in=link_ids)
        .values(
            "delivery__customer_id", "delivery__customer__email", "delivery__customer__external_id"
        )
        .annotate(
            first=Min("at"),
            last=Max("at"),
            clicks=Count("pk"),
            reliable_clicks=Count("pk", filter=Q(reliable=True)),
        )
        .filter(**({"reliable_clicks__gt": 0} if scope.reliable_only else {}))
        .order_by("-last", "delivery__customer_id")
    )
