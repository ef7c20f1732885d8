"""Selectors: read-only queries of the campaigns app (run inside a workspace scope)."""

from dataclasses import dataclass

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from campaigns.models import Campaign, Template, TemplateLink, TemplateVersion

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
    """Links added, removed, moved (same href, text and kind at another XPath) or changed
    (same XPath, other href or text) from `old` to `new`; unchanged links are left out."""

    def key(link):
        return (link.format, link.kind, link.mso, link.href, link.text)

    old_links = list(old.links.all())
    new_links = list(new.links.all())
    at = {(link.format, link.xpath, key(link)) for link in new_links}
    old_rest = [link for link in old_links if (link.format, link.xpath, key(link)) not in at]
    was = {(link.format, link.xpath, key(link)) for link in old_links}
    new_rest = [link for link in new_links if (link.format, link.xpath, key(link)) not in was]

    changes = []
    # Same content elsewhere: moved. Pair in document order within each identical key.
    waiting = {}
    for link in old_rest:
        waiting.setdefault(key(link), []).append(link)
    unmatched_new = []
    for link in new_rest:
        if waiting.get(key(link)):
            changes.append(LinkChange("moved", waiting[key(link)].pop(0), link))
        else:
            unmatched_new.append(link)
    unmatched_old = [link for links in waiting.values() for link in links]
    # Same place, other content: changed.
    old_at = {(link.format, link.xpath): link for link in unmatched_old}
    for link in unmatched_new:
        before = old_at.pop((link.format, link.xpath), None)
        changes.append(LinkChange("changed" if before else "added", before, link))
    changes += [LinkChange("removed", link, None) for link in old_at.values()]
    order = {"removed": 0, "changed": 1, "moved": 2, "added": 3}
    return sorted(
        changes,
        key=lambda c: (order[c.change], (c.new or c.old).format, (c.new or c.old).ordinal),
    )
