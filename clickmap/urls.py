from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path

from campaigns import account_views
from campaigns import views as campaign_views
from clickmap import ops_views


def favicon(request):
    # Browsers ask for /favicon.ico on pages that name no icon (a PDF, an error page).
    return HttpResponsePermanentRedirect(static("favicon.ico"))


urlpatterns = [
    path("", campaign_views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "account/password/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "account/password/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("password-reset/", account_views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "password-reset/sent/",
        account_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        account_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("workspaces/new/", campaign_views.workspace_create, name="workspace-create"),
    path("invitations/<str:token>/", campaign_views.invitation, name="invitation"),
    # Where a test message's unsubscribe link leads (campaigns/test_sends.py): it says so.
    path(
        "test-message/unsubscribe/",
        account_views.test_message_unsubscribe,
        name="test-unsubscribe",
    ),
    path("w/<slug:workspace_slug>/", include("campaigns.urls")),
    path("w/<slug:workspace_slug>/", include("clickmap.map_urls")),
    path("admin/", admin.site.urls),
    # Answered by clickmap.ops_views.OpsEndpointsMiddleware before host validation.
    path("healthz", ops_views.healthz, name="healthz"),
    path("healthz/pipeline", ops_views.healthz_pipeline, name="healthz-pipeline"),
    path("metrics", ops_views.metrics, name="metrics"),
    path("favicon.ico", favicon, name="favicon"),
    path("", include("tracking.urls")),
]
