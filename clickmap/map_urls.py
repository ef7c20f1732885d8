"""Click-map pages, mounted under /w/<workspace_slug>/ (every view is workspace_view)."""

from django.urls import path

from clickmap import views

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
]
