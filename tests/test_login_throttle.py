"""Login throttling (django-axes): ten wrong passwords in a row lock an account, and ten
failures from one address lock that address, on the login page and the admin's; the
lockout page says why and for how long."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[1]
LOCKED = "Too many failed logins in a row"


def login(client, username, password, url="/login/", **extra):
    return client.post(url, {"username": username, "password": password}, **extra)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def assert_locked(response, minutes=15):
    assert response.status_code == 429
    page = response.content.decode()
    assert LOCKED in page
    assert f"Login locked for {minutes} minute" in page
    assert "the right password too" in page
    assert 'href="/password-reset/"' in page  # and how to get in sooner


def test_the_tenth_wrong_password_locks_the_account_even_for_the_right_one(make_user):
    make_user("marta")
    client = Client()
    # Spaces around the name are the form's to strip: they do not make a new account name.
    for attempt in range(1, 10):
        response = login(client, " marta " if attempt % 2 else "marta", f"wrong-{attempt}")
        assert response.status_code == 200, attempt
        assert b"didn't match" in response.content
    assert_locked(login(client, "marta", "wrong-10"))
    assert_locked(login(client, "marta", PASSWORD))
    assert not logged_in(client)
    # Another address does not help: the account itself is locked.
    elsewhere = Client(REMOTE_ADDR="198.51.100.7")
    assert_locked(login(elsewhere, "marta", PASSWORD))
    assert not logged_in(elsewhere)


def test_a_success_starts_the_count_again(make_user):
    make_user("marta")
    client = Client()
    for attempt in range(9):
        login(client, "marta", f"wrong-{attempt}")
    assert login(client, "marta", PASSWORD).status_code == 302
    client.post("/logout/")
    for attempt in range(9):
        assert login(client, "marta", f"again-{attempt}").status_code == 200
    assert login(client, "marta", PASSWORD).status_code == 302
    assert logged_in(client)


def test_other_accounts_from_other_addresses_are_not_locked(make_user):
    make_user("marta")
    make_user("jonas")
    attacker = Client(REMOTE_ADDR="203.0.113.5")
    for attempt in range(10):
        login(attacker, "marta", f"wrong-{attempt}")
    colleague = Client(REMOTE_ADDR="198.51.100.7")
    assert login(colleague, "jonas", PASSWORD).status_code == 302


def test_one_address_trying_many_accounts_is_locked(make_user):
    make_user("jonas")
    sprayer = Client(REMOTE_ADDR="203.0.113.5")
    for n in range(1, 10):
        assert login(sprayer, f"user-{n}", "Summer2026!").status_code == 200
    assert_locked(login(sprayer, "user-10", "Summer2026!"))
    assert_locked(login(sprayer, "jonas", PASSWORD))
    assert login(Client(REMOTE_ADDR="198.51.100.7"), "jonas", PASSWORD).status_code == 302


def test_the_sprayers_own_login_does_not_clear_its_addresss_failures(make_user):
    make_user("sprayer")
    sprayer = Client(REMOTE_ADDR="203.0.113.5")
    for n in range(1, 10):
        login(sprayer, f"victim-{n}", "Summer2026!")
    assert login(sprayer, "sprayer", PASSWORD).status_code == 302
    sprayer.post("/logout/")
    assert_locked(login(sprayer, "victim-10", "Summer2026!"))


def test_behind_the_proxy_the_address_is_the_one_the_proxy_saw(make_user, settings):
    settings.BEHIND_TLS_PROXY = True
    make_user("jonas")
    proxy = Client(REMOTE_ADDR="10.0.0.2")  # every request arrives from the proxy
    for n in range(10):
        # The client makes up the first entries; the proxy appends the address it saw.
        forged = f"192.0.2.{n}, 203.0.113.5"
        login(proxy, f"user-{n}", "Summer2026!", HTTP_X_FORWARDED_FOR=forged)
    assert_locked(login(proxy, "jonas", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.99, 203.0.113.5"))
    # Another client behind the same proxy is not locked with it.
    other = login(proxy, "jonas", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert other.status_code == 302


def test_the_admin_login_is_throttled_too(make_user):
    make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    for attempt in range(9):
        response = login(client, "root", f"wrong-{attempt}", url="/admin/login/")
        assert response.status_code == 200
    assert_locked(login(client, "root", "wrong-9", url="/admin/login/"))
    assert_locked(login(client, "root", PASSWORD, url="/admin/login/"))
    assert client.get("/admin/").status_code == 302  # still not in


def test_the_lock_lifts_after_the_configured_minutes(make_user, settings):
    settings.AXES_COOLOFF_TIME = timedelta(minutes=5)
    make_user("marta")
    client = Client()
    for attempt in range(10):
        login(client, "marta", f"wrong-{attempt}")
    assert_locked(login(client, "marta", PASSWORD), minutes=5)
    # Each try restarts the wait: the last one was just now. Move it 5 minutes back.
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=4, seconds=58))
    assert_locked(login(client, "marta", PASSWORD), minutes=5)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=5, seconds=1))
    assert login(client, "marta", PASSWORD).status_code == 302


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "10 0:15:00"),
        ({"LOGIN_FAILURE_LIMIT": "4", "LOGIN_LOCKOUT_MINUTES": "60"}, "4 1:00:00"),
    ],
)
def test_limit_and_lockout_come_from_the_environment(env, expected):
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOGIN_")}
    script = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**base, **env, "DJANGO_SETTINGS_MODULE": "clickmap.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == expected, result.stderr


def test_an_unknown_username_is_locked_like_a_real_one(db):
    client = Client()
    for attempt in range(10):
        login(client, "nobody", f"wrong-{attempt}")
    assert_locked(login(client, "nobody", "wrong"))
    assert not get_user_model().objects.filter(username="nobody").exists()
