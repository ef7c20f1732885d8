"""Customer pages: the searched, paginated list with attribute columns and its CSV
export; the profile with attributes, segments and the timeline across campaigns; edit and
delete (erasure takes the customer out of every number); the import's mapping, preview,
progress and summary with a real Celery worker."""

import csv
import io
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django_scopes import scope, scopes_disabled

from campaigns.models import Customer, CustomerImport, Delivery, Role, Segment
from clickmap.celery import app
from tests.factories import customers
from tests.rollup_world import DEVICES, T0, links_of
from tests.test_rollups import check_exact, store
from tracking.models import ClickEvent, OpenEvent, Unsubscribe


@pytest.fixture
def shop(make_workspace, make_user):
    owner = make_user("shopowner")
    workspace = make_workspace("Shop", owner=owner)
    return workspace, owner


def test_list_searches_email_name_and_external_id_and_shows_attribute_columns(shop, client_for):
    workspace, owner = shop
    customers(
        workspace,
        [
            ("ext-ann", "ann@example.com", {"name": "Ann Lee", "country": "DE", "tier": "gold"}),
            ("ext-bob", "bob@example.com", {"name": "Bob Stone", "country": "FR"}),
            ("zed-9", "zed@example.com", {"first_name": "Zoë", "country": "DE"}),
        ],
    )
    client = client_for(owner)
    url = f"/w/{workspace.slug}/customers/"
    page = client.get(url).content.decode()
    assert page.count("<tr>") == 4  # header and three customers
    assert '<th scope="col">country</th>' in page and '<th scope="col">tier</th>' in page

    def found(q):
        html = client.get(url, {"q": q}).content.decode()
        return sorted(
            email for email in ("ann@", "bob@", "zed@") if f"{email}example.com</a>" in html
        )

    assert found("STONE") == ["bob@"]  # name attribute, any case
    assert found("zed-") == ["zed@"]  # external id
    assert found("ann@") == ["ann@"]  # email
    assert found("zoë") == ["zed@"]  # first_name
    assert found("nobody") == []
    assert "No customer matches" in client.get(url, {"q": "nobody"}).content.decode()


def test_list_is_paginated(shop, client_for):
    workspace, owner = shop
    customers(workspace, [(f"c{i:03d}", f"c{i:03d}@example.com", {}) for i in range(120)])
    client = client_for(owner)
    first = client.get(f"/w/{workspace.slug}/customers/").content.decode()
    last = client.get(f"/w/{workspace.slug}/customers/", {"page": 3}).content.decode()
    assert "120 customers · page 1 of 3" in first
    assert first.count("@example.com</a>") == 50
    assert last.count("@example.com</a>") == 20
    # Newest first: the first page ends where the second begins.
    assert "c119@example.com" in first and "c000@example.com" in last


def test_export_is_the_searched_list_as_formula_safe_csv(shop, client_for):
    workspace, owner = shop
    customers(
        workspace,
        [
            ("a1", "ann@example.com", {"name": "=cmd|' /C calc'!A0", "score": 3, "vip": True}),
            ("b1", "bob@example.com", {"city": "Paris", "tags": ["x", "y"]}),
            ("c1", "carl@other.org", {"name": "Carl"}),
        ],
    )
    response = client_for(owner).get(f"/w/{workspace.slug}/customers/export.csv", {"q": "example"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == [
        "external_id",
        "email",
        "unsubscribed_at",
        "created_at",
        "city",
        "name",
        "score",
        "tags",
        "vip",
    ]
    body = {r[0]: r[:2] + r[4:] for r in rows[1:]}
    assert body == {
        "a1": ["a1", "ann@example.com", "", "'=cmd|' /C calc'!A0", "3", "", "true"],
        "b1": ["b1", "bob@example.com", "Paris", "", "", '["x", "y"]', ""],
    }


@pytest.fixture
def sent_world(world):
    """The rollup world with events for customer c1: a click on each kind, an open and an
    unsubscribe."""
    with scopes_disabled():
        delivery = next(d for d in world.deliveries if d.customer == world.customers[1])
        link = links_of(delivery)[1]
        common = dict(workspace=world.workspace, delivery=delivery, device="mobile")
        OpenEvent.objects.create(event_id=uuid.uuid4(), at=T0 + timedelta(minutes=5), **common)
        ClickEvent.objects.create(
            event_id=uuid.uuid4(),
            at=T0 + timedelta(minutes=6),
            link=link,
            url=link.href,
            **common,
        )
        ClickEvent.objects.create(
            event_id=uuid.uuid4(),
            at=T0 + timedelta(minutes=7),
            link=link,
            url=link.href,
            reliable=False,
            reason="scanner_ua",
            **common,
        )
        Unsubscribe.objects.create(
            workspace=world.workspace,
            delivery=delivery,
            customer=world.customers[1],
            method="page",
            at=T0 + timedelta(minutes=8),
        )
    return world, delivery, link


def test_profile_shows_attributes_segments_and_the_timeline_across_campaigns(
    sent_world, client_for
):
    world, delivery, link = sent_world
    owner = (
        world.workspace.memberships.model.objects.with_scopes_disabled()
        .get(workspace=world.workspace)
        .user
    )
    client = client_for(owner)
    customer = world.customers[1]  # tier 1: in the world's segment
    with scopes_disabled():
        Segment.objects.create(
            workspace=world.workspace,
            name="Tier 0",
            rule=[{"attribute": "tier", "op": "eq", "value": 0}],
        )
    page = client.get(f"/w/{world.workspace.slug}/customers/{customer.pk}/").content.decode()
    assert "<code>tier</code></td><td>1</td>" in page
    assert "<li>Tier 1</li>" in page and "Tier 0" not in page
    timeline_url = f"/w/{world.workspace.slug}/customers/{customer.pk}/timeline/"
    assert f'hx-get="{timeline_url}"' in page
    fragment = client.get(timeline_url).content.decode()
    kinds = [part.split('"')[0] for part in fragment.split('<tr class="timeline-')[1:]]
    # Newest first: the unsubscribe, the unreliable click, the click, the open, and the
    # two deliveries of the scenario's emails.
    assert kinds == ["unsubscribe", "click", "click", "open", "delivery", "delivery"]
    assert "Not reliable: security scanner" in fragment
    assert fragment.count("Reliable") == 2  # the open and the first click
    assert link.href in fragment and "Confirmation page" in fragment
    preview = (
        f"/w/{world.workspace.slug}/campaigns/{world.campaign.pk}/clickmap/"
        f"?node={delivery.node_id}&amp;variant={delivery.variant_id}&amp;for=c1%40example.test"
    )
    assert f'href="{preview}"' in fragment
    assert client.get(preview.replace("&amp;", "&")).status_code == 200


def test_a_customer_of_another_workspace_is_404_on_every_customer_page(
    shop, make_workspace, client_for
):
    workspace, owner = shop
    (stranger,) = customers(make_workspace("Other"), [("x", "x@example.com", {})])
    client = client_for(owner)
    for suffix in ("", "edit/", "delete/", "timeline/"):
        assert (
            client.get(f"/w/{workspace.slug}/customers/{stranger.pk}/{suffix}").status_code == 404
        )
        assert (
            client.post(f"/w/{workspace.slug}/customers/{stranger.pk}/{suffix}").status_code == 404
        )
    with scopes_disabled():
        assert Customer.objects.filter(pk=stranger.pk).exists()


def test_viewers_read_and_analysts_edit_import_and_delete(shop, add_member, client_for):
    workspace, _ = shop
    (ann,) = customers(workspace, [("a1", "ann@example.com", {"tier": "gold"})])
    base = f"/w/{workspace.slug}/customers"
    viewer = client_for(add_member(workspace, Role.VIEWER))
    assert viewer.get(f"{base}/").status_code == 200
    assert viewer.get(f"{base}/{ann.pk}/").status_code == 200
    profile = viewer.get(f"{base}/{ann.pk}/").content.decode()
    assert "Edit</a>" not in profile and "Delete</a>" not in profile
    assert "Import customers" not in viewer.get(f"{base}/").content.decode()
    for url in (f"{base}/{ann.pk}/edit/", f"{base}/{ann.pk}/delete/", f"{base}/import/"):
        assert viewer.get(url).status_code == 403
        assert viewer.post(url, {"email": "x@example.com", "external_id": "x"}).status_code == 403
    with scopes_disabled():
        assert Customer.objects.get(pk=ann.pk).email == "ann@example.com"

    analyst = client_for(add_member(workspace, Role.ANALYST))
    edit = {"external_id": "a1", "email": " Ann@Example.org ", "attributes": '{"tier": "silver"}'}
    assert analyst.post(f"{base}/{ann.pk}/edit/", edit).status_code == 302
    with scopes_disabled():
        ann.refresh_from_db()
    assert (ann.email, ann.attributes, ann.unsubscribed_at is not None) == (
        "ann@example.org",
        {"tier": "silver"},
        True,  # "subscribed" was not ticked
    )
    bad = analyst.post(f"{base}/{ann.pk}/edit/", {**edit, "attributes": "{not json"})
    assert bad.status_code == 400 and "Not valid JSON" in bad.content.decode()
    listed = analyst.post(f"{base}/{ann.pk}/edit/", {**edit, "attributes": "[1, 2]"})
    assert listed.status_code == 400 and "must be a JSON object" in listed.content.decode()
    assert analyst.get(f"{base}/import/").status_code == 200
    assert analyst.post(f"{base}/{ann.pk}/delete/").status_code == 302
    with scopes_disabled():
        assert not Customer.objects.filter(pk=ann.pk).exists()


def test_deleting_a_clicker_leaves_every_number_of_every_scope_equal_to_a_recount(
    world, client_for
):
    """Erasure through the page: afterwards every figure of every scope (tests.test_rollups'
    brute force over the raw rows) counts no trace of the customer."""
    with scopes_disabled():
        plan = [
            (i % 12, i, i * 1800, i % 4 != 0, DEVICES[i % 4], i % 2, i % 3 == 0) for i in range(48)
        ]
        store(world, plan, {0}, 1)
        check_exact(world)
        clicker = (
            Delivery.objects.filter(
                pk__in=ClickEvent.objects.values("delivery_id"), customer__attributes__tier=1
            )
            .first()
            .customer
        )  # in the world's segment too
        before = ClickEvent.objects.count()
        theirs = ClickEvent.objects.filter(delivery__customer=clicker).count()
        owner = world.workspace.memberships.model.objects.get(workspace=world.workspace).user
    assert theirs > 0
    base = f"/w/{world.workspace.slug}/customers/{clicker.pk}"
    client = client_for(owner)
    assert "every open, click and unsubscribe" in client.get(f"{base}/delete/").content.decode()
    assert client.post(f"{base}/delete/").status_code == 302
    with scopes_disabled():
        world.customers = [c for c in world.customers if c.pk != clicker.pk]
        assert ClickEvent.objects.count() == before - theirs
        assert not Delivery.objects.filter(customer_id=clicker.pk).exists()
        check_exact(world)


@pytest.fixture
def import_worker(redis_client):
    """A real Celery worker (in a thread, through the test Redis) on the default queue."""
    import campaigns.tasks  # noqa: F401 (registers the import task with the worker)

    app.loader.import_module("celery.contrib.testing.tasks")
    with start_worker(
        app,
        pool="solo",
        perform_ping_check=True,
        shutdown_timeout=10,
        queues=[settings.CELERY_TASK_DEFAULT_QUEUE],
    ) as worker:
        yield worker


IMPORT_CSV = (
    "Email;First name;Orders;Signed up;Newsletter\n"
    "ann@example.com;Ann;3;2024-01-05;yes\n"
    "bob@example.com;Bob;x;2024-02-01;no\n"  # bad number
    "carl@example.com;Carl;1;2024-02-30;yes\n"  # no such day
    "dora@example.com;Dora;0;2024-03-01;no\n"
    "not-an-address;Eve;2;2024-03-02;yes\n"  # bad address
    "ann@example.com;Ann;4;2024-01-05;yes\n"  # the same key: this row wins
)


@pytest.mark.django_db(transaction=True)
def test_import_maps_previews_and_reports_progress_with_a_real_worker(
    shop, client_for, import_worker, settings, tmp_path
):
    settings.CUSTOMER_IMPORT_DIR = tmp_path
    workspace, owner = shop
    customers(workspace, [("dora-1", "dora@example.com", {"first_name": "Dora"})])
    client = client_for(owner)
    base = f"/w/{workspace.slug}/customers"
    upload = SimpleUploadedFile("list.csv", ("\ufeff" + IMPORT_CSV).encode(), "text/csv")
    response = client.post(f"{base}/import/", {"file": upload})
    assert response.status_code == 302
    with scopes_disabled():
        imp = CustomerImport.objects.get(workspace=workspace)
    assert response["Location"] == f"{base}/imports/{imp.pk}/"
    page = client.get(response["Location"]).content.decode()
    # The mapping guessed from the header and the first rows, and the preview.
    assert imp.columns == ["Email", "First name", "Orders", "Signed up", "Newsletter"]
    assert [c["field"] for c in imp.mapping] == [
        "email",
        "attribute",
        "attribute",
        "attribute",
        "attribute",
    ]
    assert [c["name"] for c in imp.mapping[1:]] == [
        "first_name",
        "orders",
        "signed_up",
        "newsletter",
    ]
    # "x" among the orders and 2024-02-30 among the days: guessed as text, to confirm.
    assert [c["type"] for c in imp.mapping[1:]] == ["text", "text", "text", "boolean"]
    assert page.count("<tr><td>") == 6  # the preview's rows
    assert "<td>not-an-address</td>" in page

    mapping = {
        "key": "email",
        "field_0": "email",
        "field_1": "attribute",
        "name_1": "first_name",
        "type_1": "text",
        "field_2": "attribute",
        "name_2": "orders",
        "type_2": "number",
        "field_3": "attribute",
        "name_3": "signed_up",
        "type_3": "date",
        "field_4": "attribute",
        "name_4": "newsletter",
        "type_4": "boolean",
    }
    bad = client.post(f"{base}/imports/{imp.pk}/", {**mapping, "field_0": "ignore"})
    assert bad.status_code == 400
    assert "No column is mapped to the email address" in bad.content.decode()
    assert client.post(f"{base}/imports/{imp.pk}/", mapping).status_code == 302

    progress_url = f"{base}/imports/{imp.pk}/progress/"
    deadline = time.monotonic() + 60
    while True:
        fragment = client.get(progress_url).content.decode()
        if "Import finished" in fragment or time.monotonic() > deadline:
            break
        assert 'hx-trigger="every 1s"' in fragment  # htmx polls until it is done
        assert "<progress" in fragment
        time.sleep(0.2)
    assert "hx-trigger" not in fragment  # finished: no more polling
    summary = {
        name: fragment.split(f'id="import-{name}">')[1].split("<")[0]
        for name in ("created", "updated", "skipped", "failed")
    }
    assert summary == {"created": "1", "updated": "1", "skipped": "1", "failed": "3"}
    with scopes_disabled():
        stored = {c.email: c.attributes for c in Customer.objects.filter(workspace=workspace)}
    assert stored == {
        "ann@example.com": {
            "first_name": "Ann",
            "orders": 4,
            "signed_up": "2024-01-05",
            "newsletter": True,
        },
        "dora@example.com": {
            "first_name": "Dora",
            "orders": 0,
            "signed_up": "2024-03-01",
            "newsletter": False,
        },
    }
    errors = client.get(f"{base}/imports/{imp.pk}/errors.csv")
    assert errors.status_code == 200 and "attachment" in errors["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(errors.streaming_content).decode())))
    assert [(r[0], r[1]) for r in rows[1:]] == [
        ("2", "the same key is on line 7, which is imported instead"),
        ("3", "orders: “x” is not a number"),
        ("4", "signed_up: “2024-02-30” is not a date (YYYY-MM-DD)"),
        ("6", "“not-an-address” is not an email address"),
    ]
    # Started imports cannot be mapped again.
    assert client.post(f"{base}/imports/{imp.pk}/", mapping).status_code == 302
    with scopes_disabled():
        assert CustomerImport.objects.get(pk=imp.pk).created == 1
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [
        f"{Path(imp.path).name}.errors.csv"
    ]  # the upload is gone once imported; its report stays


def test_an_upload_that_is_no_table_is_refused_with_a_reason(shop, client_for, settings, tmp_path):
    settings.CUSTOMER_IMPORT_DIR = tmp_path
    workspace, owner = shop
    client = client_for(owner)
    empty = SimpleUploadedFile("empty.csv", b"", "text/csv")
    response = client.post(f"/w/{workspace.slug}/customers/import/", {"file": empty})
    assert response.status_code == 400
    assert "empty" in response.content.decode()
    broken = SimpleUploadedFile("broken.xlsx", b"PK\x03\x04 not a zip", "application/zip")
    response = client.post(f"/w/{workspace.slug}/customers/import/", {"file": broken})
    assert response.status_code == 400
    assert "not a readable XLSX" in response.content.decode()
    with scope(workspace=workspace):
        assert not CustomerImport.objects.exists()
    assert list(tmp_path.rglob("*.upload")) == []
