"""Login throttling around django-axes: whose failures count, and what a locked login sees.

Axes counts failed logins (the login page's and the admin's) per username and per client
address (settings.AXES_*). This module gives it the client address, renders the lockout
page, and clears an account's failures when its owner proves who they are (a login or a
password reset), never the address's: see settings.py for why.
"""

from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.shortcuts import render

from campaigns.client_address import proxied_client


def client_ip(request) -> str:
    """The address failures are counted against.

    Behind the TLS proxy (BEHIND_TLS_PROXY) it is the last X-Forwarded-For entry, the one
    the proxy appended; earlier entries come from the client and could be anything.
    Otherwise the socket's peer.
    """
    if settings.BEHIND_TLS_PROXY:
        last = proxied_client(request.META.get("HTTP_X_FORWARDED_FOR", ""))
        if last:
            return last
    return request.META.get("REMOTE_ADDR", "")


def lockout_minutes() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)


def lockout_response(request, original_response=None, credentials=None):
    """The page a locked login gets (status 429): why, for how long, and how to get in."""
    context = {"minutes": lockout_minutes(), "failure_limit": settings.AXES_FAILURE_LIMIT}
    return render(request, "registration/locked_out.html", context, status=429)


def clear_login_failures(user) -> None:
    """Forget the failed logins typed with `user`'s username (its lock lifts at once).

    The failures of the addresses they came from stay counted.
    """
    username = user.get_username()
    if username:  # axes_reset with no username would forget every failure of every account
        axes_reset(username=username)


@receiver(user_logged_in)
def _clear_failures_on_login(sender, request, user, **kwargs):
    # Failures count "in a row": a successful login starts the account's count again.
    clear_login_failures(user)
