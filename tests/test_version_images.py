"""A version's images, end to end: saved -> fetched by the task (or uploaded in a .zip)
-> verified and stored beside the version -> listed on the version page -> shown in
the preview Chromium renders, with their own pixels.

Real servers throughout (tests/image_servers.py), real Chromium, real PostgreSQL;
Celery tasks run inline under ``eager_tasks`` as on the embedded default, and on a
real worker over Redis in one test.
"""

import hashlib
import io
import re
import time
import zipfile
from pathlib import Path

import pytest
from django.urls import reverse
from django_scopes import scope, scopes_disabled
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from campaigns.images import ImageRefused, asset_images, image_sources, verify_image
from campaigns.inventory import inventory_links
from campaigns.models import ImageBlob, Role, Template, VersionImage
from campaigns.services import template_create, template_version_save
from campaigns.templatezip import TemplateZipError, read_template_zip
from clickmap import render
from clickmap.models import Preview
from clickmap.previews import preview_for
from tests.image_servers import (
    FILES,
    GREEN,
    MAGENTA,
    ORANGE,
    PINK,
    animated_gif,
    connects,
    declared_png,
    jpeg,
    png,
    serving,
    watch_network,
)

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.fixture
def workspace(make_workspace):
    return make_workspace("Images")


@pytest.fixture
def server():
    with serving() as running:
        yield running


def owner_of(workspace):
    with scopes_disabled():
        return workspace.memberships.get().user


def images_of(version) -> dict[str, VersionImage]:
    with scopes_disabled():
        return {
            row.src: row
            for row in VersionImage.objects.filter(version=version).select_related("blob")
        }


def saved(workspace, html, capture, **kwargs):
    """template_create with the commit's callbacks (the fetch task) run."""
    with capture(execute=True), scope(workspace=workspace):
        return template_create(workspace=workspace, name="Email", html=html, **kwargs)


def rendered(capture, version, device="desktop"):
    with capture(execute=True):
        preview = preview_for(version, "html", device)
    preview.refresh_from_db()
    assert preview.status == Preview.Status.DONE, preview.error
    return preview


def pixel(preview, x, y):
    picture = Image.open(io.BytesIO(bytes(preview.image))).convert("RGB")
    return picture.getpixel((int(x * preview.scale), int(y * preview.scale)))


def near(a, b, tolerance=3):
    return all(abs(p - q) <= tolerance for p, q in zip(a, b, strict=True))


def hex_rgb(colour: str):
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


# --- Fetched on save, shown in the preview ------------------------------------------------


@pytest.mark.browser
def test_fetched_images_show_in_the_preview_with_their_own_pixels(
    workspace, server, settings, eager_tasks, django_capture_on_commit_callbacks
):
    settings.IMAGE_FETCH_ALLOWED_HOSTS = [server.netloc]
    html = f"""<!doctype html><html><body style="margin:0">
<table cellpadding="0" cellspacing="0"><tr><td style="padding:40px 0 0 60px">
<a href="https://shop.example/hero"><img src="{server.url}/halves.png" width="300"
 height="120" alt="Hero" style="display:block"></a>
<div style="width:200px;height:80px;background-image:url('{server.url}/pink.png')"></div>
<img src="{server.url}/missing.png" width="100" height="50" alt="" style="display:block">
</td></tr></table></body></html>"""

    with django_capture_on_commit_callbacks() as commit, scope(workspace=workspace):
        version = template_create(workspace=workspace, name="Hero", html=html)
    assert server.accepted == 0  # the save only queued the fetch, for its commit
    before = rendered(django_capture_on_commit_callbacks, version)
    grey = hex_rgb(render.PLACEHOLDER_FILL)
    assert near(pixel(before, 60 + 75, 40 + 60), grey)

    for callback in commit:  # the commit: the fetch task runs (inline)
        callback()
    rows = images_of(version)
    hero, tile, missing = (rows[f"{server.url}{p}"] for p in FILES_USED)
    assert (hero.status, hero.blob.width, hero.blob.height) == ("stored", 300, 120)
    assert (tile.status, tile.blob.width, tile.blob.height) == ("stored", 30, 20)
    assert (missing.status, missing.reason) == ("failed", "http-status")

    after = rendered(django_capture_on_commit_callbacks, version)
    assert after.pk == before.pk and after.updated_at > before.updated_at  # rendered again
    # The image's own two halves, where the email places it (60, 40; 300 × 120).
    assert near(pixel(after, 60 + 75, 40 + 60), GREEN)
    assert near(pixel(after, 60 + 225, 40 + 60), MAGENTA)
    assert near(pixel(after, 60 + 2, 40 + 2), GREEN) and near(pixel(after, 357, 157), MAGENTA)
    # The CSS background tiles the pink image over its 200 × 80 box below.
    assert near(pixel(after, 60 + 100, 160 + 40), PINK)
    assert near(pixel(after, 60 + 190, 160 + 75), PINK)
    # The image that could not be fetched keeps its sized placeholder.
    assert near(pixel(after, 60 + 50, 240 + 25), grey)
    assert not near(pixel(after, 60 + 50, 240 + 55), grey)  # and only its 100 × 50


FILES_USED = ("/halves.png", "/pink.png", "/missing.png")


def test_every_private_target_is_refused_recorded_and_never_connected_by_default(
    workspace, server, settings, eager_tasks, django_capture_on_commit_callbacks, client_for
):
    assert settings.IMAGE_FETCH_ALLOWED_HOSTS == []  # the default
    with serving("::1") as server6:
        targets = {
            f"http://127.0.0.1:{server.port}/pink.png": "loopback",
            "http://10.1.2.3/x.png": "private",
            "http://169.254.169.254/latest/meta-data/": "metadata",
            f"http://[::1]:{server6.port}/pink.png": "loopback",
            f"http://localhost:{server.port}/pink.png": "loopback",
        }
        html = "<!doctype html>" + "".join(
            f'<img src="{url}" width="10" height="10">' for url in targets
        )
        with watch_network() as log:
            version = saved(workspace, html, django_capture_on_commit_callbacks)
        assert server.accepted == 0 and server6.accepted == 0
    assert connects(log) == []

    rows = images_of(version)
    assert {src: row.reason for src, row in rows.items()} == dict.fromkeys(targets, "address")
    for src, kind in targets.items():
        assert rows[src].status == "failed" and kind in rows[src].message

    page = client_for(owner_of(workspace)).get(version.get_absolute_url())
    text = page.content.decode()
    assert page.status_code == 200
    assert f"{len(targets)} things to check" in text
    for src in targets:
        assert src in text
    assert text.count("Not shown</span>") == len(targets)
    assert "169.254.169.254 is the cloud metadata address" in text


def test_a_redirect_to_a_private_address_is_refused_and_never_connected(
    workspace, server, settings, eager_tasks, django_capture_on_commit_callbacks
):
    settings.IMAGE_FETCH_ALLOWED_HOSTS = [server.netloc]  # the first hop only
    with serving() as second:
        hops = [f"http://127.0.0.1:{second.port}/pink.png", "http://10.0.0.1/x.png"]
        html = "".join(f'<img src="{server.url}/redirect?to={hop}">' for hop in hops)
        with watch_network() as log:
            version = saved(workspace, html, django_capture_on_commit_callbacks)
        assert second.accepted == 0
    assert server.accepted == 2
    assert set(connects(log)) == {("127.0.0.1", server.port)}
    rows = images_of(version)
    assert [row.reason for row in rows.values()] == ["address", "address"]
    assert "10.0.0.1 is a private address" in rows[html_src(server, hops[1])].message


def html_src(server, hop):
    return f"{server.url}/redirect?to={hop}"


def test_big_wrong_and_hostile_images_are_refused_and_recorded(
    workspace, server, settings, eager_tasks, django_capture_on_commit_callbacks, client_for
):
    settings.IMAGE_FETCH_ALLOWED_HOSTS = [server.netloc]
    expected = {
        "/huge.png": "too-big",  # 50 MB declared
        "/page.html": "not-image",
        "/bomb.png": "bomb",  # 30000 × 30000 in a few hundred bytes
        "/corrupt.png": "corrupt",
        "/logo.svg": "svg",
        "/missing.png": "http-status",
    }
    html = "".join(f'<img src="{server.url}{path}" width="20" height="20">' for path in expected)

    version = saved(workspace, html, django_capture_on_commit_callbacks)

    rows = images_of(version)
    assert {src.removeprefix(server.url): row.reason for src, row in rows.items()} == expected
    assert all(row.status == "failed" and row.blob is None for row in rows.values())
    assert not server.big_completed  # the 50 MB were never read in full
    page = client_for(owner_of(workspace)).get(version.get_absolute_url())
    text = page.content.decode()
    for message in ("50.0 MB", "not an image", "decompression bomb", "SVG is not accepted"):
        assert message in text
    assert "HTTP 404" in text


def test_fetch_again_brings_in_what_the_guard_let_through_since(
    workspace,
    server,
    settings,
    eager_tasks,
    django_capture_on_commit_callbacks,
    client_for,
    add_member,
):
    url = f"{server.url}/pink.png"
    html = f'<img src="{url}" width="30" height="20">'
    version = saved(workspace, html, django_capture_on_commit_callbacks)
    assert images_of(version)[url].reason == "address"

    settings.IMAGE_FETCH_ALLOWED_HOSTS = [server.netloc]
    fetch = reverse(
        "campaigns:version-images",
        kwargs={
            "workspace_slug": workspace.slug,
            "template_id": version.template_id,
            "number": version.number,
        },
    )
    viewer = client_for(add_member(workspace, Role.VIEWER))
    assert viewer.post(fetch).status_code == 403
    assert server.accepted == 0

    analyst = client_for(add_member(workspace, Role.ANALYST))
    with django_capture_on_commit_callbacks(execute=True):
        response = analyst.post(fetch)
    assert response.status_code == 302
    row = images_of(version)[url]
    assert (row.status, row.blob.width, row.blob.height) == ("stored", 30, 20)
    assert server.accepted == 1
    page = analyst.get(version.get_absolute_url()).content.decode()
    assert "30 × 20 px" in page and "things to check" not in page
    partial = analyst.get(fetch).content.decode()  # the fragment htmx polls while fetching
    assert "30 × 20 px" in partial and "<html" not in partial


def test_an_image_used_twice_is_stored_once_by_the_digest_of_its_re_encoded_bytes(
    workspace, server, settings, eager_tasks, django_capture_on_commit_callbacks
):
    settings.IMAGE_FETCH_ALLOWED_HOSTS = [server.netloc]
    url = f"{server.url}/orange.jpg"
    first = saved(workspace, f'<img src="{url}">', django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True), scope(workspace=workspace):
        second, _ = template_version_save(
            template=first.template, html=f'<p>New</p><img src="{url}" alt="again">'
        )

    a, b = images_of(first)[url], images_of(second)[url]
    assert a.blob_id == b.blob_id
    assert a.blob_id == hashlib.sha256(bytes(a.blob.data)).hexdigest()
    assert ImageBlob.objects.count() == 1
    assert a.blob.mime == "image/jpeg" and bytes(a.blob.data) != FILES["/orange.jpg"][1]
    decoded = Image.open(io.BytesIO(bytes(a.blob.data))).convert("RGB")
    assert near(decoded.getpixel((20, 20)), ORANGE, tolerance=4)
    assert server.accepted == 2  # one fetch per save


# --- Through a real Celery worker ---------------------------------------------------------


@pytest.fixture
def redis_worker(redis_client):
    from celery.contrib.testing.worker import start_worker

    from clickmap.celery import app

    app.loader.import_module("celery.contrib.testing.tasks")
    with start_worker(app, pool="solo", perform_ping_check=True, shutdown_timeout=10) as worker:
        yield worker


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_fetches_the_images_of_a_saved_version(
    make_workspace, server, settings, redis_worker
):
    settings.IMAGE_FETCH_ALLOWED_HOSTS = [server.netloc]
    workspace = make_workspace()
    url = f"{server.url}/pink.png"
    with scope(workspace=workspace):
        version = template_create(workspace=workspace, name="Hi", html=f'<img src="{url}">')

    deadline = time.monotonic() + 60
    while (row := images_of(version)[url]).status == "pending":
        assert time.monotonic() < deadline, "the worker did not fetch the image"
        time.sleep(0.05)
    assert row.status == "stored" and row.blob.width == 30


# --- Uploaded with the template -------------------------------------------------------------


def zip_of(files: dict[str, bytes], **options) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data, **options)
    return out.getvalue()


def upload(name: str, data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="application/zip")


ZIPPED_EMAIL = """<!doctype html><html><body style="margin:0">
<img src="images/hero.png" width="120" height="60" style="display:block" alt="Hero">
<img src="./logo.gif" width="20" height="20" alt="Logo">
<table><tr><td background="../shared/footer%20bg.jpg">Footer</td></tr></table>
<img src="images/missing.png" alt="">
<img src="../../escape.png" alt="">
<img src="images/bad.png" alt="">
<a href="https://shop.example/">Shop</a>
</body></html>"""


def zipped_email() -> bytes:
    return zip_of(
        {
            "email/index.html": ZIPPED_EMAIL.encode(),
            "email/images/hero.png": png((120, 60), GREEN),
            "email/logo.gif": animated_gif((20, 20), [MAGENTA, GREEN]),
            "shared/footer bg.jpg": jpeg((64, 16), ORANGE),
            "email/images/bad.png": declared_png(10, 10, idat=b"garbage" * 10),
            "__MACOSX/email/._index.html": b"\0\x05\x16\x07",
        }
    )


def test_a_zip_upload_stores_the_html_and_its_images(workspace, client_for):
    owner = owner_of(workspace)
    client = client_for(owner)
    create = reverse("campaigns:template-create", kwargs={"workspace_slug": workspace.slug})

    response = client.post(
        create, {"name": "Zipped", "html_file": upload("email.zip", zipped_email())}
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    with scopes_disabled():
        version = Template.objects.get(name="Zipped").versions.get()
    assert version.html == ZIPPED_EMAIL
    rows = images_of(version)
    stored = {src: (r.blob.mime, r.blob.width, r.blob.height) for src, r in rows.items() if r.blob}
    assert stored == {
        "images/hero.png": ("image/png", 120, 60),
        "./logo.gif": ("image/png", 20, 20),
        "../shared/footer%20bg.jpg": ("image/jpeg", 64, 16),
    }
    failed = {src: r.reason for src, r in rows.items() if r.status == "failed"}
    assert failed == {
        "images/missing.png": "missing",
        "../../escape.png": "missing",
        "images/bad.png": "corrupt",
    }
    assert all(r.origin == "upload" for r in rows.values())

    page = client.get(response["Location"]).content.decode()
    assert "6 images" in page and "3 not shown" in page and "120 × 60 px" in page
    logo = client.get(
        reverse(
            "campaigns:version-image",
            kwargs={
                "workspace_slug": workspace.slug,
                "template_id": version.template_id,
                "number": 1,
                "image_id": rows["./logo.gif"].pk,
            },
        )
    )
    assert logo["Content-Type"] == "image/png"
    assert "sandbox" in logo["Content-Security-Policy"]
    first_frame = Image.open(io.BytesIO(logo.content)).convert("RGB")
    assert first_frame.getpixel((10, 10)) == MAGENTA  # the animation's first frame


@pytest.mark.browser
def test_uploaded_images_show_in_the_preview(
    workspace, client_for, eager_tasks, django_capture_on_commit_callbacks
):
    client = client_for(owner_of(workspace))
    create = reverse("campaigns:template-create", kwargs={"workspace_slug": workspace.slug})
    with django_capture_on_commit_callbacks(execute=True) as commit:
        client.post(create, {"name": "Zipped", "html_file": upload("email.zip", zipped_email())})
    assert commit == []  # nothing to fetch: every image came in the zip
    with scopes_disabled():
        version = Template.objects.get(name="Zipped").versions.get()

    preview = rendered(django_capture_on_commit_callbacks, version)

    assert near(pixel(preview, 60, 30), GREEN)  # images/hero.png at the top left


def test_editing_with_a_zip_saves_a_new_version_with_its_images(workspace, client_for):
    with scope(workspace=workspace):
        first = template_create(workspace=workspace, name="Edited", html="<p>Old</p>")
    client = client_for(owner_of(workspace))
    edit = reverse(
        "campaigns:template-edit",
        kwargs={"workspace_slug": workspace.slug, "template_id": first.template_id},
    )
    html = b'<p>New</p><img src="img/a.png"><amp-img src="img/a.png" width="4" height="4">'
    amp = (
        b"<!doctype html><html \xe2\x9a\xa14email><body>"
        b'<amp-img src="img/a.png" width="4" height="4" layout="fixed"></amp-img></body></html>'
    )
    archive = zip_of({"new.html": html, "new.amp.html": amp, "img/a.png": png((4, 4), PINK)})

    response = client.post(edit, {"html_file": upload("new.zip", archive), "note": "zip"})

    assert response.status_code == 302
    with scopes_disabled():
        second = first.template.versions.get(number=2)
        formats = sorted(
            VersionImage.objects.filter(version=second).values_list("format", "status")
        )
    assert second.amp_html == amp.decode() and second.note == "zip"
    assert formats == [("amp", "stored"), ("html", "stored")]


def test_the_assets_keyword_stores_local_files_without_any_fetch(
    workspace, django_capture_on_commit_callbacks
):
    html = '<img src="images/hero.png"><img src="./images/hero.png"><img src="images/other.png">'
    with django_capture_on_commit_callbacks() as commit, scope(workspace=workspace):
        version = template_create(
            workspace=workspace,
            name="Demo",
            html=html,
            assets={"images/hero.png": png((8, 6), GREEN), "images/other.png": jpeg((5, 5), PINK)},
        )
    assert commit == []  # no web image: no task
    rows = images_of(version)
    assert [(r.status, r.blob.width) for r in rows.values()] == [("stored", 8)] * 2 + [
        ("stored", 5)
    ]
    assert rows["images/hero.png"].blob_id == rows["./images/hero.png"].blob_id


def test_asset_images_gives_the_renderer_the_verified_files_by_source():
    html = '<img src="./a.png"><img src="b.png"><img src="c.png"><img src="https://x.test/d.png">'
    shown = asset_images(html, {"a.png": png((3, 2), PINK), "b.png": b"not an image"})
    assert list(shown) == ["./a.png"]
    mime, data = shown["./a.png"]
    assert (
        mime == "image/png" and Image.open(io.BytesIO(data)).convert("RGB").getpixel((1, 1)) == PINK
    )


ZIP_MB = 1024 * 1024


def _zip_bomb() -> bytes:
    # 70 MB of zeros squeeze into about 70 KB.
    return zip_of({"index.html": b"<p>Hi</p>", "images/zeros.png": b"\0" * (70 * ZIP_MB)})


def _encrypted() -> bytes:
    # zipfile cannot write encrypted members: mark the member so in both its headers.
    data = bytearray(zip_of({"index.html": b"<p>Hi</p>"}))
    central = data.index(b"PK\x01\x02")
    data[6] |= 0x1  # local file header: general purpose flags
    data[central + 8] |= 0x1  # central directory entry: the same flags
    return bytes(data)


BAD_ZIPS = {
    "traversal": (
        lambda: zip_of({"index.html": b"<p>Hi</p>", "../../etc/cron.d/x.png": b"x"}),
        "points outside the zip",
    ),
    "absolute path": (
        lambda: zip_of({"index.html": b"<p>Hi</p>", "/etc/passwd": b"x"}),
        "is an absolute path",
    ),
    "zip bomb": (_zip_bomb, "would unpack to 70.0 MB"),
    "oversize": (
        lambda: zip_of({"index.html": b"<p>Hi</p>", "big.png": _random(26 * ZIP_MB)}),
        "it may be at most 25.0 MB",
    ),
    "too many entries": (
        lambda: zip_of({"index.html": b"<p>Hi</p>", **{f"i/{n}.png": b"x" for n in range(600)}}),
        "holds 601 entries",
    ),
    "no html": (lambda: zip_of({"images/a.png": png((2, 2), PINK)}), "holds no .html file"),
    "two html": (
        lambda: zip_of({"a.html": b"<p>A</p>", "b.html": b"<p>B</p>"}),
        "it holds a.html, b.html",
    ),
    "image over 5 MB": (
        lambda: zip_of({"index.html": b"<p>Hi</p>", "big.png": b"\0" * (6 * ZIP_MB)}),
        "an image may be at most 5.0 MB",
    ),
    "encrypted": (_encrypted, "is encrypted"),
    "damaged": (lambda: b"PK\x03\x04" + b"\x00garbage" * 100, "damaged or not a zip"),
}


def _random(size: int) -> bytes:
    import random

    return random.Random(7).randbytes(size)


@pytest.mark.parametrize("case", sorted(BAD_ZIPS))
def test_a_bad_zip_gets_a_clear_form_error_and_saves_nothing(workspace, client_for, case):
    make, message = BAD_ZIPS[case]
    client = client_for(owner_of(workspace))
    create = reverse("campaigns:template-create", kwargs={"workspace_slug": workspace.slug})

    response = client.post(create, {"name": "Bad", "html_file": upload("bad.zip", make())})

    assert response.status_code == 400
    text = response.content.decode()
    assert "bad.zip: " in text and message in text, re.findall(r"field-error[^<]*<?[^<]*", text)
    with scopes_disabled():
        assert not Template.objects.filter(workspace=workspace).exists()


# --- Where the HTML names its images ------------------------------------------------------


def test_image_sources_are_every_place_a_browser_loads_an_image():
    html = """<html><head><base href="https://cdn.example/news/">
<style>
@import url("https://fonts.example/css");
@font-face { font-family: X; src: url(https://fonts.example/x.woff2) }
.hero { color: red; background: #fff url("img/style-bg.png") no-repeat }
.band { background-image: url( 'img/band.png' ) }
</style></head><body background="img/body.jpg">
<img src=" img/a.png " srcset="img/a@2x.png 2x">
<img src="img/a.png">
<input type="IMAGE" src="img/button.png">
<input type="text" src="img/not-an-image.png">
<div style="background-image:url(&quot;img/attr&amp;bg.png&quot;)">x</div>
<div style="list-style-image:url(img/bullet.png)">x</div>
<img src="data:image/png;base64,AAAA">
<amp-img src="img/amp.png" width="1" height="1"></amp-img>
<!--[if mso]><v:rect><v:fill src="img/outlook.png"/></v:rect><img src="img/mso.png"><![endif]-->
<script>var x = '<img src="img/script.png">';</script>
</body></html>"""
    assert image_sources(html) == [
        "img/style-bg.png",
        "img/band.png",
        "img/body.jpg",
        "img/a.png",
        "img/button.png",
        "img/attr&bg.png",
        "img/amp.png",
    ]


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.html")))
def test_the_preview_replaces_exactly_the_images_the_fetcher_finds(name):
    html = (CORPUS / name).read_text(encoding="utf-8", errors="replace")
    sources = image_sources(html)
    marker = png((1, 1), PINK)
    rewritten = render.placeholder_images(html, dict.fromkeys(sources, ("image/png", marker)))

    assert image_sources(rewritten) == []  # every source found was swapped for its image
    shown = re.sub(r"<!--.*?-->", "", rewritten, flags=re.DOTALL)
    assert 'src="data:image/svg+xml' not in shown  # and no image was left a placeholder
    assert [(r.xpath, r.href) for r in inventory_links(rewritten)] == [
        (r.xpath, r.href) for r in inventory_links(html)
    ]


# --- Hostile bytes never escape as anything but a refusal ----------------------------------

SEEDS = [
    png((12, 9), PINK),
    jpeg((16, 16), ORANGE),
    animated_gif((6, 6), [GREEN, MAGENTA]),
    declared_png(64, 64),
]


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10_000),
)
def test_mangled_images_are_stored_or_refused_never_an_error(seed, flips, cut):
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    data = bytes(data[: max(1, len(data) - cut % len(data))])
    try:
        image = verify_image(data)
    except ImageRefused as refusal:
        assert refusal.code in {"not-image", "corrupt", "bomb", "svg", "too-big"}
    else:
        assert Image.open(io.BytesIO(image.data)).size == (image.width, image.height)


@hypothesis_settings(max_examples=150, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 255)), min_size=1, max_size=6)
)
def test_mangled_zips_are_read_or_refused_never_an_error(flips):
    data = bytearray(zip_of({"index.html": b"<p>Hi</p>", "a.png": png((3, 3), PINK)}))
    for position, value in flips:
        data[position % len(data)] = value
    try:
        template = read_template_zip(io.BytesIO(bytes(data)))
    except TemplateZipError as refusal:  # any other exception fails the test
        assert str(refusal)
    else:
        assert isinstance(template.html, str) and isinstance(template.assets, dict)
