"""Selectors: read-only queries of the campaigns app (run inside a workspace scope)."""

from dataclasses import dataclass

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from campaigns.linkmatch import match_links
from campaigns.models import Campaign, Template, TemplateLink, TemplateVersion, Variant

CAMPAIGN_SORTS = {
    "newest": "-created_at",
    "oldest": "created_at",
    "name": "name",
    "-name": "-name",
    "status": "status",
    "updated": "-updated_at",
}


def campaign_list(
    *, q: str = "", status: str = "", kind: str = "", sort: str = "newest"
) -> QuerySet:
    """Campaigns of the active workspace, filtered by name text, status and kind."""
    qs = Campaign.objects.select_related("workspace")
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(description__icontains=q))
    if status in Campaign.Status.values:
        qs = qs.filter(status=status)
    if kind in Campaign.Kind.values:
        qs = qs.filter(kind=kind)
    return qs.order_by(CAMPAIGN_SORTS.get(sort, "-created_at"), "-pk")


def template_list() -> QuerySet:
    """Templates of the active workspace with version and link counts of the latest version."""
    latest = TemplateVersion.objects.filter(template=OuterRef("pk")).order_by("-number")
    return (
        Template.objects.select_related("workspace")
        .annotate(
            version_count=Count("versions", distinct=True),
            latest_number=Subquery(latest.values("number")[:1]),
            latest_at=Subquery(latest.values("created_at")[:1]),
        )
        .order_by("name")
    )


@dataclass(frozen=True)
class LinkChange:
    """One difference between two versions' inventories."""

    change: str  # "added" | "removed" | "moved" | "changed"
    old: TemplateLink | None
    new: TemplateLink | None


def version_diff(old: TemplateVersion, new: TemplateVersion) -> list[LinkChange]:
    """Links added, removed, moved (out of order) or changed (another href or text on the
    same link) from `old` to `new`, matched by campaigns.linkmatch (what a link is before
    where it is: a row inserted at the top moves nothing); unchanged links are left out."""
    order = ("format", "ordinal")
    changes = [
        LinkChange(match.change, match.old, match.new)
        for match in match_links(list(old.links.order_by(*order)), list(new.links.order_by(*order)))
        if match.change != "same"
    ]
    rank = {"removed": 0, "changed": 1, "moved": 2, "added": 3}
    return sorted(
        changes,
        key=lambda c: (rank[c.change], (c.new or c.old).format, (c.new or c.old).ordinal),
    )


def version_uses(version: TemplateVersion) -> list[dict]:
    """The campaign emails that sent ``version``: one entry per email node (a campaign's
    email, or one email of a scenario), newest campaign first, with the campaign, the
    node, its variants of this version and their formats."""
    variants = (
        Variant.objects.filter(template_version=version)
        .select_related("node__campaign")
        .order_by("-node__campaign__created_at", "-node__campaign_id", "node__position", "name")
    )
    uses: dict[int, dict] = {}
    for variant in variants:
        use = uses.setdefault(
            variant.node_id,
            {"campaign": variant.node.campaign, "node": variant.node, "variants": []},
        )
        use["variants"].append(variant)
    return list(uses.values())
