"""Tenancy: another workspace's objects answer 404 on every URL, and every tenant view
goes through the one scoping mechanism (campaigns.tenancy.workspace_view)."""

import io
import re

import pytest
from django.http import HttpResponse
from django.urls import URLPattern, URLResolver, get_resolver, include, path, reverse
from django_scopes import scopes_disabled
from django_scopes.exceptions import ScopeError
from PIL import Image

from campaigns.models import (
    Campaign,
    Customer,
    CustomerImport,
    EmailNode,
    Invitation,
    Membership,
    Role,
    Segment,
    Template,
    Variant,
)
from campaigns.services import template_create
from clickmap.models import Preview

# Views that are deliberately outside a workspace: auth, the landing page, invitation
# acceptance by secret token, health, tracking endpoints, and the superuser-only admin.
PUBLIC_URL_NAMES = {
    "home",
    "login",
    "logout",
    "workspace-create",
    "invitation",
    "password_change",  # the user's own account
    "password_change_done",
    "password_reset",
    "password_reset_done",
    "password_reset_confirm",
    "password_reset_complete",
    "healthz",
    "healthz-pipeline",  # operators' endpoints: no workspace data
    "metrics",  # behind METRICS_TOKEN
    "favicon",
    "click",
    "open",
    "unsubscribe",  # signed tracking tokens, for recipients
    "test-unsubscribe",  # the fixed page a test message's unsubscribe link opens
}
PUBLIC_NAMESPACES = {"admin"}
TENANT_PREFIX = "w/<slug:workspace_slug>/"


def walk(patterns, prefix="", namespace=None):
    """Yield (route, name, namespace, callback) for every URL pattern."""
    for entry in patterns:
        if isinstance(entry, URLResolver):
            ns = entry.namespace or namespace
            yield from walk(entry.url_patterns, prefix + str(entry.pattern), ns)
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.name, namespace, entry.callback


def unscoped_tenant_views(urlconf=None):
    """Routes that are neither public nor a workspace_view under /w/<slug>/."""
    problems = []
    for route, name, namespace, callback in walk(get_resolver(urlconf).url_patterns):
        if namespace in PUBLIC_NAMESPACES or (namespace is None and name in PUBLIC_URL_NAMES):
            continue
        if not route.startswith(TENANT_PREFIX) or not hasattr(callback, "workspace_role"):
            problems.append(route)
    return problems


def test_every_non_public_view_is_a_workspace_view():
    assert unscoped_tenant_views() == []


def _rogue_view(request, workspace_slug, campaign_id):
    return HttpResponse(Campaign.objects.get(pk=campaign_id).name)


urlpatterns = [
    path("", include("clickmap.urls")),
    path("w/<slug:workspace_slug>/rogue/<int:campaign_id>/", _rogue_view),
]


def test_a_view_added_without_the_scoping_mechanism_is_caught():
    assert unscoped_tenant_views(__name__) == ["w/<slug:workspace_slug>/rogue/<int:campaign_id>/"]


def test_an_unscoped_query_raises_instead_of_leaking(make_workspace, make_campaign):
    make_campaign(make_workspace())
    with pytest.raises(ScopeError):
        list(Campaign.objects.all())


def tenant_routes():
    return [
        (route, callback)
        for route, name, namespace, callback in walk(get_resolver().url_patterns)
        if route.startswith(TENANT_PREFIX)
    ]


def _objects_of(workspace, make_campaign, make_user):
    """One object of each kind a tenant URL can name, inside `workspace`."""
    with scopes_disabled():
        member = Membership.objects.create(workspace=workspace, user=make_user(), role=Role.VIEWER)
        invitation = Invitation.objects.create(workspace=workspace, email="x@example.test")
        version = template_create(
            workspace=workspace,
            name=f"Secret template of {workspace.name}",
            html='<p><a href="https://example.com/">Shop</a><img src="images/secret.png"></p>',
            assets={"images/secret.png": _png()},
        )
        link = version.links.get()
        image = version.images.get()
        preview = Preview.objects.create(
            workspace=workspace,
            version=version,
            status=Preview.Status.DONE,
            image=b"secret pixels",
            mime="image/png",
            width=10,
            height=10,
        )
    campaign = make_campaign(workspace)
    with scopes_disabled():
        node = EmailNode.objects.create(campaign=campaign, name="Email")
        Variant.objects.create(node=node, name="A", subject="s", template_version=version)
        customer = Customer.objects.create(
            workspace=workspace, external_id="secret", email="secret@example.test"
        )
        customer_import = CustomerImport.objects.create(
            workspace=workspace, file_name="Secret template list.csv", path="/nonexistent"
        )
        segment = Segment.objects.create(
            workspace=workspace, name="Secret segment", rule=[{"kind": "unsubscribed"}]
        )
    return {
        "customer_id": customer.pk,
        "import_id": customer_import.pk,
        "segment_id": segment.pk,
        "node_id": node.pk,
        "campaign_id": campaign.pk,
        "membership_id": member.pk,
        "invitation_id": invitation.pk,
        "template_id": version.template_id,
        "number": version.number,
        "link_id": link.pk,
        "preview_id": preview.pk,
        "image_id": image.pk,
    }


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def without_csrf(html: bytes) -> bytes:
    """Page text without the per-render CSRF token, which differs on every response."""
    return re.sub(rb'("X-CSRFToken": "|name="csrfmiddlewaretoken" value=")[^"]+', rb"\1", html)


def fill(route, values):
    def sub(match):
        name = match.group(2)
        if name not in values:
            raise AssertionError(f"{route}: add an object for URL parameter {name!r} to this test")
        return str(values[name])

    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", sub, route)


@pytest.fixture
def two_workspaces(make_workspace, make_user, make_campaign):
    alice = make_user("alice")
    a = make_workspace("Workspace A", owner=alice)
    b = make_workspace("Workspace B")
    return (
        alice,
        a,
        b,
        _objects_of(a, make_campaign, make_user),
        _objects_of(b, make_campaign, make_user),
    )


def test_member_of_a_gets_404_for_every_url_of_workspace_b(two_workspaces, client_for):
    alice, a, b, _, b_objects = two_workspaces
    client = client_for(alice)
    routes = tenant_routes()
    assert len(routes) >= 8
    for route, _ in routes:
        url = fill(route, {"workspace_slug": b.slug, **b_objects})
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 404, f"{method.__name__.upper()} {url}"
            assert b"Workspace B" not in response.content
            assert b"Secret template" not in response.content
            assert b"secret pixels" not in response.content


def test_b_object_ids_under_workspace_a_answer_like_missing_ones(two_workspaces, client_for):
    alice, a, b, a_objects, b_objects = two_workspaces
    client = client_for(alice)  # owner of A: no role check stands in the way
    missing = {key: 10**9 for key in b_objects}
    checked = 0
    for route, _ in tenant_routes():
        if "<int:" not in route:
            continue
        foreign = fill(route, {"workspace_slug": a.slug, **b_objects})
        absent = fill(route, {"workspace_slug": a.slug, **missing})
        response = client.post(foreign)
        assert response.status_code == 404, f"POST {foreign}"
        assert without_csrf(response.content) == without_csrf(client.post(absent).content)
        assert client.get(foreign).status_code in (404, 405), f"GET {foreign}"
        checked += 1
    assert checked >= 5
    with scopes_disabled():
        assert Campaign.objects.filter(workspace=b).count() == 1
        assert Membership.objects.filter(workspace=b).count() == 2
        assert Invitation.objects.filter(workspace=b).count() == 1
        assert Template.objects.filter(workspace=b).get().versions.count() == 1


def test_b_campaign_ids_in_the_list_figures_query_answer_like_missing_ones(
    two_workspaces, client_for
):
    # The campaign list's figures name campaigns in the query (?id=…), not the path.
    alice, a, b, a_objects, b_objects = two_workspaces
    client = client_for(alice)
    url = reverse("clickmap:campaign-figures", args=[a.slug])
    htmx = {"HX-Request": "true"}
    assert client.get(url, {"id": a_objects["campaign_id"]}, headers=htmx).status_code == 200
    for ids in ([b_objects["campaign_id"]], [a_objects["campaign_id"], b_objects["campaign_id"]]):
        foreign = client.get(url, {"id": ids}, headers=htmx)
        absent = client.get(url, {"id": [10**9]}, headers=htmx)
        assert foreign.status_code == absent.status_code == 404
        assert without_csrf(foreign.content) == without_csrf(absent.content)


def test_admin_is_for_superusers_and_sees_every_workspace(make_user, make_campaign, make_workspace):
    from django.test import Client

    make_campaign(make_workspace(), name="Tenant one campaign")
    make_campaign(make_workspace(), name="Tenant two campaign")
    client = Client()
    client.force_login(make_user())
    assert client.get("/admin/campaigns/campaign/").status_code == 302  # to admin login
    client.force_login(make_user(is_staff=True, is_superuser=True))
    page = client.get("/admin/campaigns/campaign/")
    assert page.status_code == 200
    assert b"Tenant one campaign" in page.content and b"Tenant two campaign" in page.content
