"""The click-map pages. Thin: the selection is parsed and the numbers computed in
clickmap.dashboard / clickmap.metrics; these views shape responses."""

import base64

from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from campaigns.models import Campaign, Role, Template, TemplateLink, TemplateVersion
from campaigns.tenancy import workspace_view
from campaigns.version_images import version_images_for_render
from clickmap import dashboard, exports, freshness, metrics, previews, results
from clickmap.dashboard import Selection, click_map, shown_version
from clickmap.models import Preview
from clickmap.template_report import ReportSelection, report_side, template_report

CLICKERS_PER_PAGE = 25
FIGURES_MAX_CAMPAIGNS = 100  # a page of the campaign list holds far fewer


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


def _report_selection(request, template_id) -> ReportSelection:
    template = get_object_or_404(Template.objects.select_related("workspace"), pk=template_id)
    return ReportSelection.from_query(template, request.GET)


@workspace_view
def report_page(request, template_id):
    """The template report: a version's click map summed over every email that sent it,
    the template's totals and the campaigns that used it."""
    context = template_report(_report_selection(request, template_id))
    template = (
        "clickmap/partials/_report.html"
        if request.htmx and not request.htmx.boosted
        else "clickmap/report.html"
    )
    return render(request, template, context)


@workspace_view
def report_preview(request, template_id):
    """The report's preview with its overlay (htmx polls it while the render runs)."""
    selection = _report_selection(request, template_id)
    if selection.version is None:
        raise Http404("This template has no version.")
    context = {
        "selection": selection,
        "side": report_side(selection),
        "metric_label": dashboard.METRICS[selection.metric],
        "preview_url": request.path,
    }
    return render(request, "clickmap/partials/_preview.html", context)


@workspace_view
def report_export(request, template_id):
    """The report's link table as CSV or Excel: the click map's export writers, for the
    scope the page shows (the version over every email that sent it)."""
    selection = _report_selection(request, template_id)
    version = selection.version
    fmt = request.GET.get("export")
    if version is None or fmt not in ("csv", "xlsx"):
        raise Http404("Unknown export format.")
    part = "-amp" if selection.format == "amp" else ""
    name = f"template-{selection.template.pk}-v{version.number}{part}-{selection.metric}"
    if fmt == "xlsx":
        return exports.xlsx_response(selection.scope(), f"{name}.xlsx", metric=selection.metric)
    return exports.csv_streaming_response(selection.scope(), f"{name}.csv", metric=selection.metric)


def _version(template_id, number) -> TemplateVersion:
    template = get_object_or_404(Template, pk=template_id)
    return get_object_or_404(
        TemplateVersion.objects.select_related("template"), template=template, number=number
    )


@workspace_view
def version_thumbnail(request, template_id, number):
    """A version's thumbnail as an <img> fragment (the template list loads it when it
    scrolls into view); while Chromium renders, a placeholder that polls."""
    version = _version(template_id, number)
    preview = previews.version_thumbnail(version)
    context = {"version": version, "preview": preview}
    if preview.status == Preview.Status.DONE:
        context["thumbnail"] = previews.thumbnail(preview)
    return render(request, "clickmap/partials/_thumbnail.html", context)


@workspace_view
def version_thumbnail_image(request, template_id, number):
    """The thumbnail's PNG: the top of the version's desktop preview, scaled down."""
    version = _version(template_id, number)
    preview = previews.version_thumbnail(version)
    if preview.status != Preview.Status.DONE:
        raise Http404("The preview is not rendered yet.")
    response = HttpResponse(previews.thumbnail(preview).png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@workspace_view(role=Role.ANALYST)
@require_POST
def draft_preview(request):
    """The editor's live preview of its unsaved HTML (or AMP) part, rendered by Chromium
    with JavaScript off; with ``template`` the template's latest images are shown."""
    part = "amp" if request.POST.get("part") == "amp" else "html"
    source = request.POST.get("amp_html" if part == "amp" else "html", "")
    device = "mobile" if request.POST.get("device") == "mobile" else "desktop"
    images = None
    if request.POST.get("template"):
        try:
            template_id = int(request.POST["template"])
        except ValueError:
            raise Http404("No such template.") from None
        template = get_object_or_404(Template, pk=template_id)
        latest = template.versions.order_by("-number").first()
        images = version_images_for_render(latest.pk, part) if latest else None
    context = {"part": part, "device": device}
    try:
        draft = previews.draft_preview(
            source,
            device,
            previews.sample_customer(request.workspace.pk),
            images,
            part="AMP part" if part == "amp" else "HTML",
        )
    except previews.DraftError as error:
        context["error"] = str(error)
    else:
        context["draft"] = draft
        context["data_url"] = f"data:{draft.mime};base64,{base64.b64encode(draft.image).decode()}"
    return render(request, "clickmap/partials/_draft_preview.html", context)


@workspace_view
def report_clickers(request, template_id, link_id):
    """Who clicked a link of the shown version over every email that sent it (its
    Outlook copies included): paginated, or as CSV."""
    selection = _report_selection(request, template_id)
    link = get_object_or_404(TemplateLink, pk=link_id)
    if selection.version is None or link.version_id != selection.version_id:
        raise Http404("This link is not in the version shown.")
    link_ids = [link.pk, *link.mso_copies.values_list("pk", flat=True)]
    clickers = metrics.link_clickers(selection.scope(), link_ids)
    if request.GET.get("export") == "csv":
        name = f"clickers-template-{selection.template.pk}-v{selection.version.number}"
        return exports.clickers_csv_response(
            clickers, f"{name}-link-{link.ordinal + 1}.csv", request.workspace
        )
    page = Paginator(clickers, CLICKERS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "template": selection.template,
        "link": link,
        "page": page,
        "selection": selection,
    }
    template = (
        "clickmap/partials/_clickers.html" if request.htmx else "clickmap/report_clickers.html"
    )
    return render(request, template, context)


@workspace_view
def campaign_results(request, campaign_id):
    """The campaign page's results section (htmx loads it there), or a page of its own."""
    campaign = get_object_or_404(Campaign.objects.select_related("workspace"), pk=campaign_id)
    context = {"campaign": campaign, "results": results.campaign_results(campaign)}
    template = (
        "clickmap/partials/_campaign_results.html"
        if request.htmx and not request.htmx.boosted
        else "clickmap/campaign_results.html"
    )
    return render(request, template, context)


@workspace_view
def campaign_figures(request):
    """The campaign list's figures for the campaigns of one page (?id=…&id=…), as htmx
    out-of-band table cells: one batch (metrics.campaign_figures), not one per row. Any
    id that is not a campaign of this workspace answers 404."""
    if not request.htmx:
        return redirect("campaigns:list", request.workspace.slug)
    raw = request.GET.getlist("id")
    if not 0 < len(raw) <= FIGURES_MAX_CAMPAIGNS or not all(_is_id(v) for v in raw):
        return HttpResponseBadRequest(
            f"Give 1 to {FIGURES_MAX_CAMPAIGNS} campaign ids as ?id=…", content_type="text/plain"
        )
    ids = list(dict.fromkeys(int(v) for v in raw))
    if Campaign.objects.filter(pk__in=ids).count() != len(ids):
        raise Http404("No such campaign.")
    figures = metrics.campaign_figures(ids)
    rows = [(pk, figures[pk]) for pk in ids]
    return render(request, "clickmap/partials/_campaign_figures.html", {"rows": rows})


def _is_id(text: str) -> bool:
    """A database id: digits that fit a bigint (beyond it PostgreSQL would raise)."""
    return text.isascii() and text.isdigit() and int(text) < 2**63
