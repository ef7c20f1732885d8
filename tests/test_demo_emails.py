"""The demo's own emails (clickmap/demo_emails): realistic marketing emails whose every
image ships beside them, which fetch nothing remote, and whose layout holds in Chromium
at desktop and phone widths. Parsed here with lxml and Pillow, independently of the
loader and the product's inventory."""

import base64
import re
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import jinja2
import lxml.html
import pytest
from PIL import Image

from campaigns.inventory import inventory_links
from clickmap import demo
from clickmap.demo import DEMO_TEMPLATES, EMAILS, WELCOME_AMP, demo_email
from clickmap.render import context_options

HTML_EMAILS = sorted(DEMO_TEMPLATES.values())
ALL_EMAILS = [*HTML_EMAILS, WELCOME_AMP]
SOCIAL = {"Instagram", "Facebook", "YouTube", "Pinterest"}
SAMPLE = {
    "first_name": "Ann",
    "username": "ann",
    "unsubscribe_url": "https://shop.example/u/sample",
    "login_url": "https://shop.example/login",
    "help_url": "https://shop.example/help",
    "live_chat_url": "https://shop.example/chat",
    "support_email": "help@shop.example",
    "trial_length": "14 days",
    "products": [
        {"name": "Ridge Down Parka", "url": "https://shop.example/p/ridge-down-parka"},
        {"name": "Moraine Softshell Trousers", "url": "https://shop.example/p/moraine"},
        {"name": "Fern Kids' Puffer", "url": "https://shop.example/p/fern-kids-puffer"},
    ],
}


def tree(name):
    return lxml.html.fromstring((EMAILS / name).read_text(encoding="utf-8"))


def image_refs(doc):
    """Every image reference the browser would load: img src and background attributes."""
    refs = {img.get("src") for img in doc.iter("img")}
    refs |= {el.get("background") for el in doc.iter() if el.get("background")}
    return refs


def role(href):
    return parse_qs(urlsplit(href).query).get("utm_content", [""])[0]


def file_images():
    return sorted((EMAILS / "images").iterdir())


@pytest.mark.parametrize("name", ALL_EMAILS)
def test_each_email_has_at_least_8_links_and_the_loader_returns_every_image_it_uses(name):
    doc = tree(name)
    assert len([a for a in doc.iter("a") if a.get("href")]) >= 8
    html, assets = demo_email(name)
    assert html == (EMAILS / name).read_text(encoding="utf-8")
    assert set(assets) == image_refs(doc)
    for path, content in assets.items():
        assert content == (EMAILS / path).read_bytes(), path


@pytest.mark.parametrize("name", HTML_EMAILS)
def test_each_html_email_is_responsive_personal_and_has_the_footer_a_sender_needs(name):
    doc = tree(name)
    source = (EMAILS / name).read_text(encoding="utf-8")
    assert doc.xpath("//meta[@name='viewport'][contains(@content, 'width=device-width')]")
    assert re.search(r"@media[^{]*max-width:\s*6[0-9]0px", source)
    assert doc.xpath("//table[@class='email-container'][@width='600' or @width='640']")
    assert "{{ first_name }}" in source
    texts = {a.text_content().strip(): a.get("href") for a in doc.iter("a")}
    assert texts.get("Unsubscribe") == "{{ unsubscribe_url }}"
    assert any("preferences" in t.lower() for t in texts)
    assert any(a.xpath("img[@alt='Fernhill']") for a in doc.iter("a")), "the logo is a link"
    assert len({img.get("alt") for img in doc.xpath("//a/img")} & SOCIAL) >= 3
    for img in doc.iter("img"):
        assert img.get("width") and img.get("height"), lxml.html.tostring(img)[:120]
        assert img.get("alt") is not None


def test_the_set_has_heroes_menus_outlook_buttons_product_grids_and_a_personal_loop():
    heroes = menus = 0
    for name in HTML_EMAILS:
        doc = tree(name)
        heroes += any(
            int(img.get("width")) >= 560 and "display: block" in img.get("style", "")
            for img in doc.xpath("//a/img")
        )
        cells = doc.xpath("//td[count(a[@href]) >= 4]")
        menus += any(all(len(a.text_content().strip()) <= 8 for a in c.xpath("a")) for c in cells)
    assert heroes >= 5 and menus >= 5

    vml = 0
    for name in HTML_EMAILS:
        rows = inventory_links((EMAILS / name).read_text(encoding="utf-8"), "html")
        by_xpath = {r.xpath: r for r in rows}
        for row in rows:
            if row.kind == "vml":
                assert row.twin_xpath, f"{name}: the VML button has a visible twin"
                assert by_xpath[row.twin_xpath].href == row.href
                vml += 1
    assert vml >= 4

    # Product grids: an image link and a caption link to the same product, per product.
    bold = tree("black-friday-bold.html")
    image_links = {a.get("href").split("?")[0] for a in bold.xpath("//a[img]")}
    caption_links = {a.get("href").split("?")[0] for a in bold.xpath("//a[not(img)]")}
    products = {h for h in image_links & caption_links if "/p/" in h}
    assert len(products) == 6

    loops = [n for n in HTML_EMAILS if "{% for p in products %}" in (EMAILS / n).read_text()]
    assert loops == ["welcome.html"]


@pytest.mark.parametrize("name", ALL_EMAILS)
def test_emails_fetch_nothing_remote_and_use_only_fonts_every_machine_has(name):
    source = (EMAILS / name).read_text(encoding="utf-8")
    doc = tree(name)
    for ref in image_refs(doc):
        assert not urlsplit(ref).scheme and not ref.startswith("/"), ref
    scripts = [s.get("src") for s in doc.iter("script")]
    assert scripts == (["https://cdn.ampproject.org/v0.js"] if name == WELCOME_AMP else [])
    assert not doc.xpath("//link") and "@import" not in source and "@font-face" not in source
    assert not re.search(r"url\(", source)
    families = {
        family.replace("!important", "").strip(" '\"").lower()
        for stack in re.findall(r"font-family:\s*([^;\"}]+)", source)
        for family in stack.split(",")
    }
    assert families <= {
        "inherit",
        "arial",
        "helvetica",
        "sans-serif",
        "georgia",
        "times new roman",
        "times",
        "serif",
        "courier new",
        "courier",
        "monospace",
    }


def test_images_are_sharp_undistorted_used_and_small():
    declared = {}
    for name in HTML_EMAILS:
        for img in tree(name).iter("img"):
            declared.setdefault(img.get("src"), set()).add(
                (int(img.get("width")), int(img.get("height")))
            )
    files = {f"images/{f.name}": f for f in file_images()}
    assert set(declared) == set(files), "every image is used, every used image exists"
    for path, sizes in declared.items():
        with Image.open(files[path]) as picture:
            picture.verify()
        with Image.open(files[path]) as picture:
            assert picture.format == {"jpg": "JPEG", "png": "PNG"}[path.rsplit(".", 1)[1]]
            for width, height in sizes:
                assert picture.width >= width and picture.height >= height, path
                assert abs(picture.width / picture.height - width / height) < 0.02, path
    assert sum(f.stat().st_size for f in files.values()) < 1_000_000


def test_loader_refuses_missing_and_escaping_images(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "EMAILS", tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ok.png").write_bytes(b"png")
    (tmp_path / "ok.html").write_text(
        '<img src="images/ok.png"><img src="https://cdn.example/x.png">'
        '<img src="data:image/gif;base64,R0lGOD"><img src="{{ p.image }}">'
        '<!--[if mso]><v:image src="images/ok.png"/><![endif]-->'
        '<td background="images/ok.png">'
    )
    assert demo_email("ok.html")[1] == {"images/ok.png": b"png"}
    (tmp_path / "missing.html").write_text('<img src="images/gone.png">')
    with pytest.raises(FileNotFoundError):
        demo_email("missing.html")
    (tmp_path / "escape.html").write_text('<img src="../secret.png">')
    (tmp_path.parent / "secret.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="outside"):
        demo_email("escape.html")


@pytest.mark.browser
@pytest.mark.parametrize("name", ALL_EMAILS)
def test_layout_holds_at_phone_and_desktop_widths_with_the_real_images(browser, name):
    html, assets = demo_email(name)
    html = jinja2.Environment(autoescape=True).from_string(html).render(SAMPLE)
    html = html.replace("body{visibility:hidden}", "")  # what the AMP runtime would do
    for path, content in assets.items():
        mime = "image/png" if path.endswith(".png") else "image/jpeg"
        html = html.replace(
            f'src="{path}"', f'src="data:{mime};base64,{base64.b64encode(content).decode()}"'
        )
    for device in ("mobile", "desktop"):
        context = browser.new_context(**context_options(device))
        try:
            page = context.new_page()
            page.route("**/*", lambda route: route.abort())  # data: URLs never reach here
            page.set_content(html, wait_until="load")
            width = context_options(device)["viewport"]["width"]
            layout = page.evaluate(LAYOUT_JS)
        finally:
            context.close()
        if name == WELCOME_AMP and device == "mobile":
            continue  # AMP has no viewport meta (not allowed): mail clients size it
        assert layout["scrollWidth"] <= width, (device, layout["scrollWidth"])
        assert all(img["loaded"] for img in layout["images"]), "every image decodes"
        left = 0 if device == "mobile" else (width - 640) / 2 - 1
        right = width if device == "mobile" else (width + 640) / 2 + 1
        for link in layout["links"]:
            if link["w"]:  # displayed: inside the email's column, not cut off
                assert left <= link["x"] and link["x"] + link["w"] <= right + 0.5, (device, link)
        tops = Counter(round(link["y"]) for link in layout["links"] if role(link["href"]) == "nav")
        assert len(tops) <= 1, f"{device}: the menu stays on one line"


LAYOUT_JS = """() => ({
  scrollWidth: document.documentElement.scrollWidth,
  images: [...document.images].map(i => ({loaded: i.complete && i.naturalWidth > 0})),
  links: [...document.querySelectorAll("a[href]")].map(a => {
    const r = a.getBoundingClientRect();
    return {href: a.getAttribute("href"), x: r.x + scrollX, y: r.y + scrollY, w: r.width};
  }),
})"""
