"""A campaign's results where marketers look: the campaign page's summary, top links and
A/B variants side by side (the campaign list's figures are metrics.campaign_figures).

Every number comes from clickmap.metrics (email_totals, link_table, compare), the A/B
winner from clickmap.significance.verdict; this module only chooses the scopes and
shapes the rows. All time and every event, as the click map opens.
"""

from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from campaigns.models import Campaign, EmailNode, Variant
from clickmap import metrics
from clickmap.significance import ProportionTest, Verdict, verdict

TOP_LINKS = 5  # links shown per email (or per variant): the map shows them all


@dataclass
class VariantResult:
    variant: Variant
    totals: metrics.EmailTotals
    test: ProportionTest | None = None  # against the leader's CTR (None: the leader itself)
    leader: bool = False
    winner: bool = False


@dataclass
class EmailResult:
    """One email of the campaign: its totals, its variants side by side (two or more),
    and its top links in one of three shapes: ``top_links`` over the email (one variant,
    or variants that send one template version in one format), ``paired_links`` (two
    variants of one format: each link on both sides, paired as the compare view pairs
    them), else ``variant_links``, each variant's own."""

    node: EmailNode
    totals: metrics.EmailTotals
    variants: list[VariantResult] = field(default_factory=list)
    verdict: Verdict | None = None
    top_links: list[metrics.LinkRow] = field(default_factory=list)
    paired_links: list[metrics.ComparedLink] = field(default_factory=list)
    variant_links: list[tuple[VariantResult, list[metrics.LinkRow]]] = field(default_factory=list)
    map_query: str = ""  # the click map of this email
    compare_query: str = ""  # the compare view of its first two variants (one format)

    @property
    def winner(self) -> VariantResult | None:
        return next((v for v in self.variants if v.winner), None)

    @property
    def leader(self) -> VariantResult | None:
        return next((v for v in self.variants if v.leader), None)

    @property
    def p_value(self) -> float | None:
        """The leader's weakest lead: the largest p of its tests against the others (None
        when one cannot be computed)."""
        tests = [v.test for v in self.variants if not v.leader]
        if not self.leader or not tests or any(t is None for t in tests):
            return None
        return max(t.p_value for t in tests)

    @property
    def runner_up(self) -> VariantResult | None:
        """The leader's closest rival (the highest CTR after it), for the verdict."""
        others = [v for v in self.variants if not v.leader]
        return max(others, key=lambda v: v.totals.ctr, default=None)


@dataclass
class CampaignResults:
    campaign: Campaign
    totals: metrics.EmailTotals
    emails: list[EmailResult]

    @property
    def scenario(self) -> bool:
        return len(self.emails) > 1


def campaign_results(campaign: Campaign) -> CampaignResults:
    """The campaign page's results (run inside the campaign's workspace scope): the
    campaign's totals (a scenario counts a customer once across its emails), then each
    email's variants, verdict and top links."""
    workspace = campaign.workspace
    base = metrics.Scope(workspace=workspace, campaign_id=campaign.pk)
    nodes = list(campaign.nodes.order_by("position", "pk"))
    by_node = {node.pk: [] for node in nodes}
    for variant in (
        Variant.objects.filter(node__campaign=campaign)
        .select_related("template_version__template")
        .order_by("name", "pk")
    ):
        by_node[variant.node_id].append(variant)
    totals = metrics.email_totals(base)
    emails = [
        _email_result(base, node, by_node[node.pk], totals if len(nodes) == 1 else None)
        for node in nodes
    ]
    return CampaignResults(campaign, totals, emails)


def _variant_scope(base: metrics.Scope, variant: Variant) -> metrics.Scope:
    return metrics.Scope(
        workspace=base.workspace,
        campaign_id=base.campaign_id,
        node_id=variant.node_id,
        variant_id=variant.pk,
        format=variant.format,
    )


def _email_result(base, node, variants, totals) -> EmailResult:
    node_scope = metrics.Scope(
        workspace=base.workspace, campaign_id=base.campaign_id, node_id=node.pk
    )
    result = EmailResult(node, totals if totals is not None else metrics.email_totals(node_scope))
    result.map_query = urlencode({"node": node.pk})
    formats = {v.format for v in variants}
    versions = {v.template_version_id for v in variants}
    paired = len(variants) == 2 and len(formats) == 1
    if paired:
        a, b = variants
        comparison = metrics.compare(_variant_scope(base, a), _variant_scope(base, b), "unique")
        result.variants = [VariantResult(a, comparison.a), VariantResult(b, comparison.b)]
        result.paired_links = _top_pairs(comparison.links)
        result.compare_query = urlencode({"node": node.pk, "variant": a.pk, "compare": b.pk})
    elif len(variants) > 1:
        result.variants = [
            VariantResult(v, metrics.email_totals(_variant_scope(base, v))) for v in variants
        ]
    if len(result.variants) > 1:
        result.verdict = verdict([(v.totals.clickers, v.totals.delivered) for v in result.variants])
        for n, side in enumerate(result.variants):
            side.test = result.verdict.tests[n]
            side.leader = n == result.verdict.leader
            side.winner = n == result.verdict.winner
    if len(variants) == 1:
        result.top_links = _top(metrics.link_table(_variant_scope(base, variants[0]), "unique"))
    elif len(variants) > 2 and len(formats) == 1 and len(versions) == 1:
        summed = replace(node_scope, format=variants[0].format)  # as "All variants" sums
        result.top_links = _top(metrics.link_table(summed, "unique"))
    elif len(variants) > 1 and not paired:
        result.variant_links = [
            (side, _top(metrics.link_table(_variant_scope(base, side.variant), "unique")))
            for side in result.variants
        ]
    return result


def _top(rows: list[metrics.LinkRow]) -> list[metrics.LinkRow]:
    """The most clicked links (by unique clicks: rows come ranked), clicked ones only."""
    return [row for row in rows if row.unique][:TOP_LINKS]


def _top_pairs(pairs: list[metrics.ComparedLink]) -> list[metrics.ComparedLink]:
    """The links with the most unique clicks on both sides together (a variant's
    customers are its own, so the two add up to distinct customers)."""

    def clicks(pair):
        return sum(side.unique for side in (pair.a, pair.b) if side is not None)

    ranked = sorted(
        (pair for pair in pairs if clicks(pair)), key=lambda pair: -clicks(pair)
    )  # stable: ties keep the email's order
    return ranked[:TOP_LINKS]
