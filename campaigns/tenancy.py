"""Tenancy in one place.

Every tenant page lives under /w/<workspace_slug>/ and is wrapped by
`workspace_view`, which resolves the current user's membership (404 when there is
none, so another workspace's existence never leaks) and activates the django-scopes
scope for that workspace. Tenant models use ScopedManager, so a query made outside
such a scope raises ScopeError instead of returning another tenant's rows, and
`get_object_or_404` inside it answers 404 for another workspace's ids.
"""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.urls import reverse
from django_scopes import scope, scopes_disabled

from campaigns.models import ROLE_RANK, Membership, Role

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def memberships_of(user):
    """The user's memberships across workspaces (the one deliberate cross-scope read)."""
    if not user.is_authenticated:
        return []
    with scopes_disabled():
        return list(
            Membership.objects.filter(user=user)
            .select_related("workspace")
            .order_by("workspace__name")
        )


def workspace_view(view=None, *, role=Role.VIEWER, write_role=Role.ANALYST):
    """Decorate a view taking `workspace_slug`: membership, role and scope resolved once.

    Reading needs `role`; any unsafe method (POST, …) needs `write_role` too (at least
    analyst), so a viewer can change nothing. A non-member gets 404, a member without
    the role 403. Sets request.workspace and request.membership; the view receives the
    remaining URL kwargs.
    """
    write_role = max_role(role, max_role(write_role, Role.ANALYST))

    def decorate(view_func):
        @login_required
        @wraps(view_func)
        def wrapped(request, workspace_slug, *args, **kwargs):
            with scopes_disabled():
                membership = (
                    Membership.objects.select_related("workspace")
                    .filter(user=request.user, workspace__slug=workspace_slug)
                    .first()
                )
            if membership is None:
                raise Http404("No such workspace.")
            needed = role if request.method in SAFE_METHODS else write_role
            if not membership.allows(needed):
                raise PermissionDenied(f"This needs the {Role(needed).label.lower()} role.")
            request.workspace = membership.workspace
            request.membership = membership
            with scope(workspace=membership.workspace):
                response = view_func(request, *args, **kwargs)
                # Lazy responses would render after the scope closed: render them now.
                if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                    response.render()
                return response

        wrapped.workspace_role = role
        wrapped.workspace_write_role = write_role
        return wrapped

    return decorate(view) if view is not None else decorate


def max_role(a: str, b: str) -> str:
    return a if ROLE_RANK[a] >= ROLE_RANK[b] else b


def workspace_context(request):
    """Template context: current workspace and membership, and the switcher's list."""
    return {
        "workspace": getattr(request, "workspace", None),
        "membership": getattr(request, "membership", None),
        "my_memberships": memberships_of(request.user) if hasattr(request, "user") else [],
    }


class AdminScopesMiddleware:
    """Django admin is for superusers across tenants: it runs with scopes disabled."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.admin_prefix = None

    def __call__(self, request):
        if self.admin_prefix is None:
            self.admin_prefix = reverse("admin:index")
        if request.path.startswith(self.admin_prefix):
            with scopes_disabled():
                return self.get_response(request)
        return self.get_response(request)
