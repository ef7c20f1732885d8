"""Preview rendering: tenant HTML reaches nothing and runs nothing, the link boxes lie
where Chromium draws the links, placeholders keep the layout, "Preview for" finds every
copy of a looped link, and stored previews are rendered once, then served.

Real Chromium throughout: clickmap.render drives its own (one per process, on its own
thread); the independent measurements use the session ``browser`` fixture.
"""

import io
import re
import socket
import time
from pathlib import Path

import pytest
from django_scopes import scope, scopes_disabled
from PIL import Image

from campaigns.inventory import inventory_links
from campaigns.models import TemplateLink
from campaigns.personalise import PersonaliseError
from campaigns.services import template_create
from clickmap import render
from clickmap.models import Preview
from clickmap.previews import preview_document, preview_for, render_stored_preview
from clickmap.render import block_network, context_options, placeholder_images, render_preview
from tests.factories import customers

pytestmark = pytest.mark.browser

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def picture(result) -> Image.Image:
    image = Image.open(io.BytesIO(result.image))
    image.load()
    return image.convert("RGB")


def pixel_at(result, x: float, y: float) -> tuple[int, int, int]:
    """The picture's colour at CSS point (x, y)."""
    return picture(result).getpixel((int(x * result.scale), int(y * result.scale)))


def centre(box):
    x, y, w, h = box
    return x + w / 2, y + h / 2


def fresh_page(browser, device: str, scale: float):
    """A page set up as the renderer's, in another Playwright: for independent checks."""
    context = browser.new_context(**context_options(device, scale))
    context.route("**/*", block_network)
    return context, context.new_page()


# --- Isolation ----------------------------------------------------------------------------


@pytest.fixture
def silent_port():
    """A listening TCP socket that nothing should ever connect to."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    yield listener
    listener.close()


def test_rendering_reaches_no_server_not_even_by_preconnect(browser, landing_server, silent_port):
    shop = landing_server.url
    quiet = f"http://127.0.0.1:{silent_port.getsockname()[1]}"
    html = f"""<!doctype html><html><head>
<meta http-equiv="refresh" content="0;url={shop}/refresh">
<link rel="stylesheet" href="{shop}/style.css">
<link rel="prefetch" href="{shop}/prefetch">
<link rel="preload" as="image" href="{shop}/preload.png">
<link rel="preconnect" href="{quiet}"><link rel="dns-prefetch" href="{quiet}">
<style>@import url("{shop}/import.css"); .hero {{ background: url({shop}/bg.png) }}
@font-face {{ font-family: Shop; src: url({shop}/font.woff2) }} p {{ font-family: Shop }}</style>
</head><body background="{shop}/body.png">
<p class="hero" style="background-image: url('{shop}/inline.png')">Hello</p>
<img src="{shop}/img.png" width="600" height="300" alt="Hero">
<img src="{shop}/small.png" srcset="{shop}/small-2x.png 2x" alt="">
<picture><source srcset="{shop}/pic.webp" type="image/webp"><img src="{shop}/pic.png"></picture>
<input type="image" src="{shop}/button.png" alt="Buy">
<iframe src="{shop}/frame"></iframe>
<video poster="{shop}/poster.png" src="{shop}/video.mp4"></video>
<object data="{shop}/object.svg"></object><embed src="{shop}/embed.svg">
<img src="{quiet}/pixel.gif" width="1" height="1">
<a href="{shop}/shop">Shop</a>
</body></html>"""

    for device in ("desktop", "mobile"):
        result = render_preview(html, device)
        assert result.image

    assert landing_server.hits == []
    with pytest.raises(BlockingIOError):
        silent_port.accept()

    # In an unprotected page the same document does reach both: the checks can fail.
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        with page.expect_response(lambda response: response.url.startswith(shop)) as reply:
            page.set_content(html, wait_until="commit")
        assert reply.value.status == 200
        silent_port.settimeout(10)  # waits for the pixel's connection
        silent_port.accept()[0].close()
    finally:
        context.close()


def test_the_request_interception_alone_aborts_every_fetch(browser, landing_server):
    shop = landing_server.url
    html = (
        f'<link rel="stylesheet" href="{shop}/style.css"><style>@import url("{shop}/i.css");'
        f"</style><img src='{shop}/img.png'><iframe src='{shop}/frame'></iframe>"
        f'<embed src="{shop}/embed.svg"><object data="{shop}/object.svg"></object>'
    )
    context = browser.new_context(**context_options("desktop"))  # no hardened launch flags
    context.route("**/*", block_network)
    try:
        context.new_page().set_content(html, wait_until="load")  # images not replaced
    finally:
        context.close()
    assert landing_server.hits == []


@pytest.fixture
def chromium_letting_requests_through(monkeypatch):
    """The renderer's Chromium with request interception turned into a pass-through."""
    render.shutdown()
    monkeypatch.setattr(render, "block_network", lambda route: route.continue_())
    yield
    monkeypatch.undo()
    render.shutdown()


def test_the_preview_chromium_cannot_connect_even_past_interception(
    chromium_letting_requests_through, landing_server
):
    shop = landing_server.url
    html = f'<embed src="{shop}/embed.svg"><object data="{shop}/object.svg"></object>'

    render_preview(html, "desktop")

    assert landing_server.hits == []


SCRIPTED = """<!doctype html><html><head>
<script>document.title = 'ran';</script>
</head><body style="margin:0" onload="document.body.style.background = '#ff0000'">
<a href="https://shop.example/x"
   style="display:block;width:300px;height:100px;background:#00ff00">Shop</a>
<img src="x" onerror="document.body.style.background = '#ff0000'">
<script>document.body.innerHTML = 'PWNED';</script>
</body></html>"""


def test_scripts_in_the_email_never_run(browser):
    link = {1: "/html/body/a"}
    result = render_preview(SCRIPTED, "desktop", link)

    assert result.boxes[1] == [(0, 0, 300, 100)]  # the body was never replaced
    assert pixel_at(result, 150, 50) == (0, 255, 0)
    assert (255, 0, 0) not in {colour for _, colour in picture(result).getcolors(1 << 24)}

    # With scripts on, the same document destroys the link: the check can fail.
    context = browser.new_context(java_script_enabled=True)
    try:
        page = context.new_page()
        page.set_content(SCRIPTED, wait_until="load")
        assert page.locator("xpath=/html/body/a").count() == 0
        assert page.title() == "ran"
    finally:
        context.close()


# --- Boxes in the picture (their fidelity: tests/test_overlay.py) ------------------------


@pytest.mark.parametrize("device", ["desktop", "mobile"])
def test_boxes_sit_on_the_links_in_the_picture_down_a_long_email(device):
    colours = [(220, 20, 60), (30, 144, 255), (50, 205, 50), (255, 140, 0)]
    blocks = "".join(
        f'<div style="height:900px"></div><a href="https://shop.example/{i}" '
        f'style="display:block;margin-left:{40 * i}px;width:150px;height:40px;'
        f'background:rgb{colour}"></a>'
        for i, colour in enumerate(colours)
    )
    html = (
        '<!doctype html><html><head><meta name="viewport" content="width=device-width">'
        f'</head><body style="margin:0">{blocks}</body></html>'
    )
    xpaths = {i: f"/html/body/a[{i + 1}]" for i in range(len(colours))}

    result = render_preview(html, device, xpaths)

    assert result.height >= 4 * 940
    for i, colour in enumerate(colours):
        (box,) = result.boxes[i]
        assert box == (40 * i, 900 * (i + 1) + 40 * i, 150, 40)
        assert pixel_at(result, *centre(box)) == colour
        assert pixel_at(result, box[0] + 1, box[1] + 1) == colour
        assert pixel_at(result, box[0] + box[2] - 1, box[1] + box[3] - 1) == colour


def test_mobile_is_390_css_pixels_at_three_device_pixels_each():
    html = (
        '<!doctype html><html><head><meta name="viewport" content="width=device-width">'
        "<style>@media (max-width: 480px) { .col { width: 100% !important } }</style></head>"
        '<body style="margin:0"><table class="col" width="600" cellpadding="0" cellspacing="0">'
        '<tr><td><a href="https://shop.example/" style="display:block">Shop</a></td></tr>'
        "</table></body></html>"
    )
    result = render_preview(html, "mobile", {1: "/html/body/table/tbody/tr/td/a"})

    assert (result.width, result.scale) == (390, 3.0)
    assert picture(result).width == 1170
    assert result.boxes[1][0][2] == 390  # the phone's media query applied


def test_a_wide_email_on_mobile_is_shot_at_the_phone_s_zoomed_out_size():
    html = '<body style="margin:0"><div style="width:980px;height:200px"></div></body>'
    result = render_preview(html, "mobile")

    assert result.width == 980
    assert result.scale == pytest.approx(3 * 390 / 980, abs=0.01)
    assert abs(picture(result).width - 1170) <= 5


def test_each_render_starts_from_a_fresh_document():
    responsive = (
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<body style="margin:0"><div style="width:600px;height:50px"></div></body>'
    )
    fixed = '<body style="margin:0"><a href="https://shop.example/" style="display:block">x</a>'

    assert render_preview(responsive, "mobile").width == 600
    result = render_preview(fixed, "mobile", {1: "/html/body/a"})

    # No viewport meta: a phone lays the page out 980 px wide, whatever came before.
    assert result.width == 980 and result.boxes[1][0][2] == 980


# --- Placeholder images -------------------------------------------------------------------


def test_remote_images_become_placeholders_of_their_declared_size():
    html = """<!doctype html><html><body style="margin:0">
<table cellpadding="0" cellspacing="0"><tr><td style="padding:37px 0 0 53px">
<a href="https://shop.example/hero"><img src="https://cdn.example/hero.jpg" width="600"
 height="300" alt="Hero" style="display:block" usemap="#m"></a>
<img src="https://cdn.example/a.png" style="display:block;width:200px">
<img src="https://cdn.example/b.png" style="display:block">
<img src="https://cdn.example/c.png" width="120" height="45"
 style="display:block;width:100%;max-width:240px;height:auto">
<map name="m"><area shape="rect" coords="10,20,110,70" href="https://shop.example/area"></map>
</td></tr></table></body></html>"""
    cell = "/html/body/table/tbody/tr/td"
    xpaths = {
        1: f"{cell}/a/img",
        2: f"{cell}/img[1]",
        3: f"{cell}/img[2]",
        4: f"{cell}/img[3]",
        5: f"{cell}/map/area",
    }

    result = render_preview(html, "desktop", xpaths)

    assert result.boxes[1] == [(53, 37, 600, 300)]
    assert result.boxes[2] == [(53, 337, 200, 100)]  # width only: a 2:1 box
    default_w, default_h = render.DEFAULT_IMAGE_SIZE
    assert result.boxes[3] == [(53, 437, default_w, default_h)]
    assert result.boxes[4] == [(53, 437 + default_h, 240, 90)]  # the declared ratio holds
    assert result.boxes[5] == [(63, 57, 100, 50)]  # image-map area: on its image
    fill = tuple(int(render.PLACEHOLDER_FILL[i : i + 2], 16) for i in (1, 3, 5))
    assert all(abs(a - b) <= 2 for a, b in zip(pixel_at(result, 60, 45), fill, strict=True))


def test_placeholders_change_attribute_values_only_so_xpaths_still_hold():
    html = (CORPUS / "cerberus-hybrid.html").read_text(encoding="utf-8")
    rewritten = placeholder_images(html)

    assert "https://" in html and rewritten != html
    assert [(r.xpath, r.href) for r in inventory_links(rewritten)] == [
        (r.xpath, r.href) for r in inventory_links(html)
    ]
    shown = re.sub(r"<!--.*?-->", "", rewritten, flags=re.DOTALL)  # Outlook-only: kept
    assert 'src="http' not in shown and "url(http" not in shown
    assert 'src="http' in re.sub(r"<!--.*?-->", "", html, flags=re.DOTALL)


def test_amp_emails_show_without_the_amp_runtime():
    amp = """<!doctype html><html ⚡4email data-css-strict><head><meta charset="utf-8">
<script async src="https://cdn.ampproject.org/v0.js"></script>
<style amp4email-boilerplate>body{visibility:hidden}</style>
<style amp-custom>body { margin: 0 }
.buy { display: block; width: 200px; height: 50px; background: #0000ff }</style>
</head><body><a class="buy" href="https://shop.example/amp">Buy</a>
<amp-img src="https://cdn.example/p.png" width="640" height="320" layout="responsive"></amp-img>
</body></html>"""
    result = render_preview(amp, "desktop", {1: "/html/body/a", 2: "/html/body/amp-img"})

    (buy,) = result.boxes[1]
    assert pixel_at(result, *centre(buy)) == (0, 0, 255)
    (image,) = result.boxes[2]
    assert image[2] == 1280 and image[3] == 640


# --- Preview for --------------------------------------------------------------------------

LOOP_TEMPLATE = """<!doctype html><html>
<head><meta name="viewport" content="width=device-width, initial-scale=1"></head><body>
<p>Hi {{ customer.first_name }}</p>
{% for p in products %}<p><a href="{{ p.url }}">{{ p.name }}</a></p>
{% endfor %}
<p><a href="https://shop.example/all">All products</a></p>
<!--[if mso]><a href="https://shop.example/all">All products</a><![endif]-->
</body></html>"""


@pytest.fixture
def shop(make_workspace):
    workspace = make_workspace("Shop")
    with scope(workspace=workspace):
        version = template_create(workspace=workspace, name="Offers", html=LOOP_TEMPLATE)
    with scopes_disabled():
        links = {
            (link.href, link.mso): link for link in TemplateLink.objects.filter(version=version)
        }
    ann, bob = customers(
        workspace,
        [
            ("ann", "ann@example.test", {"first_name": "Ann", "products": _products(3)}),
            ("bob", "bob@example.test", {"first_name": "Bob", "products": _products(1)}),
        ],
    )
    return workspace, version, links, ann, bob


def _products(count):
    return [{"name": f"P{n}", "url": f"https://shop.example/p/{n}"} for n in range(count)]


def rendered(django_capture_on_commit_callbacks, *args):
    """preview_for, with the render it queues run (inline, under ``eager_tasks``); a
    sixth argument is ``exact``."""
    with django_capture_on_commit_callbacks(execute=True):
        preview = preview_for(*args[:4], exact=bool(args[4:] and args[4]))
    preview.refresh_from_db()
    return preview


def boxes_of(preview, link):
    return preview.boxes.get(str(link.pk), [])


def test_preview_for_a_customer_boxes_every_copy_of_a_looped_link(
    shop, eager_tasks, django_capture_on_commit_callbacks
):
    _, version, links, ann, bob = shop
    product = links["{{ p.url }}", False]
    all_products = links["https://shop.example/all", False]
    outlook = links["https://shop.example/all", True]
    assert outlook.twin_id == all_products.pk

    for customer, count in ((ann, 3), (bob, 1)):
        for exact in (True, False):  # Preview for, and the shared preview with them as sample
            preview = rendered(
                django_capture_on_commit_callbacks, version, "html", "desktop", customer, exact
            )
            assert preview.status == Preview.Status.DONE, preview.error
            boxes = boxes_of(preview, product)
            assert len(boxes) == count
            assert len({y for _, y, _, _ in boxes}) == count  # one per copy, one below another
            assert len(boxes_of(preview, all_products)) == 1
            assert boxes_of(preview, outlook) == boxes_of(preview, all_products)

    nobody = rendered(django_capture_on_commit_callbacks, version, "html", "desktop")
    assert nobody.status == Preview.Status.DONE
    assert boxes_of(nobody, product) == []  # no customer data: no products to loop over
    assert len(boxes_of(nobody, all_products)) == 1


def test_the_shared_preview_shows_no_raw_personalisation(shop, make_workspace):
    _, version, _, ann, _ = shop
    source = (
        "<p>Hi {{ first_name }} {{ customer.address.city }},</p>{% if tier == 'gold' %}"
        "<p>Gold!</p>{% endif %}<a href='{{ customer.portal.url }}'>Portal</a>"
    )
    with scope(workspace=ann.workspace):
        lenient = template_create(workspace=ann.workspace, name="Lenient", html=source)
    for customer in (ann, None):
        for template in (version, lenient):
            preview = Preview(version=template, format="html", device="desktop", customer=customer)
            html = preview_document(preview)
            assert "{{" not in html and "{%" not in html, html
    exact = Preview(version=lenient, format="html", device="desktop", customer=ann, exact=True)
    with pytest.raises(PersonaliseError):  # what a send to Ann would do
        preview_document(exact)


def test_a_customer_whose_data_changed_is_rendered_again(
    shop, eager_tasks, django_capture_on_commit_callbacks
):
    _, version, links, ann, _ = shop
    product = links["{{ p.url }}", False]
    first = rendered(django_capture_on_commit_callbacks, version, "html", "mobile", ann)
    assert len(boxes_of(first, product)) == 3

    ann.attributes = {**ann.attributes, "products": _products(5)}
    with scopes_disabled():
        ann.save()
    again = rendered(django_capture_on_commit_callbacks, version, "html", "mobile", ann)

    assert again.pk == first.pk
    assert len(boxes_of(again, product)) == 5


# --- The stored-preview service -----------------------------------------------------------


def test_preview_for_renders_once_then_serves_the_stored_preview(
    shop, eager_tasks, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    _, version, links, _, _ = shop
    started = time.perf_counter()
    first = rendered(django_capture_on_commit_callbacks, version, "html", "desktop")
    first_ms = (time.perf_counter() - started) * 1000

    assert first.status == Preview.Status.DONE and first.error == ""
    with scopes_disabled():
        stored = Preview.objects.get(pk=first.pk)
    assert stored.mime == "image/png" and bytes(stored.image).startswith(b"\x89PNG")
    assert stored.width == 1280 and stored.height >= 800 and stored.render_ms > 0
    assert stored.workspace_id == version.template.workspace_id

    started = time.perf_counter()
    with django_assert_max_num_queries(2), django_capture_on_commit_callbacks() as queued:
        cached = preview_for(version, "html", "desktop")
    cached_ms = (time.perf_counter() - started) * 1000
    assert cached.pk == first.pk and cached.status == Preview.Status.DONE
    assert cached.updated_at == stored.updated_at and queued == []
    assert cached_ms < first_ms

    mobile = rendered(django_capture_on_commit_callbacks, version, "html", "mobile")
    assert mobile.pk != first.pk and mobile.width == 390 and mobile.scale == 3.0
    with scopes_disabled():
        assert Preview.objects.filter(version=version).count() == 2


def test_a_new_preview_is_queued_once_and_rendered_by_the_task(
    shop, django_capture_on_commit_callbacks
):
    _, version, _, ann, _ = shop
    with django_capture_on_commit_callbacks() as queued:
        pending = preview_for(version, "html", "desktop", ann)
        again = preview_for(version, "html", "desktop", ann)
    assert pending.status == again.status == Preview.Status.PENDING
    assert again.pk == pending.pk and len(queued) == 1

    done = render_stored_preview(pending.pk)
    assert done.status == Preview.Status.DONE
    assert render_stored_preview(pending.pk).updated_at == done.updated_at  # idempotent


def test_a_template_error_fails_the_preview_with_its_reason(
    make_workspace, eager_tasks, django_capture_on_commit_callbacks
):
    workspace = make_workspace()
    broken = "<p>{% for p in products %}<a href='{{ p.url }}'>Buy {{ p.name }}</a></p>"
    with scope(workspace=workspace):
        version = template_create(workspace=workspace, name="Broken", html=broken)
    (customer,) = customers(workspace, [("c1", "c1@example.test", {"products": []})])

    failed = rendered(
        django_capture_on_commit_callbacks, version, "html", "desktop", customer, True
    )

    assert failed.status == Preview.Status.FAILED
    assert "syntax error" in failed.error.lower()
    with django_capture_on_commit_callbacks() as queued:
        again = preview_for(version, "html", "desktop", customer, exact=True)
        assert again.status == Preview.Status.FAILED
    assert queued == []  # the same input would fail the same way
    # The shared preview shows the template without its personalisation, and says why:
    # raw Jinja is never shown.
    shared = rendered(django_capture_on_commit_callbacks, version, "html", "desktop")
    assert shared.status == Preview.Status.DONE, shared.error
    assert "syntax error" in shared.notice.lower() and "without" in shared.notice
    with scopes_disabled():
        link = TemplateLink.objects.get(version=version)
    assert len(shared.boxes[str(link.pk)]) == 1  # boxed by its xpath


def test_a_missing_chromium_fails_the_preview_saying_so(
    shop, eager_tasks, django_capture_on_commit_callbacks, monkeypatch
):
    _, version, _, _, _ = shop
    render.shutdown()
    monkeypatch.setattr(render, "CHROMIUM_PATH", "/nonexistent/chromium")

    failed = rendered(django_capture_on_commit_callbacks, version, "html", "desktop")

    assert failed.status == Preview.Status.FAILED
    assert "Chromium is not installed at /nonexistent/chromium" in failed.error


def test_a_crashed_chromium_is_started_again_for_the_next_render():
    render_preview("<p>warm up</p>", "desktop")
    render._CHROMIUM.call(lambda pages: pages.browser.close(), timeout=30)

    result = render_preview('<a href="https://shop.example/">Shop</a>', "desktop", {1: "//a"})
    assert len(result.boxes[1]) == 1


@pytest.fixture
def redis_worker(redis_client):
    """A Celery worker on the real Redis broker, in a thread of this process."""
    from celery.contrib.testing.worker import start_worker

    from clickmap.celery import app

    app.loader.import_module("celery.contrib.testing.tasks")  # the worker's ping task
    queues = ["clickmap", "previews"]  # the default queue (its ping) and docker-compose's
    with start_worker(
        app, pool="solo", perform_ping_check=True, shutdown_timeout=10, queues=queues
    ) as worker:
        yield worker


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_renders_the_queued_preview(make_workspace, redis_worker):
    workspace = make_workspace()
    with scope(workspace=workspace):
        version = template_create(
            workspace=workspace, name="Hello", html='<a href="https://shop.example/">Shop</a>'
        )

    queued = preview_for(version, "html", "mobile")  # committed at once: queued on Redis
    deadline = time.monotonic() + 60
    while queued.status in (Preview.Status.PENDING, Preview.Status.RUNNING):
        assert time.monotonic() < deadline, "the worker did not render the preview"
        time.sleep(0.05)
        queued.refresh_from_db()

    assert queued.status == Preview.Status.DONE, queued.error
    (link,) = TemplateLink.objects.with_scopes_disabled().filter(version=version)
    assert len(queued.boxes[str(link.pk)]) == 1
