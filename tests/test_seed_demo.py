"""`seed_demo`: a demo workspace the printed login opens, and no duplicates on a rerun."""

from io import StringIO

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django_scopes import scopes_disabled

from campaigns.models import Campaign, Customer, Delivery, Membership, Workspace
from clickmap.demo import DEMO_CAMPAIGNS
from clickmap.models import LinkRollup
from tracking.models import ClickEvent, OpenEvent


def seed(password=None):
    out = StringIO()
    args = ["--customers", "120", "--no-previews"]
    call_command("seed_demo", *args, *(["--password", password] if password else []), stdout=out)
    return out.getvalue()


def counts():
    with scopes_disabled():
        return tuple(
            model.objects.count()
            for model in (
                Workspace,
                get_user_model(),
                Membership,
                Campaign,
                Customer,
                Delivery,
                ClickEvent,
                OpenEvent,
                LinkRollup,
            )
        )


def test_demo_user_logs_in_with_the_printed_password_and_sees_campaigns(db):
    output = seed()
    assert "user: demo" in output
    password = output.split("password:")[1].split()[0]
    client = Client()
    response = client.post("/login/", {"username": "demo", "password": password}, follow=True)
    assert response.status_code == 200
    assert response.request["PATH_INFO"] == "/w/demo/campaigns/"
    page = response.content.decode()
    for name, _, _ in DEMO_CAMPAIGNS:
        assert name.replace("—", "—") in page
    assert "Demo Shop" in page


def test_seed_demo_twice_adds_nothing(db):
    seed()
    first = counts()
    assert first[:5] == (1, 1, 1, len(DEMO_CAMPAIGNS), 120)
    assert all(first), first  # deliveries, clicks, opens and rollups exist
    seed()
    assert counts() == first


def test_seed_demo_rerun_sets_the_new_password(db):
    seed("first-password-1")
    seed("second-password-2")

    # Through the login form: authentication always comes with its request (django-axes).
    def log_in(password):
        return Client().post("/login/", {"username": "demo", "password": password}).status_code

    assert log_in("first-password-1") == 200  # refused: the form again
    assert log_in("second-password-2") == 302


def test_demo_clicks_are_classified_and_aggregated(db):
    seed()
    with scopes_disabled():
        reasons = set(ClickEvent.objects.values_list("reason", flat=True))
        assert "" in reasons and "scanner_ua" in reasons  # humans and scanners alike
        assert sum(LinkRollup.objects.values_list("total_all", flat=True)) == (
            ClickEvent.objects.exclude(link=None).count()
        )
        variants = Campaign.objects.get(name__startswith="Black Friday").nodes.get().variants
        assert sorted(variants.values_list("name", flat=True)) == ["A", "B"]
        scenario = Campaign.objects.get(name="Welcome series")
        assert scenario.nodes.count() == 3
        assert scenario.nodes.get(position=1).variants.filter(format="amp").exists()
