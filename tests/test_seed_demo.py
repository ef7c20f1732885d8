"""`seed_demo`: a demo workspace the printed login opens, and no duplicates on a rerun."""

from io import StringIO

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django_scopes import scopes_disabled

from campaigns.models import Campaign, Membership, Workspace
from clickmap.demo import DEMO_CAMPAIGNS


def seed(password=None):
    out = StringIO()
    call_command("seed_demo", *(["--password", password] if password else []), stdout=out)
    return out.getvalue()


def counts():
    with scopes_disabled():
        return (
            Workspace.objects.count(),
            get_user_model().objects.count(),
            Membership.objects.count(),
            Campaign.objects.count(),
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
    assert first == (1, 1, 1, len(DEMO_CAMPAIGNS))
    seed()
    assert counts() == first


def test_seed_demo_rerun_sets_the_new_password(db):
    seed("first-password-1")
    seed("second-password-2")
    client = Client()
    assert not client.login(username="demo", password="first-password-1")
    assert client.login(username="demo", password="second-password-2")
