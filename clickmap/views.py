"""The click-map pages. Thin: the selection is parsed and the numbers computed in
clickmap.dashboard / clickmap.metrics; these views shape responses."""

from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render

from campaigns.models import Campaign, TemplateLink
from campaigns.tenancy import workspace_view
from clickmap import dashboard, exports, freshness, metrics
from clickmap.dashboard import Selection, click_map, shown_version
from clickmap.models import Preview

CLICKERS_PER_PAGE = 25


def _map_context(request, campaign_id) -> dict:
    campaign = get_object_or_404(Campaign.objects.select_related("workspace"), pk=campaign_id)
    # Before the numbers: a run finishing between the two reads then makes the line
    # older than the numbers, never newer.
    fresh = freshness.of_numbers()
    context = click_map(Selection.from_query(campaign, request.GET))
    context["campaign"] = campaign
    context["freshness"] = fresh
    return context


@workspace_view
def clickmap_page(request, campaign_id):
    context = _map_context(request, campaign_id)
    template = (
        "clickmap/partials/_clickmap.html"
        if request.htmx and not request.htmx.boosted
        else "clickmap/clickmap.html"
    )
    return render(request, template, context)


@workspace_view
def preview_panel(request, campaign_id):
    """One map's preview with its overlay (htmx polls it while the render runs): the
    selected variant's, or with ``side=b`` the compared one's."""
    campaign = get_object_or_404(Campaign.objects.select_related("workspace"), pk=campaign_id)
    selection = Selection.from_query(campaign, request.GET)
    side = dashboard.map_side(selection, compared=request.GET.get("side") == "b")
    context = {"campaign": campaign, "selection": selection, "side": side}
    context["metric_label"] = dashboard.METRICS[selection.metric]
    return render(request, "clickmap/partials/_preview.html", context)


@workspace_view
def destinations(request, campaign_id):
    """The personalised links' clicks per destination domain, loaded after the map."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    selection = Selection.from_query(campaign, request.GET)
    context = {"domains": dashboard.destinations(selection), "selection": selection}
    return render(request, "clickmap/partials/_destinations.html", context)


@workspace_view
def preview_image(request, preview_id):
    preview = get_object_or_404(Preview, pk=preview_id, status=Preview.Status.DONE)
    response = HttpResponse(bytes(preview.image), content_type=preview.mime)
    response["Cache-Control"] = "private, max-age=86400"
    return response


@workspace_view
def link_clickers(request, campaign_id, link_id):
    """Who clicked a link (its Outlook copies included): paginated, or as CSV."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    link = get_object_or_404(TemplateLink, pk=link_id)
    selection = Selection.from_query(campaign, request.GET)
    version = shown_version(selection)
    if version is None or link.version_id != version.pk:
        raise Http404("This link is not in the email shown.")
    link_ids = [link.pk, *link.mso_copies.values_list("pk", flat=True)]
    clickers = metrics.link_clickers(selection.scope(), link_ids)
    if request.GET.get("export") == "csv":
        return exports.clickers_csv_response(
            clickers, f"clickers-{campaign.pk}-link-{link.ordinal + 1}.csv", campaign.workspace
        )
    page = Paginator(clickers, CLICKERS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"campaign": campaign, "link": link, "page": page, "selection": selection}
    template = "clickmap/partials/_clickers.html" if request.htmx else "clickmap/clickers.html"
    return render(request, template, context)


@workspace_view
def export(request, campaign_id):
    """The current selection as CSV or Excel (the same file export_clickmap writes)."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    selection = Selection.from_query(campaign, request.GET)
    fmt = request.GET.get("export")
    other = selection.compare_scope() if selection.compared else None
    name = f"clickmap-{campaign.pk}-{'compare' if other else selection.metric}"
    if fmt == "xlsx":
        return exports.xlsx_response(
            selection.scope(), f"{name}.xlsx", metric=selection.metric, compare=other
        )
    if fmt == "csv":
        return exports.csv_streaming_response(
            selection.scope(), f"{name}.csv", metric=selection.metric, compare=other
        )
    raise Http404("Unknown export format.")
