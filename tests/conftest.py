"""Shared fixtures: users, workspaces, members, logged-in clients, real Redis."""

import email
import email.policy
import http.server
import itertools
import logging
import socket
import threading

import pytest
import redis
from aiosmtpd.controller import Controller
from django.contrib.auth import get_user_model
from django.test import Client
from django_scopes import scopes_disabled

from campaigns.models import Campaign, Membership, Role
from campaigns.services import workspace_create
from tests.testenv import TEST_REDIS_URL

pytest_plugins = ["tests.rollup_world", "tests.demo_world"]

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


def database_url(name: str = "", dbname: str | None = None) -> str:
    """The test database's URL, for another process or connection (host and port as
    query parameters: the host may be the embedded server's socket directory);
    ``dbname`` names another database on the same server, ``name`` the connection."""
    from django.db import connection

    params = connection.get_connection_params()
    query = [f"{key}={params[key]}" for key in ("host", "port") if params.get(key)]
    if name:
        query.append(f"application_name={name}")
    return f"postgres://{params['user']}@/{dbname or params['dbname']}?{'&'.join(query)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self):
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refused"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def messages(self):
        return [
            email.message_from_bytes(e.original_content, policy=email.policy.default)
            for e in self.envelopes
        ]


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server (aiosmtpd) that Django's SMTP backend sends to."""
    sink = SmtpSink()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield sink
    controller.stop()


class _Landing(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"<!doctype html><title>Landed</title><h1>Landed on {self.path}</h1>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.hits.append(self.path)

    def log_message(self, *args):
        pass


@pytest.fixture
def landing_server():
    """A local web server standing in for the shop that email links point to."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Landing)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def spool_dir(settings, tmp_path):
    """A fresh tracking spool directory for this test."""
    settings.TRACKING_SPOOL_DIR = tmp_path / "spool"
    return settings.TRACKING_SPOOL_DIR


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def eager_tasks():
    """Run Celery tasks inline for this test, as the embedded default does."""
    from clickmap.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False
