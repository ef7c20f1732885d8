"""Shared fixtures: users, workspaces, members, logged-in clients, real Redis."""

import itertools

import pytest
import redis
from django.contrib.auth import get_user_model
from django.test import Client
from django_scopes import scopes_disabled

from campaigns.models import Campaign, Membership, Role
from campaigns.services import workspace_create
from tests.testenv import TEST_REDIS_URL

_seq = itertools.count(1)
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def make_user(db):
    def make(username=None, **fields):
        username = username or f"user{next(_seq)}"
        fields.setdefault("email", f"{username}@example.test")
        return get_user_model().objects.create_user(username=username, password=PASSWORD, **fields)

    return make


@pytest.fixture
def make_workspace(db, make_user):
    """A workspace with an owner (created when not given)."""

    def make(name=None, owner=None):
        return workspace_create(name=name or f"Workspace {next(_seq)}", owner=owner or make_user())

    return make


@pytest.fixture
def add_member(db, make_user):
    def add(workspace, role=Role.VIEWER, user=None):
        user = user or make_user()
        with scopes_disabled():
            Membership.objects.create(workspace=workspace, user=user, role=role)
        return user

    return add


@pytest.fixture
def make_campaign(db):
    def make(workspace, name=None, **fields):
        with scopes_disabled():
            return Campaign.objects.create(
                workspace=workspace, name=name or f"Campaign {next(_seq)}", **fields
            )

    return make


@pytest.fixture
def client_for(db):
    """A test client logged in as `user`."""

    def make(user):
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def redis_client():
    """The real test Redis, emptied before the test."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's deliberate slowness only slows the suite; hashing is Django's to test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
