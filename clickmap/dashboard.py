"""What the click-map page shows, as plain functions of the request's selection.

`Selection.from_query(campaign, GET)` parses and validates every selector (unknown
values fall back to defaults, never to another workspace's objects: every lookup runs
inside the active workspace scope). `click_map(selection)` returns everything the page
renders: the email summary, the ranked link list, the overlay boxes with their bands,
the charts' data. The metrics come from clickmap.metrics only.
"""

from dataclasses import dataclass, field, replace
from datetime import date
from urllib.parse import urlencode, urlsplit

from django.db.models import Q

from campaigns.models import Campaign, Customer, Segment, TemplateLink, TemplateVersion, Variant
from clickmap import metrics
from clickmap.bands import PALETTES, colour_bands

METRICS = {
    "rate": "Click rate",
    "unique": "Unique clicks",
    "total": "Total clicks",
    "share": "Click share",
}
DEVICE_FILTERS = ("desktop", "mobile", "tablet", "bot", "unknown")


@dataclass
class Selection:
    campaign: Campaign
    metric: str = "rate"
    node_id: int | None = None
    variant_id: int | None = None
    format: str = "html"
    preview_device: str = "desktop"
    date_from: date | None = None
    date_to: date | None = None
    reliable_only: bool = False
    segment_id: int | None = None
    device: str | None = None
    preview_for: str = ""
    palette: str = "classic"
    customer: Customer | None = None
    problems: list[str] = field(default_factory=list)
    # The choices, read once: the node's variants by name (with their versions) and the
    # workspace's segments by name.
    variants: list[Variant] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)

    @classmethod
    def from_query(cls, campaign: Campaign, query) -> "Selection":
        s = cls(campaign=campaign)
        s.metric = query.get("metric") if query.get("metric") in METRICS else "rate"
        nodes = list(campaign.nodes.order_by("position").values_list("pk", flat=True))
        s.node_id = _int(query.get("node"), nodes) or (nodes[0] if nodes else None)
        s.variants = list(
            Variant.objects.filter(node_id=s.node_id)
            .select_related("template_version__template")
            .order_by("name")
        )
        s.variant_id = _int(query.get("variant"), [v.pk for v in s.variants])
        s.format = "amp" if query.get("format") == "amp" else "html"
        s.preview_device = "mobile" if query.get("view") == "mobile" else "desktop"
        s.date_from = _date(query.get("from"), s.problems, "start")
        s.date_to = _date(query.get("to"), s.problems, "end")
        if s.date_from and s.date_to and s.date_from > s.date_to:
            s.problems.append("The period ends before it starts; showing all time.")
            s.date_from = s.date_to = None
        s.reliable_only = query.get("reliable") in ("1", "on", "true")
        s.segments = list(Segment.objects.order_by("name"))
        s.segment_id = _int(query.get("segment"), [g.pk for g in s.segments])
        s.device = query.get("device") if query.get("device") in DEVICE_FILTERS else None
        s.palette = query.get("palette") if query.get("palette") in PALETTES else "classic"
        s.preview_for = (query.get("for") or "").strip()[:254]
        if s.preview_for:
            s.customer = (
                Customer.objects.filter(
                    Q(email__iexact=s.preview_for) | Q(external_id=s.preview_for)
                )
                .order_by("pk")
                .first()
            )
            if s.customer is None:
                s.problems.append(
                    f"No customer with the email address or cookie id “{s.preview_for}”."
                )
        return s

    def scope(self, **changes) -> metrics.Scope:
        base = metrics.Scope(
            workspace=self.campaign.workspace,
            campaign_id=self.campaign.pk,
            node_id=self.node_id,
            variant_id=self.variant_id,
            format=self.format,
            date_from=self.date_from,
            date_to=self.date_to,
            reliable_only=self.reliable_only,
            segment=next((g for g in self.segments if g.pk == self.segment_id), None),
            customer_id=self.customer.pk if self.customer else None,
            device=self.device,
        )
        return replace(base, **changes)

    def query(self, **changes) -> str:
        """The URL query of this selection with `changes` (None drops a key)."""
        values = {
            "metric": self.metric,
            "node": self.node_id,
            "variant": self.variant_id,
            "format": self.format,
            "view": self.preview_device,
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
            "reliable": 1 if self.reliable_only else None,
            "segment": self.segment_id,
            "device": self.device,
            "for": self.preview_for or None,
            "palette": None if self.palette == "classic" else self.palette,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def _int(raw, allowed):
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return None
    return value if value in allowed else None


def _date(raw, problems, which):
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(f"The period's {which} “{raw}” is not a date (YYYY-MM-DD).")
        return None


def shown_version(selection: Selection) -> TemplateVersion | None:
    """The template version the preview shows: the selected variant's, else the node's
    first variant's for the selected format."""
    variants = [v for v in selection.variants if v.pk == selection.variant_id] or (
        [] if selection.variant_id else selection.variants
    )
    first = next((v for v in variants if v.format == selection.format), None)
    first = first or next(iter(variants), None)
    return first.template_version if first else None


@dataclass
class LinkRow:
    link: TemplateLink
    total: int
    unique: int
    rate: float
    share: float
    unique_share: float
    value: float = 0.0
    band: str = "gray"
    rank: int = 0
    mso_copies: list = field(default_factory=list)

    @property
    def value_label(self) -> str:
        return f"{self.value:.1f} %" if isinstance(self.value, float) else f"{self.value:,}"

    @property
    def domain(self) -> str:
        return urlsplit(self.link.href).hostname or ""


def link_rows(
    selection: Selection, version: TemplateVersion | None, found: list | None = None
) -> list[LinkRow]:
    """The version's links with their metrics; Outlook-only copies are added to their
    visible twin (the map shows them there), ranked by the selected metric."""
    if found is None:
        found = metrics.link_metrics(selection.scope())
    found = {m.link.pk: m for m in found}
    if version is None:
        return []
    # The scope's inventory (link_metrics) holds the shown version's links in its format.
    links = sorted(
        (
            m.link
            for m in found.values()
            if m.link.version_id == version.pk and m.link.format == selection.format
        ),
        key=lambda link: link.ordinal,
    )
    rows = {}
    for link in links:
        m = found.get(link.pk)
        rows[link.pk] = LinkRow(
            link,
            m.total if m else 0,
            m.unique if m else 0,
            m.rate if m else 0.0,
            m.share if m else 0.0,
            m.unique_share if m else 0.0,
        )
    for link in links:
        if link.mso and link.twin_id in rows:
            twin, copy = rows[link.twin_id], rows.pop(link.pk)
            twin.mso_copies.append(link)
            twin.total += copy.total
            twin.unique += copy.unique
            twin.rate = round(twin.rate + copy.rate, 4)
            twin.share = round(twin.share + copy.share, 4)
            twin.unique_share = round(twin.unique_share + copy.unique_share, 4)
    for row in rows.values():
        row.value = {
            "rate": row.rate,
            "unique": row.unique,
            "total": row.total,
            "share": row.share,
        }[selection.metric]
    bands, _ = colour_bands({pk: row.value for pk, row in rows.items()})
    ordered = sorted(rows.values(), key=lambda r: (-r.value, r.link.ordinal))
    for rank, row in enumerate(ordered, 1):
        row.rank = rank
        row.band = bands[row.link.pk]
    return ordered


def personalised_links(selection: Selection, version: TemplateVersion | None) -> list[int]:
    """The shown links whose destination differs per customer (Outlook copies included)."""
    if version is None:
        return []
    links = version.links.filter(format=selection.format, placeholder=True)
    return list(links.values_list("pk", flat=True))


def destinations(selection: Selection) -> list[dict]:
    """Clicks on the shown email's personalised links per destination domain."""
    link_ids = personalised_links(selection, shown_version(selection))
    return metrics.destination_domains(selection.scope(), link_ids) if link_ids else []


@dataclass
class Bar:
    # SVG lengths, formatted here: a template would localise them (and slowly).
    x: str
    y: str
    width: str
    height: str
    label: str
    value: float


def svg_number(value: float, places: int = 2) -> str:
    """A number for SVG or CSS: a dot for decimals whatever the locale, no exponent."""
    return f"{value:.{places}f}"


def bars(values: list[tuple[str, float]], width=600.0, height=160.0) -> list[Bar]:
    """Geometry of a server-rendered SVG bar chart (no JavaScript, no CDN)."""
    if not values:
        return []
    top = max(v for _, v in values) or 1
    step = width / len(values)
    gap = min(4.0, step * 0.2)
    return [
        Bar(
            x=svg_number(i * step + gap / 2),
            y=svg_number(height - height * value / top),
            width=svg_number(step - gap),
            height=svg_number(height * value / top),
            label=label,
            value=value,
        )
        for i, (label, value) in enumerate(values)
    ]


def click_map(selection: Selection) -> dict:
    """Everything the click-map page shows for a selection (one call per request)."""
    scope = selection.scope()
    version = shown_version(selection)
    # Link counts and delivered customers serve both the list and the totals: ask once.
    counts = metrics.link_counts(scope)
    totals = metrics.email_totals(scope, counts=counts)
    found = metrics.link_metrics(scope, counts=counts, delivered=totals.delivered)
    rows = link_rows(selection, version, found)
    values = {row.link.pk: row.value for row in rows}
    _, legend = colour_bands(values)
    per_day = metrics.clicks_per_day(scope)
    return {
        "selection": selection,
        "version": version,
        "rows": rows,
        "by_ordinal": sorted(rows, key=lambda r: r.link.ordinal),
        "legend": legend,
        "palette": PALETTES[selection.palette],
        "totals": totals,
        "per_day": bars([(d.isoformat(), n) for d, n in per_day]),
        "per_link": bars([(f"#{r.link.ordinal + 1}", r.total) for r in rows[:30]]),
        # Counted by a request of its own (views.destinations): it reads the links' clicks.
        "personalised": bool(personalised_links(selection, version)),
        "metric_label": METRICS[selection.metric],
        "metrics": METRICS,
        "device_filters": DEVICE_FILTERS,
        "nodes": selection.campaign.nodes.order_by("position"),
        "variants": selection.variants,
        "segments": selection.segments,
        "has_amp": Variant.objects.filter(node__campaign=selection.campaign, format="amp").exists(),
    }
