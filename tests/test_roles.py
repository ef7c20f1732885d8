"""Roles: viewers change nothing, analysts change campaigns, owners manage members."""

import pytest
from django_scopes import scopes_disabled

from campaigns.models import Campaign, Membership, Role


@pytest.fixture
def ws(make_workspace, make_user):
    owner = make_user("owner")
    return make_workspace("Acme", owner=owner), owner


def test_viewer_posts_are_refused_and_change_nothing(ws, add_member, make_campaign, client_for):
    workspace, owner = ws
    campaign = make_campaign(workspace, name="Original")
    client = client_for(add_member(workspace, Role.VIEWER))
    slug = workspace.slug
    with scopes_disabled():
        target = Membership.objects.get(user=owner)
    posts = {
        f"/w/{slug}/campaigns/new/": {"name": "New", "kind": "campaign", "status": "draft"},
        f"/w/{slug}/campaigns/{campaign.pk}/edit/": {
            "name": "Hacked",
            "kind": "campaign",
            "status": "draft",
        },
        f"/w/{slug}/settings/": {
            "name": "Renamed",
            "unique_window_hours": 1,
            "bot_min_seconds_after_delivery": 1,
            "bot_burst_links": 3,
            "bot_burst_seconds": 2,
        },
        f"/w/{slug}/members/": {"email": "new@example.test", "role": "owner"},
        f"/w/{slug}/members/{target.pk}/role/": {"role": "viewer"},
        f"/w/{slug}/members/{target.pk}/remove/": {},
    }
    for url, data in posts.items():
        assert client.post(url, data).status_code == 403, url
    with scopes_disabled():
        assert list(Campaign.objects.values_list("name", flat=True)) == ["Original"]
        assert Membership.objects.get(pk=target.pk).role == Role.OWNER
        assert Membership.objects.filter(workspace=workspace).count() == 2
    workspace.refresh_from_db()
    assert workspace.name == "Acme"


def test_viewer_reads_pages_without_edit_controls(ws, add_member, make_campaign, client_for):
    workspace, _ = ws
    make_campaign(workspace, name="Readable")
    client = client_for(add_member(workspace, Role.VIEWER))
    page = client.get(f"/w/{workspace.slug}/campaigns/")
    assert page.status_code == 200
    assert b"Readable" in page.content
    assert b"New campaign" not in page.content
    assert client.get(f"/w/{workspace.slug}/campaigns/new/").status_code == 403


def test_analyst_creates_and_edits_campaigns(ws, add_member, client_for):
    workspace, _ = ws
    client = client_for(add_member(workspace, Role.ANALYST))
    response = client.post(
        f"/w/{workspace.slug}/campaigns/new/",
        {"name": "Spring sale", "kind": "campaign", "status": "draft"},
    )
    assert response.status_code == 302
    with scopes_disabled():
        campaign = Campaign.objects.get(name="Spring sale")
    assert campaign.workspace == workspace
    client.post(
        f"/w/{workspace.slug}/campaigns/{campaign.pk}/edit/",
        {"name": "Spring sale 2", "kind": "scenario", "status": "sent"},
    )
    campaign.refresh_from_db()
    # The status follows what happened: a posted one is ignored.
    assert (campaign.name, campaign.kind, campaign.status) == ("Spring sale 2", "scenario", "draft")


def test_analyst_cannot_manage_members_or_settings(ws, add_member, make_user, client_for):
    workspace, owner = ws
    analyst = add_member(workspace, Role.ANALYST)
    client = client_for(analyst)
    slug = workspace.slug
    with scopes_disabled():
        mine = Membership.objects.get(user=analyst)
        owners = Membership.objects.get(user=owner)
    make_user("existing", email="existing@example.test")
    assert client.get(f"/w/{slug}/members/").status_code == 200  # may look
    refused = [
        client.post(f"/w/{slug}/members/", {"email": "existing@example.test", "role": "viewer"}),
        client.post(f"/w/{slug}/members/{mine.pk}/role/", {"role": "owner"}),
        client.post(f"/w/{slug}/members/{owners.pk}/remove/"),
        client.post(
            f"/w/{slug}/settings/",
            {
                "name": "X",
                "unique_window_hours": 0,
                "bot_min_seconds_after_delivery": 2,
                "bot_burst_links": 3,
                "bot_burst_seconds": 2,
            },
        ),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403]
    with scopes_disabled():
        assert Membership.objects.get(pk=mine.pk).role == Role.ANALYST
        assert Membership.objects.filter(workspace=workspace).count() == 2


def test_owner_changes_roles_but_never_removes_the_last_owner(ws, add_member, client_for):
    workspace, owner = ws
    viewer = add_member(workspace, Role.VIEWER)
    client = client_for(owner)
    slug = workspace.slug
    with scopes_disabled():
        viewer_m = Membership.objects.get(user=viewer)
        owner_m = Membership.objects.get(user=owner)
    client.post(f"/w/{slug}/members/{viewer_m.pk}/role/", {"role": "analyst"})
    viewer_m.refresh_from_db()
    assert viewer_m.role == Role.ANALYST
    page = client.post(f"/w/{slug}/members/{owner_m.pk}/role/", {"role": "viewer"}, follow=True)
    assert "at least one owner" in page.content.decode()
    client.post(f"/w/{slug}/members/{owner_m.pk}/remove/")
    owner_m.refresh_from_db()
    assert owner_m.role == Role.OWNER
    client.post(f"/w/{slug}/members/{viewer_m.pk}/remove/")
    with scopes_disabled():
        assert not Membership.objects.filter(pk=viewer_m.pk).exists()


def test_owner_updates_workspace_settings(ws, client_for):
    workspace, owner = ws
    response = client_for(owner).post(
        f"/w/{workspace.slug}/settings/",
        {
            "name": "Acme EU",
            "time_zone": "Europe/Berlin",
            "unique_window_hours": 24,
            "bot_min_seconds_after_delivery": 5,
            "bot_burst_links": 4,
            "bot_burst_seconds": 3,
        },
    )
    assert response.status_code == 302
    workspace.refresh_from_db()
    assert (workspace.name, workspace.unique_window_hours, workspace.bot_burst_links) == (
        "Acme EU",
        24,
        4,
    )
    assert workspace.time_zone == "Europe/Berlin"
    bad = client_for(owner).post(
        f"/w/{workspace.slug}/settings/",
        {
            "name": "Acme EU",
            "time_zone": "Mars/Olympus",
            "unique_window_hours": 24,
            "bot_min_seconds_after_delivery": 5,
            "bot_burst_links": 4,
            "bot_burst_seconds": 3,
        },
    )
    assert bad.status_code in (200, 400) and b"Mars/Olympus" in bad.content
    workspace.refresh_from_db()
    assert workspace.time_zone == "Europe/Berlin"
