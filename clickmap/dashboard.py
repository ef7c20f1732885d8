"""What the click-map page shows, as plain functions of the request's selection.

`Selection.from_query(campaign, GET)` parses and validates every selector (unknown
values fall back to defaults, never to another workspace's objects: every lookup runs
inside the active workspace scope). `click_map(selection)` returns everything the page
renders: the email summary, one map (or, in the compare view, two side by side) with its
link table, overlay boxes and bands, the comparison, the charts' data. The numbers come
from clickmap.metrics only: one call per table (metrics.link_table, metrics.compare),
the same calls the exports make.
"""

from dataclasses import dataclass, field, replace
from datetime import date
from urllib.parse import urlencode

from django.db.models import Q

from campaigns.models import (
    Campaign,
    Customer,
    Delivery,
    Segment,
    TemplateVersion,
    Variant,
)
from clickmap import metrics
from clickmap.bands import PALETTES, band_labels, colour_bands
from clickmap.models import Preview
from clickmap.previews import preview_for, sample_customer

METRICS = {
    "rate": "Click rate",
    "unique": "Unique clicks",
    "total": "Total clicks",
    "share": "Click share",
}
DEVICE_FILTERS = ("desktop", "mobile", "tablet", "bot", "unknown")
DISPLAYS = {"numbers": "Colours and numbers", "colours": "Colours only"}
# The link list's orders: each column, and the link's place in the email. A leading "-"
# turns the natural direction (numbers: highest first; text and position: first first).
SORTS = {
    "rank": "Rank",
    "position": "Position in the email",
    "text": "Link text",
    "total": "Total clicks",
    "unique": "Unique clicks",
    "rate": "Click rate",
    "share": "Click share",
}

# The link list's columns: (sort key, title, header text).
LINK_COLUMNS = (
    ("rank", "Rank", "#"),
    ("text", "Link text", "Link"),
    ("position", "Position in the email", "Pos."),
    ("total", "Total clicks", "Total"),
    ("unique", "Unique clicks", "Unique"),
    ("rate", "Click rate", "Rate %"),
    ("share", "Click share", "Share %"),
)


@dataclass(kw_only=True)
class Filters:
    """The selectors a click map and a template report share, declared and parsed one
    way: metric, preview device, period, reliable only, segment, device, palette,
    display, sort, the sample customer, and what the page says about them."""

    metric: str = "rate"
    format: str = "html"
    preview_device: str = "desktop"
    date_from: date | None = None
    date_to: date | None = None
    reliable_only: bool = False
    segment_id: int | None = None
    device: str | None = None
    sample_for: str = ""
    palette: str = "classic"
    display: str = "numbers"
    sort: str = "rank"
    customer: Customer | None = None  # Preview for: that customer's own email and clicks
    sample: Customer | None = None  # whose data personalises the shared preview
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)  # the workspace's, by name

    def read_filters(self, query) -> None:
        self.metric = query.get("metric") if query.get("metric") in METRICS else "rate"
        self.preview_device = "mobile" if query.get("view") == "mobile" else "desktop"
        self.date_from = _date(query.get("from"), self.problems, "start")
        self.date_to = _date(query.get("to"), self.problems, "end")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            self.problems.append("The period ends before it starts; showing all time.")
            self.date_from = self.date_to = None
        self.reliable_only = query.get("reliable") in ("1", "on", "true")
        self.segments = list(Segment.objects.order_by("name"))
        self.segment_id = _int(query.get("segment"), [g.pk for g in self.segments])
        self.device = query.get("device") if query.get("device") in DEVICE_FILTERS else None
        self.palette = query.get("palette") if query.get("palette") in PALETTES else "classic"
        self.display = query.get("display") if query.get("display") in DISPLAYS else "numbers"
        sort = query.get("sort") or "rank"
        self.sort = sort if sort.lstrip("-") in SORTS else "rank"

    def read_sample(self, query, workspace_id: int) -> None:
        """The customer whose data personalises the shared preview: ?sample=, else the
        workspace's first customer."""
        self.sample_for = (query.get("sample") or "").strip()[:254]
        if self.sample_for:
            self.sample = _customer(self.sample_for)
            if self.sample is None:
                self.problems.append(
                    f"No customer with the email address or cookie id “{self.sample_for}” "
                    "to personalise the preview for."
                )
        if self.sample is None:
            self.sample = sample_customer(workspace_id)

    def scope_filters(self) -> dict:
        """The metrics.Scope fields the selectors set, whatever the map shows."""
        return {
            "format": self.format,
            "date_from": self.date_from,
            "date_to": self.date_to,
            "reliable_only": self.reliable_only,
            "segment": self.segment,
            "device": self.device,
        }

    @property
    def segment(self) -> Segment | None:
        return next((g for g in self.segments if g.pk == self.segment_id), None)

    def sort_query(self, column: str) -> str:
        """The query that sorts the link list by ``column``: its natural direction first,
        the other one when it is already sorted so."""
        return self.query(sort=f"-{column}" if self.sort == column else column)


@dataclass
class Selection(Filters):
    campaign: Campaign
    node_id: int | None = None
    variant_id: int | None = None  # None: every variant of the format (they share a version)
    compare_id: int | None = None  # the compare view: this variant beside variant_id's
    preview_for: str = ""
    # The choices, read once: the node's variants by name (with their versions).
    variants: list[Variant] = field(default_factory=list)

    @classmethod
    def from_query(cls, campaign: Campaign, query) -> "Selection":
        s = cls(campaign=campaign)
        nodes = list(campaign.nodes.order_by("position").values_list("pk", flat=True))
        s.node_id = _int(query.get("node"), nodes) or (nodes[0] if nodes else None)
        s.variants = list(
            Variant.objects.filter(node_id=s.node_id)
            .select_related("template_version__template")
            .order_by("name")
        )
        s._choose_variants(query)
        s.read_filters(query)
        s.preview_for = (query.get("for") or "").strip()[:254]
        if s.preview_for:
            s.customer = _customer(s.preview_for)
            if s.customer is None:
                s.problems.append(
                    f"No customer with the email address or cookie id “{s.preview_for}”."
                )
            elif not Delivery.objects.filter(node_id=s.node_id, customer=s.customer).exists():
                s.problems.append(
                    f"{s.customer} did not receive this email: showing everyone's clicks."
                )
                s.customer = None
        s.read_sample(query, campaign.workspace_id)
        return s

    def _choose_variants(self, query) -> None:
        """The variant (and so the format) shown, and the one it is compared with.

        A variant's format is its own. "All variants" sums the variants of one format
        and is offered only while they all send one template version: links of different
        templates cannot be summed, so then one variant is shown at a time (the compare
        view puts two side by side)."""
        by_pk = {v.pk: v for v in self.variants}
        chosen = by_pk.get(_int(query.get("variant"), by_pk))
        compare = by_pk.get(_int(query.get("compare"), by_pk))
        formats = [v.format for v in self.variants]
        if chosen is not None:
            self.format = chosen.format
        elif query.get("format") in formats:
            self.format = query.get("format")
        else:
            self.format = formats[0] if formats else "html"
        if chosen is None and (compare is not None or not self.summable):
            chosen = next((v for v in self.of_format if v != compare), None)
            if len({v.template_version_id for v in self.of_format}) > 1 and compare is None:
                self.notes.append(
                    "The variants send different templates, so their links cannot be "
                    "summed: one variant is shown at a time. Compare them side by side."
                )
        self.variant_id = chosen.pk if chosen is not None else None
        if compare is not None and compare != chosen:
            self.compare_id = compare.pk

    @property
    def of_format(self) -> list[Variant]:
        return [v for v in self.variants if v.format == self.format]

    @property
    def summable(self) -> bool:
        """Whether "All variants" is offered: two or more variants of the format, all
        sending one template version."""
        versions = {v.template_version_id for v in self.of_format}
        return len(self.of_format) > 1 and len(versions) == 1

    @property
    def formats(self) -> list[str]:
        return sorted({v.format for v in self.variants}, key=["html", "amp"].index)

    @property
    def variant(self) -> Variant | None:
        return next((v for v in self.variants if v.pk == self.variant_id), None)

    @property
    def compared(self) -> Variant | None:
        return next((v for v in self.variants if v.pk == self.compare_id), None)

    def scope(self, **changes) -> metrics.Scope:
        base = metrics.Scope(
            workspace=self.campaign.workspace,
            campaign_id=self.campaign.pk,
            node_id=self.node_id,
            variant_id=self.variant_id,
            **self.scope_filters(),
            customer_id=self.customer.pk if self.customer else None,
        )
        return replace(base, **changes)

    def compare_scope(self) -> metrics.Scope:
        """The scope of the compared variant: the same filters, its own variant."""
        other = self.compared
        return self.scope(variant_id=other.pk, format=other.format)

    def query(self, **changes) -> str:
        """The URL query of this selection with `changes` (None drops a key)."""
        values = {
            "metric": self.metric,
            "node": self.node_id,
            "variant": self.variant_id,
            "compare": self.compare_id,
            "format": self.format,
            "view": self.preview_device,
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
            "reliable": 1 if self.reliable_only else None,
            "segment": self.segment_id,
            "device": self.device,
            "for": self.preview_for or None,
            "sample": self.sample_for or None,
            "palette": None if self.palette == "classic" else self.palette,
            "display": None if self.display == "numbers" else self.display,
            "sort": None if self.sort == "rank" else self.sort,
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


def _customer(text: str) -> Customer | None:
    return (
        Customer.objects.filter(Q(email__iexact=text) | Q(external_id=text)).order_by("pk").first()
    )


def version_of(selection: Selection, variant: Variant | None = None) -> TemplateVersion | None:
    """The template version a map shows: the variant's, or (all variants) the one the
    format's variants share."""
    variant = variant or selection.variant or next(iter(selection.of_format), None)
    return variant.template_version if variant else None


def shown_version(selection: Selection) -> TemplateVersion | None:
    return version_of(selection)


def link_rows(selection: Selection, scope: metrics.Scope | None = None, table=None, **known):
    """The scope's link table (metrics.link_table) ranked by the selected metric, each
    row with its colour band, and the bands' legend. ``table`` is the link table when
    the caller has it; ``known`` passes counts and delivered customers it has."""
    if table is None:
        table = metrics.link_table(scope or selection.scope(), selection.metric, **known)
    bands, legend = colour_bands({row.link.pk: row.value for row in table})
    for row in table:
        row.band = bands[row.link.pk]
    return table, legend


def sorted_rows(rows: list, sort: str) -> list:
    """The link list in the page's chosen order (rows come ranked)."""
    key = sort.lstrip("-")
    if key == "rank":
        ordered = list(rows)
    elif key == "position":
        ordered = sorted(rows, key=lambda r: r.link.ordinal)
    elif key == "text":
        ordered = sorted(rows, key=lambda r: ((r.link.text or r.link.href).casefold(), r.rank))
    else:
        ordered = sorted(rows, key=lambda r: (-getattr(r, key), r.rank))
    return ordered[::-1] if sort.startswith("-") else ordered


def link_columns(selection: Selection) -> list[dict]:
    """The link list's column headers: title, the query that sorts by the column, and
    its aria-sort state (rank, text and position run first-first, numbers highest-first)."""
    columns = []
    for key, title, short in LINK_COLUMNS:
        state = None
        if selection.sort.lstrip("-") == key:
            forward = not selection.sort.startswith("-")
            state = (
                "ascending" if forward == (key in ("rank", "text", "position")) else "descending"
            )
        query = selection.sort_query(key)
        columns.append({"key": key, "title": title, "short": short, "query": query, "sort": state})
    return columns


def personalised_links(selection: Selection, version: TemplateVersion | None) -> list[int]:
    """The shown links whose destination differs per customer (Outlook copies included);
    unsubscribe links lead to Clickmap's own page, no destination of the campaign."""
    if version is None:
        return []
    links = version.links.filter(format=selection.format, placeholder=True, unsubscribe=False)
    return list(links.values_list("pk", flat=True))


def destinations(selection: Selection) -> list[dict]:
    """Clicks on the shown email's personalised links per destination domain."""
    link_ids = personalised_links(selection, shown_version(selection))
    return metrics.destination_domains(selection.scope(), link_ids) if link_ids else []


@dataclass
class MapSide:
    """One map: a variant (None: all of the format) with its preview and numbers."""

    variant: Variant | None
    version: TemplateVersion | None
    format: str
    totals: metrics.EmailTotals
    rows: list
    legend: list
    preview: Preview | None = None
    key: str = "a"  # "b": the compared variant's map

    @property
    def overlay(self) -> list[dict]:
        """The boxes to draw: each link's boxes in % of the picture, with its row."""
        preview = self.preview
        if preview is None or preview.status != Preview.Status.DONE:
            return []
        drawn = []
        for row in self.rows:  # Outlook-only copies are drawn on their twin: the row's link
            for x, y, w, h in (preview.boxes or {}).get(str(row.link.pk), []):
                drawn.append(
                    {
                        "row": row,
                        "left": svg_number(100 * x / preview.width, 4),
                        "top": svg_number(100 * y / preview.height, 4),
                        "width": svg_number(100 * w / preview.width, 4),
                        "height": svg_number(100 * h / preview.height, 4),
                    }
                )
        return drawn

    @property
    def badges(self) -> list:
        """The rows that get a number on the map (those drawn), in rank order: the
        browser lays them out in this order, so the best spots go to the top links."""
        drawn = {box["row"].link.pk for box in self.overlay}
        return [row for row in self.rows if row.link.pk in drawn]


def _side(
    selection: Selection,
    scope: metrics.Scope,
    variant: Variant | None,
    totals=None,
    table=None,
    key="a",
) -> MapSide:
    """One map of the page; ``totals`` and ``table`` when metrics.compare gave them."""
    if table is None:
        counts = metrics.link_counts(scope)
        totals = metrics.email_totals(scope, counts=counts)
        table = metrics.link_table(
            scope, selection.metric, counts=counts, delivered=totals.delivered
        )
    rows, legend = link_rows(selection, table=table)
    version = version_of(selection, variant)
    side = MapSide(variant, version, scope.format, totals, rows, legend, key=key)
    side.preview = map_preview(selection, version, scope.format)
    return side


def map_side(selection: Selection, compared: bool = False) -> MapSide:
    """One map alone: the selected variant's, or ``compared``, the compared one's."""
    if compared and selection.compared is not None:
        return _side(selection, selection.compare_scope(), selection.compared, key="b")
    return _side(selection, selection.scope(), selection.variant)


def map_preview(selection: Selection, version, fmt: str) -> Preview | None:
    """The preview a map shows: the customer's own email for Preview for, else the
    shared one personalised for the sample customer."""
    if version is None:
        return None
    if fmt == "amp" and not version.amp_html:
        fmt = "html"
    if selection.customer is not None:
        return preview_for(version, fmt, selection.preview_device, selection.customer, exact=True)
    return preview_for(version, fmt, selection.preview_device, selection.sample)


@dataclass
class Bar:
    # SVG lengths, formatted here: a template would localise them (and slowly).
    x: str
    y: str
    width: str
    height: str
    label: str
    value: float
    text_x: str = "0"
    text_y: str = "0"


@dataclass
class Chart:
    bars: list[Bar]
    ticks: list[dict]  # value axis: {"value", "x"|"y"}
    labels: list[dict]  # category axis labels: {"text", "x", "y"}


def svg_number(value: float, places: int = 2) -> str:
    """A number for SVG or CSS: a dot for decimals whatever the locale, no exponent."""
    return f"{value:.{places}f}"


def _nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round values from 0 up to at least ``top`` for a value axis."""
    if top <= 0:
        return [0]
    raw = top / count
    magnitude = 10 ** (len(str(int(raw))) - 1) if raw >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    step = max(step, 1)
    ticks, value = [], 0
    while value < top:
        ticks.append(value)
        value += step
    return [*ticks, value]


def day_chart(values: list[tuple[date, int]], width=600.0, height=160.0) -> Chart:
    """Clicks per day: vertical bars, clicks on the left axis, dates below."""
    if not values:
        return Chart([], [], [])
    left, bottom = 44.0, 20.0
    plot_w, plot_h = width - left, height
    ticks = _nice_ticks(max(v for _, v in values))
    top = ticks[-1] or 1
    step = plot_w / len(values)
    gap = min(4.0, step * 0.2)
    bars = [
        Bar(
            x=svg_number(left + i * step + gap / 2),
            y=svg_number(plot_h - plot_h * value / top),
            width=svg_number(step - gap),
            height=svg_number(plot_h * value / top),
            label=day.isoformat(),
            value=value,
        )
        for i, (day, value) in enumerate(values)
    ]
    every = max(1, len(values) // 6)
    labels = [
        {
            "text": day.strftime("%d %b"),
            "x": svg_number(left + i * step + step / 2),
            "y": svg_number(plot_h + bottom - 4),
        }
        for i, (day, _) in enumerate(values)
        if i % every == 0 or i == len(values) - 1
    ]
    if len(labels) > 1 and labels[-1]["text"] == labels[-2]["text"]:
        labels.pop(-2)
    axis = [
        {"value": t, "y": svg_number(plot_h - plot_h * t / top), "x": svg_number(left - 6)}
        for t in ticks
    ]
    return Chart(bars, axis, labels)


def link_chart(rows: list, limit: int = 12, width=600.0) -> Chart:
    """Clicks per link: a horizontal bar per link, its name beside it, clicks below."""
    rows = sorted(rows, key=lambda r: (-r.total, r.rank))[:limit]
    rows = [r for r in rows if r.total] or []
    if not rows:
        return Chart([], [], [])
    left, bar_h, gap = 190.0, 18.0, 6.0
    plot_w = width - left - 40
    ticks = _nice_ticks(max(r.total for r in rows))
    top = ticks[-1] or 1
    bars = []
    for i, row in enumerate(rows):
        y = i * (bar_h + gap)
        w = plot_w * row.total / top
        name = row.link.text or row.link.href
        bars.append(
            Bar(
                x=svg_number(left),
                y=svg_number(y),
                width=svg_number(w),
                height=svg_number(bar_h),
                label=f"#{row.link.ordinal + 1} {name[:28] + '…' if len(name) > 29 else name}",
                value=row.total,
                text_x=svg_number(left + w + 4),
                text_y=svg_number(y + bar_h - 5),
            )
        )
    axis_y = len(rows) * (bar_h + gap) + 12
    axis = [
        {"value": t, "x": svg_number(left + plot_w * t / top), "y": svg_number(axis_y)}
        for t in ticks
    ]
    return Chart(bars, axis, [{"height": svg_number(axis_y + 6)}])


def click_map(selection: Selection) -> dict:
    """Everything the click-map page shows for a selection (one call per request)."""
    scope = selection.scope()
    comparison = None
    if selection.compared is not None:
        other_scope = selection.compare_scope()
        comparison = metrics.compare(scope, other_scope, selection.metric)
        main = _side(selection, scope, selection.variant, comparison.a, comparison.tables[0])
        sides = [
            main,
            _side(
                selection,
                other_scope,
                selection.compared,
                comparison.b,
                comparison.tables[1],
                key="b",
            ),
        ]
    else:
        main = _side(selection, scope, selection.variant)
        sides = [main]
    return {
        "selection": selection,
        "main": main,
        "version": main.version,
        "rows": main.rows,
        "listed": sorted_rows(main.rows, selection.sort),
        "legend": main.legend,
        "band_names": band_labels(selection.palette),
        "totals": main.totals,
        "sides": sides,
        "comparison": comparison,
        "per_day": day_chart(metrics.clicks_per_day(scope)),
        "per_link": link_chart(main.rows),
        # Counted by a request of its own (views.destinations): it reads the links' clicks.
        "personalised": bool(personalised_links(selection, main.version)),
        "metric_label": METRICS[selection.metric],
        "metrics": METRICS,
        "displays": DISPLAYS,
        "sorts": SORTS,
        "device_filters": DEVICE_FILTERS,
        "nodes": selection.campaign.nodes.order_by("position"),
        # Another format shows that format's variants (all of them, or the first).
        "format_links": [
            (fmt, selection.query(format=fmt, variant=None, compare=None))
            for fmt in selection.formats
        ],
        "link_columns": link_columns(selection),
    }
