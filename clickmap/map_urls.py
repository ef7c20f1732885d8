"""Click-map pages, mounted under /w/<workspace_slug>/ (every view is workspace_view)."""

from django.urls import path

from clickmap import customer_views, views

app_name = "clickmap"

urlpatterns = [
    path("campaigns/<int:campaign_id>/clickmap/", views.clickmap_page, name="page"),
    path("campaigns/<int:campaign_id>/clickmap/preview/", views.preview_panel, name="preview"),
    path("campaigns/<int:campaign_id>/clickmap/export/", views.export, name="export"),
    path(
        "campaigns/<int:campaign_id>/clickmap/destinations/",
        views.destinations,
        name="destinations",
    ),
    path(
        "campaigns/<int:campaign_id>/clickmap/links/<int:link_id>/clickers/",
        views.link_clickers,
        name="clickers",
    ),
    path("campaigns/figures/", views.campaign_figures, name="campaign-figures"),
    path("campaigns/<int:campaign_id>/results/", views.campaign_results, name="campaign-results"),
    path("previews/<int:preview_id>/image/", views.preview_image, name="preview-image"),
    path("templates/<int:template_id>/report/", views.report_page, name="report"),
    path(
        "templates/<int:template_id>/report/preview/",
        views.report_preview,
        name="report-preview",
    ),
    path("templates/<int:template_id>/report/export/", views.report_export, name="report-export"),
    path(
        "templates/<int:template_id>/report/links/<int:link_id>/clickers/",
        views.report_clickers,
        name="report-clickers",
    ),
    path(
        "templates/<int:template_id>/versions/<int:number>/thumbnail/",
        views.version_thumbnail,
        name="thumbnail",
    ),
    path(
        "templates/<int:template_id>/versions/<int:number>/thumbnail.png",
        views.version_thumbnail_image,
        name="thumbnail-image",
    ),
    path("templates/draft-preview/", views.draft_preview, name="draft-preview"),
    path(
        "customers/<int:customer_id>/timeline/",
        customer_views.customer_timeline_fragment,
        name="customer-timeline",
    ),
]
