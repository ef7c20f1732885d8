"""Customer pages, in the campaigns namespace under /w/<workspace_slug>/ (campaigns/urls.py
adds them)."""

from django.urls import path

from campaigns import customer_views as views

urlpatterns = [
    path("customers/", views.customer_list, name="customers"),
    path("customers/export.csv", views.customer_export, name="customer-export"),
    path("customers/<int:customer_id>/", views.customer_detail, name="customer"),
    path("customers/<int:customer_id>/edit/", views.customer_edit, name="customer-edit"),
    path("customers/<int:customer_id>/delete/", views.customer_delete, name="customer-delete"),
    path("customers/import/", views.import_upload, name="customer-import-upload"),
    path("customers/imports/<int:import_id>/", views.import_detail, name="customer-import"),
    path(
        "customers/imports/<int:import_id>/progress/",
        views.import_progress,
        name="customer-import-progress",
    ),
    path(
        "customers/imports/<int:import_id>/errors.csv",
        views.import_errors,
        name="customer-import-errors",
    ),
]
