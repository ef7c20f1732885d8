"""Login, logout, the workspace switcher and creating workspaces."""

from django.test import Client
from django_scopes import scopes_disabled

from campaigns.models import Membership, Role, Workspace
from tests.conftest import PASSWORD


def test_anonymous_visitors_are_sent_to_login(make_workspace):
    workspace = make_workspace()
    response = Client().get(f"/w/{workspace.slug}/campaigns/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_login_and_logout(make_user, make_workspace):
    user = make_user("marta")
    workspace = make_workspace("Marta's shop", owner=user)
    client = Client()
    bad = client.post("/login/", {"username": "marta", "password": "wrong"})
    assert bad.status_code == 200 and b"didn't match" in bad.content
    landing = client.post("/login/", {"username": "marta", "password": PASSWORD}, follow=True)
    assert landing.request["PATH_INFO"] == f"/w/{workspace.slug}/campaigns/"
    client.post("/logout/")
    assert client.get("/").status_code == 302


def test_switcher_lists_only_my_workspaces(make_user, make_workspace, add_member, client_for):
    me = make_user()
    mine = make_workspace("Mine", owner=me)
    shared = make_workspace("Shared with me")
    add_member(shared, Role.VIEWER, user=me)
    make_workspace("Someone else's")
    page = client_for(me).get(f"/w/{mine.slug}/campaigns/").content.decode()
    assert "Mine" in page and "Shared with me" in page
    assert "Someone else" not in page


def test_user_without_workspace_creates_one_and_owns_it(make_user, client_for):
    user = make_user()
    client = client_for(user)
    assert b"Create a workspace" in client.get("/").content
    response = client.post("/workspaces/new/", {"name": "Nordic Outdoor"}, follow=True)
    workspace = Workspace.objects.get(name="Nordic Outdoor")
    assert response.request["PATH_INFO"] == f"/w/{workspace.slug}/campaigns/"
    with scopes_disabled():
        assert Membership.objects.get(workspace=workspace).role == Role.OWNER
    client.post("/workspaces/new/", {"name": "Nordic Outdoor"})
    assert Workspace.objects.filter(name="Nordic Outdoor").count() == 2  # slugs stay unique
