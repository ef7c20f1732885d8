"""`seed_demo`: a demo workspace the printed login opens, no duplicates on a rerun, the
project's own emails (never ../shared), and the same demo from a fresh clone."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from io import StringIO
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import lxml.html
import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django_scopes import scopes_disabled
from PIL import Image

from campaigns.models import Campaign, Customer, Delivery, Membership, TemplateVersion, Workspace
from clickmap.demo import DEMO_CAMPAIGNS, DEMO_TEMPLATES, WELCOME_AMP, demo_email
from clickmap.models import LinkRollup
from tests.conftest import database_url
from tracking.models import ClickEvent, OpenEvent

ROOT = Path(__file__).resolve().parents[1]


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
        variants = Campaign.objects.get(name__startswith="Black Friday — 30%").nodes.get().variants
        assert sorted(variants.values_list("name", flat=True)) == ["A", "B"]
        scenario = Campaign.objects.get(name="Welcome series")
        assert scenario.nodes.count() == 3
        assert scenario.nodes.get(position=1).variants.filter(format="amp").exists()


def test_demo_templates_are_the_shipped_emails_with_at_least_8_links(db):
    seed()
    with scopes_disabled():
        versions = list(TemplateVersion.objects.select_related("template").order_by("pk"))
    assert sorted({v.template.name for v in versions}) == sorted(DEMO_TEMPLATES)
    for version in versions:
        html, _assets = demo_email(DEMO_TEMPLATES[version.template.name])
        with scopes_disabled():
            links = list(version.links.filter(format="html").order_by("ordinal"))
        assert len(links) >= 8, version
        if version.number == 1:
            assert version.html == html
        else:  # the newsletter's second version: the first plus the events link
            with scopes_disabled():
                before = list(version.template.versions.get(number=1).links.filter(format="html"))
            assert [link.text for link in links if link.href not in {b.href for b in before}] == [
                "Upcoming events"
            ]
            assert len(links) == len(before) + 1
    welcome = next(v for v in versions if v.template.name == "Welcome 1: Welcome")
    assert welcome.amp_html == demo_email(WELCOME_AMP)[0]


def test_demo_readers_click_heroes_and_main_buttons_far_more_than_footers(db):
    seed()
    with scopes_disabled():
        hrefs = list(
            ClickEvent.objects.filter(reliable=True, link__isnull=False).values_list(
                "link__href", "link__unsubscribe"
            )
        )
    roles = Counter(
        "unsubscribe" if unsubscribe else parse_qs(urlsplit(href).query).get("utm_content", [""])[0]
        for href, unsubscribe in hrefs
    )
    top = roles["hero"] + roles["cta"]
    rare = sum(roles[r] for r in ("footer", "header", "social", "unsubscribe"))
    assert top > 0.25 * len(hrefs), roles  # a third of the human clicks, by the weights
    assert top > 5 * rare, roles


# The product's own files: what a clone ships besides tests, benchmarks and docs.
PRODUCT = ("clickmap/", "campaigns/", "tracking/", "templates/", "manage.py", "Makefile")
SHARED = re.compile(r"""(\.\./|["'])shared([/"'])|shared/corpus""")


def tracked_files():
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


def test_the_product_never_refers_to_shared():
    product = [f for f in tracked_files() if f.startswith(PRODUCT) and not f.endswith(".png")]
    assert "clickmap/demo.py" in product
    found = [
        f"{name}: {line.strip()}"
        for name in product
        if not name.endswith((".jpg", ".ico"))
        for line in (ROOT / name).read_text(encoding="utf-8").splitlines()
        if SHARED.search(line)
    ]
    assert found == []


@pytest.fixture
def fresh_database(db):
    """A new, empty PostgreSQL database beside the test one; dropped afterwards."""
    params = connection.get_connection_params()
    name = f"{params['dbname']}_fresh_clone"
    admin = {key: params[key] for key in ("user", "password", "host", "port") if params.get(key)}
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.execute(f'CREATE DATABASE "{name}"')
    yield database_url(dbname=name)
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


CLONE_REPORT = """
import hashlib, json
import clickmap
from django_scopes import scopes_disabled
from campaigns.models import TemplateVersion
from clickmap.demo import DEMO_TEMPLATES, demo_email
from clickmap.models import Preview
with scopes_disabled():
    versions = [
        {"template": v.template.name, "html": v.html,
         "links": v.links.filter(format="html").count(),
         "assets": {path: hashlib.sha256(content).hexdigest()
                    for path, content in demo_email(DEMO_TEMPLATES[v.template.name])[1].items()}}
        for v in TemplateVersion.objects.select_related("template")
    ]
    previews = list(Preview.objects.values_list("status", "error"))
print(json.dumps({"package": clickmap.__file__, "versions": versions, "previews": previews}))
"""


@pytest.mark.browser
def test_a_fresh_clone_without_shared_seeds_the_demo_from_its_own_files(tmp_path, fresh_database):
    clone = tmp_path / "clickmap"
    for name in tracked_files():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, clone / name)
    assert not (clone.parent / "shared").exists()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"REDIS_URL", "SECRET_KEY", "HTTPS_ONLY", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    }
    env.update(DATABASE_URL=fresh_database, DEBUG="1")  # what `make run` does, on PostgreSQL

    def run(*args, timeout=600):
        result = subprocess.run(
            [sys.executable, *args],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    run("manage.py", "migrate", "--noinput")
    run("manage.py", "seed_demo", "--customers", "200")  # previews rendered, as `make run`
    report = json.loads(run("manage.py", "shell", "-c", CLONE_REPORT).splitlines()[-1])

    assert report["package"] == str(clone / "clickmap" / "__init__.py")  # not this checkout
    assert len(report["versions"]) == len(DEMO_TEMPLATES) + 1  # and the newsletter's edit
    for version in report["versions"]:
        doc = lxml.html.fromstring(version["html"])
        assert version["links"] >= 8 and len(doc.xpath("//a[@href]")) >= 8, version["template"]
        used = {img.get("src") for img in doc.iter("img")}
        assert used and used == set(version["assets"]), version["template"]
        for path, digest in version["assets"].items():
            picture = clone / "clickmap" / "demo_emails" / path
            assert hashlib.sha256(picture.read_bytes()).hexdigest() == digest
            with Image.open(picture) as image:
                image.verify()
    # 8 variants (A/B, newsletter v1/v2, three welcome emails and the AMP one) × 2 devices
    assert report["previews"] == [["done", ""]] * 16

    # An installed package carries the emails too: setuptools' build of the clone.
    run("-c", "import setuptools; setuptools.setup()", "-q", "build_py", "-d", "built")
    shipped = {p.relative_to(clone) for p in (clone / "clickmap" / "demo_emails").rglob("*.*")}
    built = clone / "built"
    assert shipped and all((built / path).is_file() for path in shipped)
