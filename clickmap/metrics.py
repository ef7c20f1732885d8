"""The one query module: every figure of docs/metrics.md for a scope.

The dashboard, the exports and the tests all ask here. `link_metrics(scope)` gives the
per-link numbers, `email_totals(scope)` the email's. Which rollup tables answer a scope
is one choice, `route(scope)` (docs/aggregation.md, "Reading"): all time from LinkRollup
/ EmailRollup (a few rows per variant); a period or a device from the per-day rows and
spans (LinkDayRollup, LinkSpanRollup, EmailSpanRollup: a few hundred rows per link, exact
distinct counts over any range of days); a segment of one email from the segment's own
twins of those tables (clickmap/segment_rollups.py); one customer, a segment not yet
evaluated by the aggregator, or distinct customers across several emails of a scenario
(where a customer counts once) from distinct counts over the per-customer rows
(PairRollup, RecipientRollup, or their per-day rows), which is exact as well. Days are
UTC days.

The definitions (docs/metrics.md), with X = all events or reliable only:
- total: click events on the link; unique: distinct customers who clicked it, or in
  window mode (workspace unique_window_hours > 0) the counted clicks;
- rate: unique / distinct delivered customers of the scope × 100 (the period does not
  change who was delivered to);
- share: total / total of all links; unique share: unique / sum of uniques;
- clickers: distinct customers with a click on any link; CTR = clickers / delivered ×
  100; unique opens: distinct customers with an open or a click (a click implies an
  open; reliable-only: a reliable open or a reliable click), so CTOR = clickers / unique
  opens × 100 never exceeds 100; machine openers are openers without a reliable one.
"""

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from functools import cached_property
from urllib.parse import urlsplit

from django.conf import settings
from django.db.models import Count, Max, Min, Q, QuerySet, Sum

from campaigns.linkmatch import Match, match_links
from campaigns.models import Delivery, DeliveryCount, TemplateLink, Variant
from campaigns.segments import segment_customers
from clickmap import segment_rollups
from clickmap.models import (
    DAY_ZERO,
    SEGMENT_ROLLUPS,
    EmailRollup,
    EmailSpanRollup,
    LinkDayRollup,
    LinkRollup,
    LinkSpanRollup,
    PairDayRollup,
    PairRollup,
    RecipientDayRollup,
    RecipientRollup,
    SegmentDeliveryCount,
    SegmentMember,
)
from clickmap.significance import ProportionTest, two_proportion_test
from tracking.models import ClickEvent, Unsubscribe

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

    # Asked several times per page: one query each, cached on the scope (a scope lives
    # for one request; `replace` makes a new one).
    @cached_property
    def _variants(self) -> list[tuple[int, int, int]]:
        """(id, node, template version) of the scope's variants."""
        return list(variants(self).values_list("pk", "node_id", "template_version_id"))

    @property
    def variant_ids(self) -> list[int]:
        return [pk for pk, _, _ in self._variants]

    @property
    def version_ids(self) -> set[int]:
        """The template versions whose links the scope counts: the scope's version when
        it names one (its links are listed, with zeros, before any email sent it)."""
        if self.version_id:
            return {self.version_id}
        return {version for _, _, version in self._variants}

    @property
    def single_node(self) -> bool:
        """The scope's emails are one node, where a delivery is a distinct customer."""
        return len({node for _, node, _ in self._variants}) <= 1

    @cached_property
    def segment_rollups_current(self) -> bool:
        return self.segment is not None and segment_rollups.current(self.segment)

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
    qs = TemplateLink.objects.filter(version_id__in=scope.version_ids)
    if scope.format:
        qs = qs.filter(format=scope.format)
    return qs.order_by("version_id", "format", "ordinal")


def _customers(scope: Scope, field: str = "customer_id"):
    """A filter on `field` (a customer id) for the scope's customers, or None for all.
    A segment's customers are its members as its rollups count them, when they are kept
    (clickmap/segment_rollups.py), so every number of a page counts the same people."""
    if scope.customer_id:
        return Q(**{field: scope.customer_id})
    if scope.segment is not None:
        if scope.segment_rollups_current:
            members = SegmentMember.objects.filter(segment=scope.segment)
            return Q(**{f"{field}__in": members.values("customer_id")})
        return Q(**{f"{field}__in": segment_customers(scope.segment).values("pk")})
    return None


def _deliveries(scope: Scope) -> QuerySet:
    qs = Delivery.objects.filter(variant_id__in=scope.variant_ids)
    who = _customers(scope)
    return qs.filter(who) if who is not None else qs


def delivered_customers(scope: Scope) -> int:
    return _customers_by_status(scope, delivered=DELIVERED)["delivered"]


def _customers_by_status(scope: Scope, **groups) -> dict[str, int]:
    """Distinct customers of the scope with a delivery in each group of statuses, e.g.
    (sent=SENT) -> {"sent": n}. Exact: from the per-variant counts (one query) when the
    counted deliveries all lie in one node, where a delivery is a distinct customer (one
    per node and customer); else a distinct count over the deliveries."""
    statuses = sorted({status for group in groups.values() for status in group})
    sums = {name: Sum("n", filter=Q(status__in=group)) for name, group in groups.items()}
    if _segment_kept(scope):  # the period and device do not change who was delivered to
        counts = SegmentDeliveryCount.objects.filter(
            segment=scope.segment, variant_id__in=scope.variant_ids
        )
        found = counts.filter(status__in=statuses).aggregate(**sums)
        return {name: n or 0 for name, n in found.items()}
    if scope.segment is None and not scope.customer_id:
        found = DeliveryCount.objects.filter(
            variant__in=variants(scope), status__in=statuses
        ).aggregate(nodes=Count("variant__node_id", distinct=True), **sums)
        if found.pop("nodes") <= 1:
            return {name: n or 0 for name, n in found.items()}
    # One pass over the deliveries; in one node a delivery is a distinct customer.
    single = scope.single_node
    return _deliveries(scope).aggregate(
        **{
            name: Count("pk", filter=Q(status__in=group))
            if single
            else Count("customer_id", distinct=True, filter=Q(status__in=group))
            for name, group in groups.items()
        }
    )


def _suffix(scope: Scope) -> str:
    return "rel" if scope.reliable_only else "all"


def _has_days(scope: Scope) -> bool:
    return bool(scope.date_from or scope.date_to or scope.device)


def _per_day(model, scope: Scope) -> QuerySet:
    """Per-day, per-device rows of `model` for the scope's variants, period and device."""
    return _on_days(model.objects.filter(variant_id__in=scope.variant_ids), scope)


def _on_days(rows: QuerySet, scope: Scope) -> QuerySet:
    """Day rows within the scope's period, on its device."""
    if scope.date_from:
        rows = rows.filter(day__gte=scope.date_from)
    if scope.date_to:
        rows = rows.filter(day__lte=scope.date_to)
    return rows.filter(device=scope.device) if scope.device else rows


def _of_customers(qs: QuerySet, scope: Scope) -> QuerySet:
    who = _customers(scope)
    return qs.filter(who) if who is not None else qs


def pair_days(scope: Scope) -> QuerySet:
    """Per-pair, per-day rows of the scope (period, device and customers applied)."""
    return _of_customers(_per_day(PairDayRollup, scope), scope)


def _recipients(scope: Scope) -> QuerySet:
    """Whether each customer of the scope clicked / opened: per variant (RecipientRollup),
    or per day and device for a period or a device (RecipientDayRollup)."""
    if _has_days(scope):
        return _of_customers(_per_day(RecipientDayRollup, scope), scope)
    return _of_customers(RecipientRollup.objects.filter(variant_id__in=scope.variant_ids), scope)


def _distinct_customers(scope: Scope, condition: Q) -> Count:
    """Distinct customers of rows meeting `condition`, among per-variant rows: a plain count
    when each customer has one such row (one email, no days), else a distinct count."""
    if not _has_days(scope) and scope.single_node:
        return Count("pk", filter=condition)
    return Count("customer_id", distinct=True, filter=condition)


def _segment_kept(scope: Scope) -> bool:
    """A segment of one email with current rollups (clickmap/segment_rollups.py): every
    number of it, over any period and device, is read from them."""
    return (
        scope.segment is not None
        and not scope.customer_id
        and scope.single_node
        and scope.segment_rollups_current
    )


# A per-variant rollup table's twin with the same rows for a segment's members.
SEGMENT_TWINS = {twin.twin_of: twin for twin in SEGMENT_ROLLUPS}


def _rollup(model, scope: Scope) -> QuerySet:
    """The scope's rows of a per-variant rollup table, or of its segment twin for a scope
    with a segment (ask only when _segment_kept)."""
    if scope.segment is not None:
        return SEGMENT_TWINS[model].objects.filter(
            segment=scope.segment, variant_id__in=scope.variant_ids
        )
    return model.objects.filter(variant_id__in=scope.variant_ids)


class Source(Enum):
    """A kind of rollup a number is read from (docs/aggregation.md, "Reading")."""

    TOTALS = "totals"  # all time, per variant: LinkRollup, EmailRollup
    DAYS = "days"  # per day and device: LinkDayRollup, and the spans (LinkSpanRollup, …)
    CUSTOMERS = "customers"  # per customer: PairRollup, RecipientRollup (or their day rows)


@dataclass(frozen=True)
class Route:
    """Where a scope's numbers come from: `sums` for those that add up across emails and
    days (total clicks, window-mode counted clicks), `distinct` for counts of distinct
    customers (unique clicks in "ever" mode, clickers, openers); from a segment's own
    rollups (clickmap/segment_rollups.py) when `segment`."""

    sums: Source
    distinct: Source
    segment: bool = False


def route(scope: Scope) -> Route:
    """The one choice of tables for a scope, which link_counts and email_totals share.

    - One customer, or a segment whose rollups do not stand for it (a new or edited rule
      not yet evaluated, or several emails of a scenario): CUSTOMERS, distinct counts
      over the per-customer rows of those customers.
    - Otherwise TOTALS for all time and DAYS for a period or a device (spans make a
      period's distinct counts a sum), the segment's twins for a segment;
    - except the distinct counts of several emails (a scenario): CUSTOMERS, since a
      customer who clicked two emails counts once, which per-email rows cannot tell.

    Every route gives the same numbers (the brute force in tests/test_rollups.py checks
    each); they differ in how many rows they read.
    """
    if scope.customer_id or (scope.segment is not None and not _segment_kept(scope)):
        return Route(Source.CUSTOMERS, Source.CUSTOMERS)
    rollups = Source.DAYS if _has_days(scope) else Source.TOTALS
    distinct = rollups if scope.single_node else Source.CUSTOMERS
    return Route(rollups, distinct, segment=scope.segment is not None)


def _link_days(scope: Scope) -> QuerySet:
    """Per link × day × device rows of the scope (period and device applied)."""
    return _on_days(_rollup(LinkDayRollup, scope), scope)


def _spans(model, scope: Scope, *, any_reliability: bool = False) -> QuerySet:
    """The spans that count each customer of the scope's period and device once: those
    ending within the period and starting before it (clickmap/models.py); of reliable
    events only or all as the scope says, or both kinds (`any_reliability`)."""
    start = scope.date_from or DAY_ZERO + timedelta(days=1)
    qs = _rollup(model, scope).filter(device=scope.device or "", since__lt=start, day__gte=start)
    if not any_reliability:
        qs = qs.filter(reliable=scope.reliable_only)
    return qs.filter(day__lte=scope.date_to) if scope.date_to else qs


def _link_figures(source: Source, scope: Scope, *, distinct: bool) -> dict[int, tuple]:
    """link id -> (total, counted clicks in window mode, distinct clickers or None) from
    one kind of rollup (`distinct`: the distinct clickers are asked too)."""
    x = _suffix(scope)
    sums = {"total": Sum(f"total_{x}"), "window": Sum(f"window_{x}")}
    if source is Source.TOTALS:
        rows = _rollup(LinkRollup, scope).values("link_id")
        rows = rows.annotate(**sums, unique=Sum(f"unique_{x}"))
    elif source is Source.CUSTOMERS:
        per_customer = (
            pair_days(scope)
            if _has_days(scope)
            else _of_customers(PairRollup.objects.filter(variant_id__in=scope.variant_ids), scope)
        )
        unique = Count("customer_id", distinct=True, filter=Q(**{f"total_{x}__gt": 0}))
        rows = per_customer.values("link_id").annotate(**sums, unique=unique)
    else:
        rows = _link_days(scope).values("link_id").annotate(**sums)
        found = {r["link_id"]: (r["total"] or 0, r["window"] or 0, None) for r in rows}
        if distinct:
            for r in _spans(LinkSpanRollup, scope).values("link_id").annotate(n=Sum("n")):
                total, window, _ = found.get(r["link_id"], (0, 0, None))
                found[r["link_id"]] = (total, window, r["n"] or 0)
        return found
    return {r["link_id"]: (r["total"] or 0, r["window"] or 0, r["unique"] or 0) for r in rows}


def link_counts(scope: Scope) -> dict[int, tuple[int, int]]:
    """link id -> (total, unique) for the scope, from `route(scope)`'s tables. Unique is
    the counted clicks in window mode (a sum), else distinct clickers."""
    way = route(scope)
    if scope.window_mode:
        found = _link_figures(way.sums, scope, distinct=False)
        return {link: (total, window) for link, (total, window, _) in found.items()}
    found = _link_figures(way.sums, scope, distinct=way.distinct is way.sums)
    if way.distinct is not way.sums:
        for link, (_, _, unique) in _link_figures(way.distinct, scope, distinct=True).items():
            found[link] = (found.get(link, (0, 0, 0))[0], 0, unique)
    return {link: (total, unique or 0) for link, (total, _, unique) in found.items()}


def link_metrics(scope: Scope, *, counts=None, delivered=None) -> list[LinkMetrics]:
    """Every inventory link of the scope's emails with its metrics, in inventory order.
    `counts` (link_counts) and `delivered` may be passed when the caller has them."""
    counts = link_counts(scope) if counts is None else counts
    delivered = delivered_customers(scope) if delivered is None else delivered
    return _with_figures(
        [LinkMetrics(link, *counts.get(link.pk, (0, 0))) for link in links(scope)], delivered
    )


def _with_figures(rows: list, delivered: int) -> list:
    """``rows`` (with ``total`` and ``unique`` set) with rate, share and unique share:
    the one place their formulas live (docs/metrics.md)."""
    all_total = sum(row.total for row in rows)
    all_unique = sum(row.unique for row in rows)
    for row in rows:
        row.rate = _pct(row.unique, delivered)
        row.share = _pct(row.total, all_total)
        row.unique_share = _pct(row.unique, all_unique)
    return rows


METRIC_NAMES = ("rate", "unique", "total", "share")


@dataclass
class LinkRow(LinkMetrics):
    """A link as the click map shows it: its Outlook-only copies (drawn on it) folded in,
    their clicks and unique clicks added to its own."""

    copies: list = field(default_factory=list)  # the Outlook-only TemplateLinks
    copies_total: int = 0  # clicks on those copies
    value: float = 0  # the ranking metric's value
    rank: int = 0

    @property
    def value_label(self) -> str:
        return f"{self.value:.1f} %" if isinstance(self.value, float) else f"{self.value:,}"

    @property
    def domain(self) -> str:
        return urlsplit(self.link.href).hostname or ""


def link_table(scope: Scope, metric: str = "rate", *, counts=None, delivered=None):
    """The click map's link table for the scope: one row per link shown (an Outlook-only
    copy is folded into its visible twin; one without a twin stays a row of its own),
    with figures over those rows, ranked by ``metric`` (highest first, then inventory
    order). Every view and export of a link table reads this one function."""
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {METRIC_NAMES}, not {metric!r}")
    counts = link_counts(scope) if counts is None else counts
    delivered = delivered_customers(scope) if delivered is None else delivered
    inventory = list(links(scope))
    rows = {link.pk: LinkRow(link, *counts.get(link.pk, (0, 0))) for link in inventory}
    for link in inventory:
        if link.mso and link.twin_id in rows:
            copy, twin = rows.pop(link.pk), rows[link.twin_id]
            twin.copies.append(link)
            twin.copies_total += copy.total
            twin.total += copy.total
            twin.unique += copy.unique
    shown = _with_figures(list(rows.values()), delivered)
    for row in shown:
        row.value = getattr(row, metric)
    shown.sort(key=lambda r: (-r.value, r.link.version_id, r.link.format, r.link.ordinal))
    for rank, row in enumerate(shown, 1):
        row.rank = rank
    return shown


def email_totals(scope: Scope, *, counts=None, delivered=None) -> EmailTotals:
    """Sent, delivered, opens, clickers, CTR, CTOR, unsubscribes for the scope.
    `counts` (link_counts) and `delivered` may be passed when the caller has them."""
    x = _suffix(scope)
    deliveries = _deliveries(scope)
    # Sent and delivered customers in one go; `delivered` may come from the caller.
    groups = {"sent": SENT} if delivered is not None else {"sent": SENT, "delivered": DELIVERED}
    customers = {"delivered": delivered, **_customers_by_status(scope, **groups)}
    totals = EmailTotals(
        sent=customers["sent"],
        delivered=customers["delivered"],
        unsubscribes=_on_period(
            Unsubscribe.objects.filter(delivery__in=deliveries), "at", scope
        ).count(),
    )
    counts = link_counts(scope) if counts is None else counts
    totals.total_clicks = sum(total for total, _ in counts.values())
    # Openers count a clicker without a recorded open (a click implies an open): the
    # aggregator's recipient flags and open spans already do (docs/metrics.md).
    source = route(scope).distinct
    if source is Source.TOTALS:
        sums = _rollup(EmailRollup, scope).aggregate(
            clickers=Sum(f"clickers_{x}"), openers=Sum("openers_all"), human=Sum("openers_rel")
        )
        clickers, openers, human = (sums[k] or 0 for k in ("clickers", "openers", "human"))
    elif source is Source.DAYS:
        sums = {
            (r["kind"], r["reliable"]): r["n"]
            for r in _spans(EmailSpanRollup, scope, any_reliability=True)
            .values("kind", "reliable")
            .annotate(n=Sum("n"))
        }
        clickers = sums.get(("c", scope.reliable_only), 0)
        openers, human = sums.get(("o", False), 0), sums.get(("o", True), 0)
    else:
        sums = _recipients(scope).aggregate(
            **{
                name: _distinct_customers(scope, Q(**{flag: True}))
                for name, flag in (
                    ("clickers", f"clicked_{x}"),
                    ("openers", "opened_all"),
                    ("human", "opened_rel"),
                )
            }
        )
        clickers, openers, human = sums["clickers"], sums["openers"], sums["human"]
    totals.clickers = clickers
    totals.unique_opens = human if scope.reliable_only else openers
    totals.machine_opens = openers - human
    totals.ctr = _pct(clickers, totals.delivered)
    totals.ctor = _pct(clickers, totals.unique_opens)
    return totals


@dataclass
class CampaignFigures:
    """A campaign's row in the campaign list: all time, every event (docs/metrics.md)."""

    sent: int = 0
    delivered: int = 0
    unique_opens: int = 0
    clickers: int = 0
    ctr: float = 0.0
    ctor: float = 0.0


def campaign_figures(campaign_ids) -> dict[int, CampaignFigures]:
    """campaign id -> its sent, delivered, unique opens, clickers, CTR and CTOR, each equal
    to email_totals(Scope(campaign_id=…)) (all time, all events), for a page of campaigns
    at once: three queries, five when a scenario is among them, however many campaigns.

    The same tables route() reads: a one-email campaign's customers are its deliveries
    (DeliveryCount) and its clickers and openers its variants' EmailRollup rows; a
    scenario counts a customer once across its emails, from distinct counts over the
    deliveries and RecipientRollup. Campaigns without a variant get zeros."""
    found = {pk: CampaignFigures() for pk in campaign_ids}
    campaign_of, nodes = {}, defaultdict(set)
    for variant, node, campaign in Variant.objects.filter(node__campaign_id__in=found).values_list(
        "pk", "node_id", "node__campaign_id"
    ):
        campaign_of[variant] = campaign
        nodes[campaign].add(node)
    one_email = [v for v, c in campaign_of.items() if len(nodes[c]) == 1]
    scenarios = [c for c, of in nodes.items() if len(of) > 1]
    counts = {"sent": defaultdict(int), "delivered": defaultdict(int)}
    openers, clickers = defaultdict(int), defaultdict(int)
    if one_email:
        for variant, status, n in DeliveryCount.objects.filter(
            variant_id__in=one_email, status__in=SENT
        ).values_list("variant_id", "status", "n"):
            counts["sent"][campaign_of[variant]] += n
            if status in DELIVERED:
                counts["delivered"][campaign_of[variant]] += n
        for variant, clicked, opened in EmailRollup.objects.filter(
            variant_id__in=one_email
        ).values_list("variant_id", "clickers_all", "openers_all"):
            clickers[campaign_of[variant]] += clicked
            openers[campaign_of[variant]] += opened
    if scenarios:

        def distinct(condition: Q) -> Count:
            return Count("customer_id", distinct=True, filter=condition)

        for row in (
            Delivery.objects.filter(node__campaign_id__in=scenarios)
            .values("node__campaign_id")
            .annotate(
                sent=distinct(Q(status__in=SENT)), delivered=distinct(Q(status__in=DELIVERED))
            )
        ):
            counts["sent"][row["node__campaign_id"]] = row["sent"]
            counts["delivered"][row["node__campaign_id"]] = row["delivered"]
        for row in (
            RecipientRollup.objects.filter(variant__node__campaign_id__in=scenarios)
            .values("variant__node__campaign_id")
            .annotate(clickers=distinct(Q(clicked_all=True)), openers=distinct(Q(opened_all=True)))
        ):
            clickers[row["variant__node__campaign_id"]] = row["clickers"]
            openers[row["variant__node__campaign_id"]] = row["openers"]
    for pk, figures in found.items():
        figures.sent, figures.delivered = counts["sent"][pk], counts["delivered"][pk]
        figures.clickers, figures.unique_opens = clickers[pk], openers[pk]
        figures.ctr = _pct(figures.clickers, figures.delivered)
        figures.ctor = _pct(figures.clickers, figures.unique_opens)
    return found


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 4) if whole else 0.0


def clicks_per_day(scope: Scope) -> list[tuple[date, int]]:
    """Clicks per UTC day in the scope, oldest first."""
    x = _suffix(scope)
    days = pair_days(scope) if route(scope).sums is Source.CUSTOMERS else _link_days(scope)
    rows = days.values("day").annotate(n=Sum(f"total_{x}")).order_by("day")
    return [(r["day"], r["n"] or 0) for r in rows]


def _on_period(events: QuerySet, field: str, scope: Scope) -> QuerySet:
    """Events whose moment ``field`` lies in the scope's period (whole UTC days)."""
    if scope.date_from:
        events = events.filter(**{f"{field}__gte": _utc_midnight(scope.date_from)})
    if scope.date_to:
        events = events.filter(**{f"{field}__lt": _utc_midnight(scope.date_to + timedelta(days=1))})
    return events


def _clicks(scope: Scope) -> QuerySet:
    """Raw click events of the scope (for breakdowns the rollups do not keep)."""
    clicks = ClickEvent.objects.filter(
        delivery__variant_id__in=scope.variant_ids, link__isnull=False
    )
    if scope.reliable_only:
        clicks = clicks.filter(reliable=True)
    if scope.device:
        clicks = clicks.filter(device=scope.device)
    clicks = _on_period(clicks, "at", scope)
    who = _customers(scope, "delivery__customer_id")
    return clicks.filter(who) if who is not None else clicks


def destination_domains(scope: Scope, link_ids) -> list[dict]:
    """Clicks on the given (personalised) links grouped by the destination's domain:
    [{"domain", "total", "unique"}], most clicked first. URLs on the tracker's own host
    (TRACKING_BASE_URL) lead to Clickmap, not to a destination: they are left out."""
    # The database counts clicks per (URL, customer): a personalised link has one URL per
    # delivery (the signed token carries it), so these rows are about one per clicker,
    # not one per click; the domain is then urllib's, once per distinct URL.
    rows = (
        _clicks(scope)
        .filter(link_id__in=link_ids)
        .values_list("url", "delivery__customer_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    domains, groups = {}, defaultdict(lambda: [0, set()])
    tracker = urlsplit(settings.TRACKING_BASE_URL).hostname
    for url, customer_id, n in rows.iterator(chunk_size=10_000):
        if url not in domains:
            domains[url] = urlsplit(url).hostname or "(none)"
        if domains[url] == tracker:
            continue  # Clickmap's own pages (unsubscribe, a tracking URL): no destination
        group = groups[domains[url]]
        group[0] += n
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


@dataclass
class ComparedLink:
    """One link of two variants side by side: matched across their templates
    (campaigns.linkmatch) when they differ, or the same inventory row when they share one."""

    a: LinkRow | None
    b: LinkRow | None
    change: str = "same"  # how B's link differs from A's: same, changed, moved, added, removed
    test: ProportionTest | None = None

    @property
    def link(self) -> TemplateLink:
        """The link as A sends it (as B does when A has no such link)."""
        return (self.a or self.b).link

    @property
    def difference(self) -> float | None:
        """B's click rate minus A's, in percentage points."""
        if self.a is None or self.b is None:
            return None
        return round(self.b.rate - self.a.rate, 4)


@dataclass
class Comparison:
    a: EmailTotals
    b: EmailTotals
    links: list[ComparedLink]  # the links paired across the variants
    test: ProportionTest | None  # of the click-through rates (clickers ÷ delivered)
    tables: tuple[list[LinkRow], list[LinkRow]]  # each side's link table (link_table)

    @property
    def ctr_difference(self) -> float:
        return round(self.b.ctr - self.a.ctr, 4)


def compare(scope_a: Scope, scope_b: Scope, metric: str = "rate") -> Comparison:
    """Two scopes (two variants of one email, with the same filters) side by side: each
    side's email totals and link table (ranked by ``metric``), and each link's click
    rates with their difference and a two-proportion test of unique clicks over
    delivered customers, the same for the email's clickers. Links are paired by
    inventory row when both variants send one template version, else by what they are
    (campaigns.linkmatch); A's links come in A's order, B's own links last."""
    sides = []
    for scope in (scope_a, scope_b):
        counts = link_counts(scope)
        totals = email_totals(scope, counts=counts)
        sides.append((totals, link_table(scope, metric, counts=counts, delivered=totals.delivered)))
    (totals_a, table_a), (totals_b, table_b) = sides
    rows_a = {row.link.pk: row for row in table_a}
    rows_b = {row.link.pk: row for row in table_b}
    # Each link once: variants sending one version list the same links on both sides.
    in_order = sorted(
        {row.link.pk: row for row in (*table_a, *table_b)}.values(),
        key=lambda r: (r.link.version_id, r.link.format, r.link.ordinal),
    )
    old = [r.link for r in in_order if r.link.pk in rows_a]
    new = [r.link for r in in_order if r.link.pk in rows_b]
    if {link.version_id for link in old} == {link.version_id for link in new}:
        pairs = [Match("same", link, link) for link in old]
    else:
        pairs = match_links(old, new)
    compared = []
    for pair in pairs:
        a = rows_a.get(pair.old.pk) if pair.old else None
        b = rows_b.get(pair.new.pk) if pair.new else None
        row = ComparedLink(a, b, pair.change)
        if a is not None and b is not None:
            row.test = two_proportion_test(
                a.unique, totals_a.delivered, b.unique, totals_b.delivered
            )
        compared.append(row)
    order = {link.pk: n for n, link in enumerate(old)}
    compared.sort(key=lambda c: (c.a is None, order.get(c.a.link.pk) if c.a else 0))
    test = two_proportion_test(
        totals_a.clickers, totals_a.delivered, totals_b.clickers, totals_b.delivered
    )
    return Comparison(totals_a, totals_b, compared, test, (table_a, table_b))
