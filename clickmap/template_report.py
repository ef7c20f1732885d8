"""The template report (Altcraft's): one click map of a template version summed over
every campaign and scenario email that sent it, and the template's totals over all its
versions.

`ReportSelection.from_query(template, GET)` parses the selectors the way the click map
does (clickmap.dashboard.Filters: metric, period, reliable only, segment, device,
palette, display, sort), plus the version shown and the format. `template_report(s)`
returns what the page renders; `campaign_uses(s)` the campaigns and scenario emails
that sent the template, each with its own numbers and its own click map's URL.

Every number is clickmap.metrics' for a Scope naming the template (``template_id``) and,
for one version's map, the version (``version_id``): the same functions the click map
and the exports call, so the report never counts a second way. Links of different
versions are never summed onto one picture: a version has its own links and layout, so
the map is a version's, and the template as a whole gets its email totals (a customer
who received the template from two campaigns counts once, as in a scenario).
"""

from dataclasses import dataclass, field, replace
from datetime import UTC, date, timedelta
from urllib.parse import urlencode

from django.utils import timezone

from campaigns.models import Template, TemplateVersion, Variant
from clickmap import metrics
from clickmap.bands import band_labels
from clickmap.dashboard import (
    DEVICE_FILTERS,
    DISPLAYS,
    METRICS,
    SORTS,
    Filters,
    MapSide,
    _int,
    day_chart,
    link_chart,
    link_columns,
    link_rows,
    map_preview,
    sorted_rows,
)


@dataclass
class ReportSelection(Filters):
    """A template report's selection; ``customer`` stays None: the report's previews are
    shared ones (no Preview for)."""

    template: Template
    version_id: int | None = None  # the version whose map is shown
    versions: list[TemplateVersion] = field(default_factory=list)  # newest first
    sent_versions: set[int] = field(default_factory=set)  # versions some email sent

    @classmethod
    def from_query(cls, template: Template, query) -> "ReportSelection":
        """The selection of ``query`` (a QueryDict or dict); unknown values fall back to
        the defaults: the newest version some email sent (else the newest), HTML."""
        s = cls(template=template)
        s.versions = list(template.versions.select_related("template").order_by("-number"))
        s.sent_versions = set(
            Variant.objects.filter(template_version__template=template).values_list(
                "template_version_id", flat=True
            )
        )
        by_number = {v.number: v for v in s.versions}
        chosen = by_number.get(_int(query.get("version"), by_number))
        if chosen is None and query.get("version"):
            s.problems.append(
                f"“{template.name}” has no version {query.get('version')}; "
                "showing the newest version that was sent."
            )
        if chosen is None:
            chosen = next((v for v in s.versions if v.pk in s.sent_versions), None)
            chosen = chosen or next(iter(s.versions), None)
        s.version_id = chosen.pk if chosen is not None else None
        s.format = "amp" if query.get("format") == "amp" and "amp" in s.formats else "html"
        s.read_filters(query)
        s.read_sample(query, template.workspace_id)
        return s

    @property
    def version(self) -> TemplateVersion | None:
        return next((v for v in self.versions if v.pk == self.version_id), None)

    @property
    def formats(self) -> list[str]:
        """HTML, and AMP when the shown version has an AMP part."""
        version = self.version
        return ["html", "amp"] if version is not None and version.amp_html else ["html"]

    def scope(self, **changes) -> metrics.Scope:
        """The shown version's scope: every email that sent it, in the selected format."""
        base = metrics.Scope(
            workspace=self.template.workspace,
            template_id=self.template.pk,
            version_id=self.version_id,
            **self.scope_filters(),
        )
        return replace(base, **changes)

    def template_scope(self) -> metrics.Scope:
        """Every version of the template, every format: the template's totals."""
        return self.scope(version_id=None, format=None)

    def filter_values(self) -> dict:
        """The period and audience selectors as URL values (shared with the click map's
        query: a campaign's map opens with the same filters)."""
        return {
            "metric": self.metric,
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
            "reliable": 1 if self.reliable_only else None,
            "segment": self.segment_id,
            "device": self.device,
        }

    def query(self, **changes) -> str:
        """The URL query of this selection with ``changes`` (None drops a key)."""
        version = self.version
        values = {
            "version": version.number if version is not None else None,
            "format": None if self.format == "html" else self.format,
            "view": None if self.preview_device == "desktop" else self.preview_device,
            **self.filter_values(),
            "sample": self.sample_for or None,
            "palette": None if self.palette == "classic" else self.palette,
            "display": None if self.display == "numbers" else self.display,
            "sort": None if self.sort == "rank" else self.sort,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})


@dataclass
class VersionTotals:
    """One version's numbers over every email that sent it (both formats)."""

    version: TemplateVersion
    totals: metrics.EmailTotals
    sent: bool  # some email sent it
    query: str  # the report's query showing this version
    emails: int = 0  # campaign emails that sent it (in any format)


@dataclass
class CampaignUse:
    """One campaign email (a campaign's, or one email of a scenario) that sent a version
    of the template in one format, with its numbers under the report's filters."""

    campaign: object
    node: object
    version: TemplateVersion
    format: str
    variants: list[Variant]
    totals: metrics.EmailTotals
    map_query: str  # the query of its own click map, with the report's filters

    @property
    def variant_names(self) -> str:
        return ", ".join(v.name for v in self.variants)


def campaign_uses(selection: ReportSelection, *, every_version: bool = True) -> list[CampaignUse]:
    """The campaign emails that sent the template (or only the shown version, unless
    ``every_version``), newest campaign first, then by email position, version and
    format. Each one's totals are metrics.email_totals of its own scope (its campaign,
    email, version and format, with the report's period, reliability, segment and
    device), and its map's query opens its click map on the variant that sent it."""
    variants = Variant.objects.filter(template_version__template=selection.template)
    if not every_version:
        variants = variants.filter(template_version_id=selection.version_id)
    variants = variants.select_related("node__campaign__workspace", "template_version__template")
    groups: dict[tuple, list[Variant]] = {}
    for variant in variants.order_by("node_id", "name"):
        key = (variant.node_id, variant.template_version_id, variant.format)
        groups.setdefault(key, []).append(variant)
    # Each node's variants of one format: whether "All variants" sums them on its map.
    formats_of_nodes: dict[tuple, set[int]] = {}
    node_ids = {node for node, _, _ in groups}
    for node, fmt, version in Variant.objects.filter(node_id__in=node_ids).values_list(
        "node_id", "format", "template_version_id"
    ):
        formats_of_nodes.setdefault((node, fmt), set()).add(version)
    uses = []
    for (node_id, version_id, fmt), ours in groups.items():
        node = ours[0].node
        scope = selection.scope(
            template_id=None,
            campaign_id=node.campaign_id,
            node_id=node_id,
            version_id=version_id,
            format=fmt,
        )
        summed = len(ours) > 1 and formats_of_nodes[(node_id, fmt)] == {version_id}
        query = {
            "node": node_id,
            "variant": None if summed else ours[0].pk,
            "format": fmt,
            **selection.filter_values(),
        }
        uses.append(
            CampaignUse(
                campaign=node.campaign,
                node=node,
                version=ours[0].template_version,
                format=fmt,
                variants=ours,
                totals=metrics.email_totals(scope),
                map_query=urlencode({k: v for k, v in query.items() if v not in (None, "")}),
            )
        )
    uses.sort(
        key=lambda u: (
            -u.campaign.created_at.timestamp(),
            -u.campaign.pk,
            u.node.position,
            -u.version.number,
            u.format,
        )
    )
    return uses


def version_totals(selection: ReportSelection) -> list[VersionTotals]:
    """Every version's totals (newest first) over every email that sent it, both formats."""
    return [
        VersionTotals(
            version,
            metrics.email_totals(selection.scope(version_id=version.pk, format=None)),
            version.pk in selection.sent_versions,
            selection.query(version=version.number, format=None),
        )
        for version in selection.versions
    ]


def report_side(selection: ReportSelection) -> MapSide:
    """The shown version's map: its link table and totals summed over every email that
    sent it, drawn on the version's own preview."""
    scope = selection.scope()
    counts = metrics.link_counts(scope)
    totals = metrics.email_totals(scope, counts=counts)
    rows, legend = link_rows(
        selection,
        table=metrics.link_table(
            scope, selection.metric, counts=counts, delivered=totals.delivered
        ),
    )
    version = selection.version
    side = MapSide(None, version, selection.format, totals, rows, legend)
    side.preview = map_preview(selection, version, selection.format)
    return side


# The period selector's shortcuts: the last N UTC days, today included.
PERIODS = (("Last 7 days", 7), ("Last 30 days", 30), ("Last 90 days", 90))


def period_links(selection: ReportSelection, today: date | None = None) -> list[tuple]:
    """(label, query, current) for "All time" and each of PERIODS ending today (UTC)."""
    today = today or timezone.now().astimezone(UTC).date()
    links = [
        (
            "All time",
            selection.query(**{"from": None, "to": None}),
            not selection.date_from and not selection.date_to,
        )
    ]
    for label, days in PERIODS:
        start = today - timedelta(days=days - 1)
        current = selection.date_from == start and selection.date_to == today
        query = selection.query(**{"from": start.isoformat(), "to": today.isoformat()})
        links.append((label, query, current))
    return links


def template_report(selection: ReportSelection) -> dict:
    """Everything the report page shows (one call per request)."""
    main = report_side(selection) if selection.version is not None else None
    uses = campaign_uses(selection)
    rows = version_totals(selection)
    for row in rows:
        row.emails = len({u.node.pk for u in uses if u.version.pk == row.version.pk})
    return {
        "selection": selection,
        "template": selection.template,
        "version": selection.version,
        "template_totals": metrics.email_totals(selection.template_scope()),
        "version_rows": rows,
        "period_links": period_links(selection),
        "uses": uses,
        "email_count": len({u.node.pk for u in uses}),
        "uses_of_version": [
            u for u in uses if u.version.pk == selection.version_id and u.format == selection.format
        ],
        "main": main,
        "totals": main.totals if main else None,
        "rows": main.rows if main else [],
        "listed": sorted_rows(main.rows, selection.sort) if main else [],
        "legend": main.legend if main else [],
        "band_names": band_labels(selection.palette),
        "per_day": day_chart(metrics.clicks_per_day(selection.scope())) if main else None,
        "per_link": link_chart(main.rows) if main else None,
        "metric_label": METRICS[selection.metric],
        "metrics": METRICS,
        "displays": DISPLAYS,
        "sorts": SORTS,
        "device_filters": DEVICE_FILTERS,
        "format_links": [
            (fmt, selection.query(format=fmt if fmt != "html" else None))
            for fmt in selection.formats
        ],
        "link_columns": link_columns(selection),
    }
