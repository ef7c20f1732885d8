"""Selectors: read-only queries of the campaigns app (run inside a workspace scope)."""

from django.db.models import Q, QuerySet

from campaigns.models import Campaign

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
