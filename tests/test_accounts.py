"""Login, logout, the workspace switcher and creating workspaces."""

import re

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


def switcher_names(page: str) -> list[str]:
    """The workspace names the switcher lists, in order."""
    menu = re.search(r'<details class="switcher">.*?</details>', page, re.S).group(0)
    return re.findall(r'<li><a href="/w/[^"]+/campaigns/"[^>]*>([^<]+?) <small>', menu)


def test_new_workspace_from_the_switcher_is_created_and_owned_by_its_creator(
    make_user, make_workspace, client_for
):
    me = make_user()
    make_workspace("Alpha shop", owner=me)
    client = client_for(me)
    switcher = client.get("/w/alpha-shop/campaigns/").content.decode()
    assert '<a href="/?new=1">+ New workspace</a>' in switcher
    form = client.get("/?new=1")
    assert form.status_code == 200
    assert b"Create a workspace" in form.content
    assert b'action="/workspaces/new/"' in form.content
    created = client.post("/workspaces/new/", {"name": "Beta shop"}, follow=True)
    beta = Workspace.objects.get(name="Beta shop")
    assert created.request["PATH_INFO"] == f"/w/{beta.slug}/campaigns/"
    with scopes_disabled():
        assert list(Membership.objects.filter(workspace=beta).values_list("user", "role")) == [
            (me.pk, Role.OWNER)
        ]
    assert switcher_names(created.content.decode()) == ["Alpha shop", "Beta shop"]


def test_home_without_new_still_lands_in_the_first_workspace(make_user, make_workspace, client_for):
    me = make_user()
    first = make_workspace("Alpha", owner=me)
    make_workspace("Beta", owner=me)
    assert client_for(me).get("/")["Location"] == f"/w/{first.slug}/campaigns/"
