"""Campaign page: add variants, send from the browser page, watch the progress."""

import lxml.html
import pytest
from django_scopes import scope, scopes_disabled

from campaigns.models import Campaign, Delivery, Role, Variant
from campaigns.services import template_create
from tests.factories import customers

HTML = '<p>Hi {{ customer.first_name }} <a href="https://shop.example/">Shop</a></p>'


@pytest.fixture
def setup(make_workspace, make_user, make_campaign):
    analyst = make_user("analyst")
    workspace = make_workspace("Shop")
    with scopes_disabled():
        from campaigns.models import Membership

        Membership.objects.create(workspace=workspace, user=analyst, role=Role.ANALYST)
    with scope(workspace=workspace):
        version = template_create(workspace=workspace, name="Promo", html=HTML)
    campaign = make_campaign(workspace, "Spring")
    customers(
        workspace,
        [
            ("a", "a@example.test", {"first_name": "Ann"}),
            ("b", "b@example.test", {"first_name": "Bob"}),
        ],
    )
    return workspace, analyst, campaign, version


def test_analyst_adds_variants_pinned_to_the_latest_version(setup, client_for):
    workspace, analyst, campaign, version = setup
    client = client_for(analyst)
    url = f"/w/{workspace.slug}/campaigns/{campaign.pk}/variants/"
    for name in ("A", "B"):
        response = client.post(
            url,
            {
                "node_name": "Email",
                "name": name,
                "subject": "Hi",
                "template": version.template_id,
                "weight": 1,
                "format": "html",
            },
        )
        assert response.status_code == 302
    duplicate = client.post(
        url,
        {
            "node_name": "Email",
            "name": "A",
            "subject": "Hi",
            "template": version.template_id,
            "weight": 1,
            "format": "html",
        },
        follow=True,
    )
    assert "already has a variant A" in duplicate.content.decode()
    amp = client.post(
        url,
        {
            "node_name": "Email",
            "name": "C",
            "subject": "Hi",
            "template": version.template_id,
            "weight": 1,
            "format": "amp",
        },
        follow=True,
    )
    assert "has no AMP part" in amp.content.decode()
    with scopes_disabled():
        variants = Variant.objects.filter(node__campaign=campaign)
        assert sorted(variants.values_list("name", flat=True)) == ["A", "B"]
        assert {v.template_version_id for v in variants} == {version.pk}
    page = client.get(campaign.get_absolute_url()).content.decode()
    assert "Promo v1" in page and "Send now" in page
    # The one email's section is headed once: "Email", not "Email" and its node's name.
    section = lxml.html.fromstring(page).cssselect("section[aria-labelledby=emails-h]")[0]
    headings = [h.text_content().strip() for h in section.cssselect("h2, h3")]
    assert headings == ["Email"]


def test_send_button_sends_and_the_page_shows_progress(
    setup, client_for, smtp_server, eager_tasks, django_capture_on_commit_callbacks
):
    workspace, analyst, campaign, version = setup
    client = client_for(analyst)
    client.post(
        f"/w/{workspace.slug}/campaigns/{campaign.pk}/variants/",
        {
            "node_name": "Email",
            "name": "A",
            "subject": "Hi {{ customer.first_name }}",
            "template": version.template_id,
            "weight": 1,
            "format": "html",
        },
    )
    send = f"/w/{workspace.slug}/campaigns/{campaign.pk}/send/"
    confirmation = client.post(send, {"segment": "", "when": "now"}).content.decode()
    assert "Send to 2 recipients now" in confirmation and not smtp_server.envelopes
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            send, {"segment": "", "when": "now", "expected": "2", "confirm": "1"}, follow=True
        )
    assert "Sending to 2 recipients" in response.content.decode()
    assert len(smtp_server.envelopes) == 2
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENT
    progress = client.get(
        f"/w/{workspace.slug}/campaigns/{campaign.pk}/progress/", headers={"HX-Request": "true"}
    ).content.decode()
    assert 'data-n="sent">2<' in progress and "hx-trigger" not in progress


def test_progress_fragment_polls_while_sending(setup, client_for):
    workspace, analyst, campaign, version = setup
    with scope(workspace=workspace):
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    fragment = (
        client_for(analyst)
        .get(f"/w/{workspace.slug}/campaigns/{campaign.pk}/progress/")
        .content.decode()
    )
    assert 'hx-trigger="every 2s"' in fragment


def test_viewer_cannot_send(setup, add_member, client_for, smtp_server):
    workspace, _, campaign, _ = setup
    viewer = client_for(add_member(workspace, Role.VIEWER))
    assert viewer.post(f"/w/{workspace.slug}/campaigns/{campaign.pk}/send/").status_code == 403
    with scopes_disabled():
        assert not Delivery.objects.exists()
