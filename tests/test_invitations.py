"""Invitations: mailed to an address whether or not it has an account, accepted once,
before they expire, only by an account with that address; the members page tells the
inviting owner nothing about accounts."""

import hashlib
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from django_scopes import scopes_disabled

from campaigns.models import Invitation, Membership, Role

LINK = re.compile(r"http://testserver(/invitations/([A-Za-z0-9_-]+)/)")


@pytest.fixture
def acme(make_user, make_workspace):
    owner = make_user("owner")
    return owner, make_workspace("Acme", owner=owner)


def invite(client, workspace, email, role="viewer", follow=False):
    return client.post(
        f"/w/{workspace.slug}/members/", {"email": email, "role": role}, follow=follow
    )


def link_in(message) -> str:
    """The invitation link's path in a received message."""
    return LINK.search(message.get_body(("plain",)).get_content()).group(1)


def members(workspace):
    with scopes_disabled():
        return set(
            Membership.objects.filter(workspace=workspace).values_list("user__username", "role")
        )


def test_the_invitation_mail_reaches_the_smtp_server_and_its_link_creates_the_account(
    acme, client_for, smtp_server
):
    owner, workspace = acme
    response = invite(client_for(owner), workspace, "New.Person@Example.test")
    assert response.status_code == 302
    [message] = smtp_server.messages()
    assert message["To"] == "new.person@example.test"
    assert message["Subject"] == "owner invited you to Acme on Clickmap"
    path = link_in(message)
    guest = Client()
    page = guest.get(path)
    assert page.status_code == 200 and b"Join Acme" in page.content
    assert b"new.person@example.test" in page.content
    weak = guest.post(path, {"username": "newbie", "password": "123"})
    assert weak.status_code == 400
    assert not get_user_model().objects.filter(username="newbie").exists()
    joined = guest.post(
        path, {"username": "newbie", "password": "a-Long-passphrase-9"}, follow=True
    )
    assert joined.request["PATH_INFO"] == f"/w/{workspace.slug}/campaigns/"
    assert members(workspace) == {("owner", Role.OWNER), ("newbie", Role.VIEWER)}
    assert get_user_model().objects.get(username="newbie").email == "new.person@example.test"


def test_the_database_keeps_only_a_hash_of_the_link(acme, client_for, smtp_server):
    owner, workspace = acme
    invite(client_for(owner), workspace, "someone@example.test")
    token = link_in(smtp_server.messages()[0]).split("/")[2]
    with scopes_disabled():
        stored = Invitation.objects.get()
        row = Invitation.objects.filter(pk=stored.pk).values().get()
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(row)


def normalised(html: str, address: str) -> str:
    """A page with what differs between any two renders taken out: CSRF tokens and
    invitation ids; and the invited address, which the owner typed."""
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "CSRF", html)
    html = re.sub(r'"X-CSRFToken": "[^"]+"', "CSRF", html)
    html = re.sub(r"/invitations/\d+/revoke/", "/invitations/ID/revoke/", html)
    return html.replace(address, "ADDRESS")


def test_inviting_an_existing_accounts_address_looks_exactly_like_inviting_an_unknown_one(
    acme, make_user, client_for, smtp_server
):
    owner, workspace = acme
    make_user("known", email="known@example.test")
    client = client_for(owner)
    seen = []
    for address in ("known@example.test", "unknown@example.test"):
        response = invite(client, workspace, address, role="analyst", follow=True)
        with scopes_disabled():
            Invitation.objects.all().delete()  # so both pages list one pending invitation
        seen.append(
            (
                response.status_code,
                response.redirect_chain,
                normalised(response.content.decode(), address),
            )
        )
    assert seen[0][2].count("Invitation sent to ADDRESS.") == 1
    assert seen[0] == seen[1]
    known_mail, unknown_mail = smtp_server.messages()
    assert [known_mail["To"], unknown_mail["To"]] == ["known@example.test", "unknown@example.test"]
    bodies = [
        LINK.sub("LINK", m.get_body(("plain",)).get_content()).replace(m["To"], "ADDRESS")
        for m in (known_mail, unknown_mail)
    ]
    assert bodies[0] == bodies[1]
    assert known_mail["Subject"] == unknown_mail["Subject"]
    assert members(workspace) == {("owner", Role.OWNER)}  # nobody was added


def test_an_existing_account_joins_only_when_it_accepts(acme, make_user, client_for, smtp_server):
    owner, workspace = acme
    colleague = make_user("colleague", email="Colleague@Example.test")
    invite(client_for(owner), workspace, "colleague@example.test", role="analyst")
    assert members(workspace) == {("owner", Role.OWNER)}
    path = link_in(smtp_server.messages()[0])
    client = client_for(colleague)
    page = client.get(path)
    assert page.status_code == 200 and b"Join as colleague" in page.content
    assert members(workspace) == {("owner", Role.OWNER)}  # opening it is not accepting
    joined = client.post(path, follow=True)
    assert joined.request["PATH_INFO"] == f"/w/{workspace.slug}/campaigns/"
    assert members(workspace) == {("owner", Role.OWNER), ("colleague", Role.ANALYST)}
    with scopes_disabled():
        used = Invitation.objects.get()
    assert used.accepted_by == colleague and used.accepted_at is not None


def test_an_invitation_is_valid_for_the_configured_days(acme, client_for, smtp_server, settings):
    owner, workspace = acme
    invite(client_for(owner), workspace, "week@example.test")
    settings.INVITATION_VALID_DAYS = 2
    invite(client_for(owner), workspace, "two.days@example.test")
    with scopes_disabled():
        lifetimes = {i.email: i.expires_at - i.created_at for i in Invitation.objects.all()}
    assert abs(lifetimes["week@example.test"] - timedelta(days=7)) < timedelta(seconds=5)
    assert abs(lifetimes["two.days@example.test"] - timedelta(days=2)) < timedelta(seconds=5)


@pytest.fixture
def invited(acme, client_for, smtp_server):
    """(workspace, link path) of a pending invitation for invitee@example.test as owner."""
    owner, workspace = acme
    invite(client_for(owner), workspace, "invitee@example.test", role="owner")
    return workspace, link_in(smtp_server.messages()[0])


def assert_refused(response, status, words):
    assert response.status_code == status
    assert words in response.content.decode()


def test_an_expired_invitation_is_refused_and_creates_nothing(invited, make_user, client_for):
    workspace, path = invited
    with scopes_disabled():
        Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    guest = Client()
    assert_refused(guest.get(path), 410, "This invitation has expired")
    signup = guest.post(path, {"username": "late", "password": "a-Long-passphrase-9"})
    assert_refused(signup, 410, "This invitation has expired")
    invitee = make_user("invitee", email="invitee@example.test")
    assert_refused(client_for(invitee).post(path), 410, "This invitation has expired")
    assert not get_user_model().objects.filter(username="late").exists()
    assert members(workspace) == {("owner", Role.OWNER)}


def test_an_invitation_still_valid_a_moment_before_it_expires_is_accepted(
    invited, make_user, client_for
):
    workspace, path = invited
    with scopes_disabled():
        Invitation.objects.update(expires_at=timezone.now() + timedelta(minutes=1))
    invitee = make_user("invitee", email="invitee@example.test")
    assert client_for(invitee).post(path).status_code == 302
    assert ("invitee", Role.OWNER) in members(workspace)


def test_a_used_invitation_is_refused_and_creates_nothing(invited, make_user, client_for):
    workspace, path = invited
    invitee = make_user("invitee", email="invitee@example.test")
    assert client_for(invitee).post(path).status_code == 302
    assert_refused(client_for(invitee).get(path), 410, "This invitation was used already")
    guest = Client()
    assert_refused(guest.get(path), 410, "This invitation was used already")
    signup = guest.post(path, {"username": "second", "password": "a-Long-passphrase-9"})
    assert_refused(signup, 410, "This invitation was used already")
    assert not get_user_model().objects.filter(username="second").exists()
    assert members(workspace) == {("owner", Role.OWNER), ("invitee", Role.OWNER)}


def test_an_invitation_opened_by_an_account_with_another_address_is_refused(
    invited, make_user, client_for
):
    workspace, path = invited
    intruder = client_for(make_user("intruder", email="intruder@example.test"))
    assert_refused(intruder.get(path), 403, "This invitation is for another address")
    assert_refused(intruder.post(path), 403, "This invitation is for another address")
    assert members(workspace) == {("owner", Role.OWNER)}
    # The refusal used nothing up: the invited address's account still accepts.
    invitee = make_user("invitee", email="INVITEE@example.test")
    assert client_for(invitee).post(path).status_code == 302
    assert ("invitee", Role.OWNER) in members(workspace)


def test_signing_up_with_an_address_that_has_an_account_is_refused(invited, make_user):
    workspace, path = invited
    make_user("invitee", email="invitee@example.test")
    response = Client().post(path, {"username": "twin", "password": "a-Long-passphrase-9"})
    assert response.status_code == 400
    assert "exists already: log in with it to accept" in response.content.decode()
    assert not get_user_model().objects.filter(username="twin").exists()
    assert members(workspace) == {("owner", Role.OWNER)}


def test_a_link_naming_no_invitation_gets_a_clear_404(db):
    assert_refused(Client().get("/invitations/not-a-real-token/"), 404, "link is not valid")


def test_inviting_again_replaces_the_earlier_link(acme, client_for, smtp_server):
    owner, workspace = acme
    client = client_for(owner)
    invite(client, workspace, "twice@example.test")
    invite(client, workspace, "twice@example.test", role="analyst")
    first, second = (link_in(m) for m in smtp_server.messages())
    assert_refused(Client().get(first), 404, "link is not valid")
    assert Client().get(second).status_code == 200


def test_inviting_a_member_is_refused(acme, client_for, smtp_server):
    owner, workspace = acme
    response = invite(client_for(owner), workspace, "OWNER@example.test")
    assert response.status_code == 400 and b"already a member" in response.content
    assert smtp_server.envelopes == []


def test_a_refused_invitation_mail_stores_no_invitation(acme, client_for, smtp_server):
    owner, workspace = acme
    response = invite(client_for(owner), workspace, "refused@example.test")
    assert response.status_code == 400
    assert b"could not be sent" in response.content
    with scopes_disabled():
        assert not Invitation.objects.exists()


def test_owner_revokes_a_pending_invitation(invited, client_for, acme):
    owner, workspace = acme
    _, path = invited
    with scopes_disabled():
        invitation = Invitation.objects.get()
    client_for(owner).post(f"/w/{workspace.slug}/invitations/{invitation.pk}/revoke/")
    assert_refused(Client().get(path), 404, "link is not valid")
