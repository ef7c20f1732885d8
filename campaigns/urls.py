"""Tenant pages, mounted under /w/<workspace_slug>/ (every view is workspace_view)."""

from django.urls import path

from campaigns import customer_urls, segment_views, send_views, views

app_name = "campaigns"

urlpatterns = [
    path("", views.workspace_home, name="workspace"),
    path("campaigns/", views.campaign_list, name="list"),
    path("campaigns/new/", views.campaign_create, name="create"),
    path("campaigns/<int:campaign_id>/", views.campaign_detail, name="detail"),
    path("campaigns/<int:campaign_id>/edit/", views.campaign_edit, name="edit"),
    path("campaigns/<int:campaign_id>/variants/", views.campaign_variant_add, name="variant-add"),
    path("campaigns/<int:campaign_id>/send/", send_views.campaign_send, name="send"),
    path(
        "campaigns/<int:campaign_id>/send/cancel/",
        send_views.campaign_send_cancel,
        name="send-cancel",
    ),
    path(
        "campaigns/<int:campaign_id>/send/resume/",
        send_views.campaign_send_resume,
        name="send-resume",
    ),
    path("campaigns/<int:campaign_id>/test-send/", send_views.campaign_test_send, name="test-send"),
    path(
        "campaigns/<int:campaign_id>/emails/<int:node_id>/sender/",
        send_views.campaign_sender,
        name="sender",
    ),
    path("campaigns/<int:campaign_id>/progress/", views.campaign_progress, name="progress"),
    path("segments/", segment_views.segment_list, name="segments"),
    path("segments/new/", segment_views.segment_create, name="segment-create"),
    path("segments/preview/", segment_views.segment_preview, name="segment-preview"),
    path("segments/condition/", segment_views.segment_condition, name="segment-condition"),
    path("segments/<int:segment_id>/", segment_views.segment_edit, name="segment"),
    path("segments/<int:segment_id>/delete/", segment_views.segment_delete, name="segment-delete"),
    path("members/", views.member_list, name="members"),
    path("members/<int:membership_id>/role/", views.member_role, name="member-role"),
    path("members/<int:membership_id>/remove/", views.member_remove, name="member-remove"),
    path(
        "invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke,
        name="invitation-revoke",
    ),
    path("settings/", views.workspace_settings, name="settings"),
    path("templates/", views.template_list, name="templates"),
    path("templates/new/", views.template_create, name="template-create"),
    path("templates/<int:template_id>/", views.template_detail, name="template"),
    path("templates/<int:template_id>/edit/", views.template_edit, name="template-edit"),
    path(
        "templates/<int:template_id>/versions/<int:number>/",
        views.version_detail,
        name="version",
    ),
    path(
        "templates/<int:template_id>/versions/<int:number>/images/",
        views.version_images_list,
        name="version-images",
    ),
    path(
        "templates/<int:template_id>/versions/<int:number>/images/<int:image_id>/",
        views.version_image,
        name="version-image",
    ),
]

urlpatterns += customer_urls.urlpatterns
