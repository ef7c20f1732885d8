"""Login, logout, the workspace switcher, creating workspaces and invitations."""

import pytest
from django.core import mail
from django.test import Client
from django_scopes import scopes_disabled

from campaigns.models import Invitation, Membership, Role, Workspace
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


@pytest.fixture
def owner_ws(make_user, make_workspace):
    owner = make_user("owner")
    return owner, make_workspace("Acme", owner=owner)


def test_inviting_an_existing_user_adds_them_at_once(owner_ws, make_user, client_for):
    owner, workspace = owner_ws
    colleague = make_user("colleague", email="colleague@example.test")
    client_for(owner).post(
        f"/w/{workspace.slug}/members/", {"email": "Colleague@Example.test", "role": "analyst"}
    )
    with scopes_disabled():
        assert Membership.objects.get(workspace=workspace, user=colleague).role == Role.ANALYST
    again = client_for(owner).post(
        f"/w/{workspace.slug}/members/", {"email": "colleague@example.test", "role": "viewer"}
    )
    assert again.status_code == 400 and b"already a member" in again.content


def test_invitation_email_link_creates_an_account_and_membership(owner_ws, client_for):
    owner, workspace = owner_ws
    client_for(owner).post(
        f"/w/{workspace.slug}/members/", {"email": "new.person@example.test", "role": "viewer"}
    )
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["new.person@example.test"]
    with scopes_disabled():
        invitation = Invitation.objects.get()
    assert f"/invitations/{invitation.token}/" in mail.outbox[0].body
    guest = Client()
    url = f"/invitations/{invitation.token}/"
    assert b"Join Acme" in guest.get(url).content
    weak = guest.post(url, {"username": "newbie", "password": "123"})
    assert weak.status_code == 400
    joined = guest.post(url, {"username": "newbie", "password": "a-Long-passphrase-9"}, follow=True)
    assert joined.request["PATH_INFO"] == f"/w/{workspace.slug}/campaigns/"
    with scopes_disabled():
        member = Membership.objects.get(workspace=workspace, user__username="newbie")
    assert member.role == Role.VIEWER and member.user.email == "new.person@example.test"
    assert Client().get(url).status_code == 404  # used up


def test_forged_invitation_token_is_404(db):
    assert Client().get("/invitations/not-a-real-token/").status_code == 404


def test_owner_revokes_a_pending_invitation(owner_ws, client_for):
    owner, workspace = owner_ws
    client = client_for(owner)
    client.post(f"/w/{workspace.slug}/members/", {"email": "later@example.test", "role": "viewer"})
    with scopes_disabled():
        invitation = Invitation.objects.get()
    client.post(f"/w/{workspace.slug}/invitations/{invitation.pk}/revoke/")
    assert Client().get(f"/invitations/{invitation.token}/").status_code == 404
