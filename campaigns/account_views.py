"""Password change and reset: Django's views with Clickmap's pages, and a reset that
also lifts a login lock (campaigns.login_throttle)."""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.shortcuts import render

from campaigns.login_throttle import clear_login_failures


def reset_valid_hours() -> int:
    return settings.PASSWORD_RESET_TIMEOUT // 3600


class PasswordResetView(auth_views.PasswordResetView):
    """Mails a reset link to every active account with the address; answers the same
    whether or not one exists."""

    @property
    def extra_email_context(self):
        return {"valid_hours": reset_valid_hours()}


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    @property
    def extra_context(self):
        return {"valid_hours": reset_valid_hours()}


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Sets the new password; the account's failed logins are forgotten, so a locked
    account's owner gets in at once (they proved they read its mail)."""

    def form_valid(self, form):
        response = super().form_valid(form)
        clear_login_failures(form.user)
        return response


def test_message_unsubscribe(request):
    """The unsubscribe link of a test message (public: test recipients need no account)."""
    return render(request, "campaigns/test_unsubscribe.html")
