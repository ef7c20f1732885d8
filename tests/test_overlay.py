"""Link boxes are what the browser draws for each link: checked against truths the
renderer does not compute.

1. The outside check's own definition (../shared/tools/check_overlay.py): the union of a
   link's client rects and those of its rendered descendants, measured by this test's own
   script in its own Chromium page, on every corpus email, desktop and mobile.
2. The browser's drawing itself: everything but one link is hidden and the link is painted
   a colour no email uses; the picture's coloured pixels are what the link draws, and the
   link's boxes must cover them (the old definition drew a 17 px strip under a 300 px
   hero image). Painting is no upper bound: the line fragment of an inline <a> around a
   block image spans its whole line, but no background is painted on it.
3. Hand-computed geometry for the shapes the old definition got wrong: an image inside an
   inline <a>, a wrapped text link, a link clipped by its container.
4. The `render_preview --json` command-line contract, end to end.
"""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from campaigns.inventory import inventory_links
from clickmap.render import block_network, context_options, render_preview

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
CORPUS_FILES = sorted(p.name for p in CORPUS.glob("*.html"))
TOL = 2.0

# The outside check's truth, written out here (not imported from the renderer).
TRUTH_JS = """(xpaths) => {
  const out = {};
  for (const [key, xp] of Object.entries(xpaths)) {
    let n = null;
    try { n = document.evaluate(xp, document, null, 9, null).singleNodeValue; } catch (e) {}
    if (!n || n.nodeType !== 1 || n.localName === "area") { out[key] = null; continue; }
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    const add = (r) => {
      if (!(r.width > 0 && r.height > 0)) return;
      x0 = Math.min(x0, r.left); y0 = Math.min(y0, r.top);
      x1 = Math.max(x1, r.right); y1 = Math.max(y1, r.bottom);
    };
    for (const r of n.getClientRects()) add(r);
    for (const d of n.querySelectorAll("*")) {
      const cs = getComputedStyle(d);
      if (cs.display === "none" || cs.visibility === "hidden") continue;
      for (const r of d.getClientRects()) add(r);
    }
    out[key] = x1 > x0 ? [x0 + scrollX, y0 + scrollY, x1 - x0, y1 - y0] : null;
  }
  return out;
}"""

PROBE = "#ff00ff"
# Hide everything but the probed link, and paint that link and all it holds in PROBE:
# backgrounds fill each line fragment and each descendant's border box, image content is
# moved out of its box so its background shows. Layout does not change.
PROBE_CSS = f"""
html {{ background: #ffffff !important; }}
*, *::before, *::after {{ visibility: hidden !important; }}
[data-probe], [data-probe] * {{
  visibility: visible !important; background: {PROBE} !important; color: {PROBE} !important;
  border-color: {PROBE} !important; object-position: -100000px 0 !important;
  box-shadow: none !important; text-shadow: none !important; outline: none !important;
  opacity: 1 !important; filter: none !important; transition: none !important; }}
"""


def union(boxes):
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return [x0, y0, x1 - x0, y1 - y0]


def off(a, b):
    """The largest distance between matching edges of two boxes."""
    return max(
        abs(a[0] - b[0]),
        abs(a[1] - b[1]),
        abs(a[0] + a[2] - b[0] - b[2]),
        abs(a[1] + a[3] - b[1] - b[3]),
    )


def covers(outer, inner):
    """``outer`` holds ``inner``, give or take TOL px at each edge."""
    return (
        outer[0] <= inner[0] + TOL
        and outer[1] <= inner[1] + TOL
        and outer[0] + outer[2] >= inner[0] + inner[2] - TOL
        and outer[1] + outer[3] >= inner[1] + inner[3] - TOL
    )


def page_like_render(browser, device, scale, html):
    context = browser.new_context(**context_options(device, scale))
    context.route("**/*", block_network)
    page = context.new_page()
    page.set_content(html, wait_until="load")
    return context, page


def shown_rows(html):
    return {i: row for i, row in enumerate(inventory_links(html)) if not row.mso}


@pytest.mark.parametrize("device", ["desktop", "mobile"])
@pytest.mark.parametrize("name", CORPUS_FILES)
def test_every_corpus_link_box_covers_what_chromium_draws(browser, name, device):
    html = (CORPUS / name).read_text(encoding="utf-8")
    rows = shown_rows(html)
    result = render_preview(html, device, {i: r.xpath for i, r in rows.items()}, picture=False)

    context, page = page_like_render(browser, device, result.scale, result.html)
    try:
        truth = page.evaluate(TRUTH_JS, {str(i): r.xpath for i, r in rows.items()})
    finally:
        context.close()
    compared, wrong = 0, []
    for i, row in rows.items():
        expected = truth[str(i)]
        if expected is None:
            continue  # not drawn (hidden), or an <area>: its box is its shape
        compared += 1
        got = result.boxes[i]
        if not got or off(union(got), expected) > TOL:
            wrong.append((row.xpath, got, expected))
    assert compared
    assert wrong == []


def _probe_pixels(page, xpath, width):
    """The bounding box of what the link at ``xpath`` paints, from a screenshot."""
    page.evaluate(
        """(xp) => {
          for (const el of document.querySelectorAll('[data-probe]')) {
            el.removeAttribute('data-probe');
          }
          const n = document.evaluate(xp, document, null, 9, null).singleNodeValue;
          n.setAttribute('data-probe', '');
        }""",
        xpath,
    )
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True, animations="disabled"))).convert(
        "RGB"
    )
    scale = shot.width / width
    red, green, blue = shot.split()
    painted = ImageChops.multiply(
        ImageChops.multiply(
            red.point(lambda v: 255 * (v == 255)), green.point(lambda v: 255 * (v == 0))
        ),
        blue.point(lambda v: 255 * (v == 255)),
    )
    box = painted.getbbox()
    if box is None:
        return None
    x0, y0, x1, y1 = (v / scale for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


DRAWN_CORPUS = [
    "konsav-explorational.html",
    "konsav-promotional.html",
    "cerberus-responsive.html",
    "leemunroe-email.html",
    "edge-cases.html",
]


@pytest.mark.parametrize("device", ["desktop", "mobile"])
@pytest.mark.parametrize("name", DRAWN_CORPUS)
def test_link_boxes_match_the_pixels_each_link_paints(browser, name, device):
    html = (CORPUS / name).read_text(encoding="utf-8")
    rows = {i: r for i, r in shown_rows(html).items() if r.kind != "area"}
    xpaths = {i: r.xpath for i, r in rows.items()}
    result = render_preview(html, device, xpaths, scale=1, picture=False)
    probed = result.html.replace("</head>", f"<style>{PROBE_CSS}</style></head>", 1)
    assert probed != result.html

    context, page = page_like_render(browser, device, 1, probed)
    try:
        width = page.evaluate("document.documentElement.scrollWidth")
        compared, wrong = 0, []
        for i, row in rows.items():
            painted = _probe_pixels(page, row.xpath, width)
            if painted is None:
                assert result.boxes[i] == [], row.xpath  # draws nothing: no box either
                continue
            compared += 1
            got = result.boxes[i]
            if not got or not covers(union(got), painted):
                wrong.append((row.xpath, got, painted))
    finally:
        context.close()
    assert compared >= 3
    assert wrong == []


GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="
SHAPES = f"""<!doctype html><html><head><meta name="viewport" content="width=device-width">
<style>body {{ margin: 0; font: 16px/20px Arial, sans-serif }}</style></head><body>
<table cellpadding="0" cellspacing="0" style="margin-left:40px"><tr><td>
<a href="https://shop.example/hero"><img src="{GIF}" width="300" height="150"
 style="display:block" alt="Hero"></a>
</td></tr></table>
<p style="width:200px;margin:10px 0 0 40px">Some words before
<a href="https://shop.example/wrap">a link whose text wraps over two lines</a> and after.</p>
<div style="width:100px;height:30px;overflow:hidden;margin-left:40px">
<a href="https://shop.example/clip" style="display:block;width:300px;height:80px">clipped</a></div>
</body></html>"""


def test_an_image_in_an_inline_link_is_boxed_whole_a_wrapped_link_by_its_lines():
    xpaths = {
        1: "/html/body/table/tbody/tr/td/a",
        2: "/html/body/p/a",
        3: "/html/body/div/a",
    }
    result = render_preview(SHAPES, "desktop", xpaths, scale=1, picture=False)

    # The hero: the whole 300×150 image at (40, 0), not the inline <a>'s 20 px line.
    assert off(union(result.boxes[1]), [40, 0, 300, 150]) <= 1
    # The wrapped link: one box per line, each a line high, not one over the paragraph.
    lines = result.boxes[2]
    assert len(lines) >= 2
    assert all(14 <= h <= 20 for _, _, _, h in lines)  # a line: 20 px at most
    assert lines[1][1] >= lines[0][1] + 18
    assert all(x >= 40 and x + w <= 240.5 for x, _, w, _ in lines)
    # Clipped by its 100×30 container: drawn only there.
    (clipped,) = result.boxes[3]
    top = clipped[1]
    assert off(clipped, [40, top, 100, 30]) <= 0.5


def test_the_render_preview_command_prints_the_contract(browser, tmp_path):
    email = tmp_path / "email.html"
    email.write_text(SHAPES + '<!--[if mso]><a href="https://shop.example/hero">x</a><![endif]-->')
    out = subprocess.run(
        [sys.executable, "manage.py", "render_preview", str(email), "--device", "mobile", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out)

    assert data["context"] == {
        "viewport": {"width": 390, "height": 844},
        "device_scale_factor": 1,
        "is_mobile": True,
    }
    rows = inventory_links(SHAPES)
    assert [link["xpath"] for link in data["links"]] == [
        r.xpath for r in inventory_links(email.read_text())
    ]
    assert len(data["links"]) == len(rows) + 1
    assert "data:image/gif" in data["html"]
    # Loaded again in that context, the document lays the links out where the boxes say.
    opts = {
        "viewport": data["context"]["viewport"],
        "device_scale_factor": 1,
        "is_mobile": True,
        "has_touch": True,
        "java_script_enabled": False,
    }
    context = browser.new_context(**opts)
    context.route("**/*", block_network)
    page = context.new_page()
    page.set_content(data["html"], wait_until="load")
    truth = page.evaluate(TRUTH_JS, {str(i): link["xpath"] for i, link in enumerate(data["links"])})
    context.close()
    for i, link in enumerate(data["links"][:2]):  # (the third is clipped, which TRUTH_JS is not)
        assert off(union(link["boxes"]), truth[str(i)]) <= TOL, link
    # The Outlook-only copy is shown on its visible twin, the hero.
    assert data["links"][-1]["boxes"] == data["links"][0]["boxes"]


def test_render_preview_says_what_is_wrong_with_a_missing_file(tmp_path):
    run = subprocess.run(
        [sys.executable, "manage.py", "render_preview", str(tmp_path / "nope.html"), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "no such file" in run.stderr
    assert run.stdout == ""


CLIPPING = f"""<!doctype html><html><head><meta name="viewport" content="width=device-width">
<style>body {{ margin: 0; font: 16px/20px Arial, sans-serif }} p {{ margin: 0 }}</style>
</head><body>
<div style="max-height:0;overflow:hidden"><a href="https://shop.example/menu">Menu</a></div>
<p style="height:20px"><span style="overflow:hidden"><a href="https://shop.example/x"
 style="display:inline-block;width:50px;height:20px">x</a></span></p>
<div style="overflow:hidden;width:60px;height:20px"><div style="position:absolute;top:100px;
 left:100px"><a href="https://shop.example/abs" style="display:block;width:80px;height:10px"
 ></a></div></div>
<p style="margin-top:200px"><a href="https://shop.example/v" style="visibility:hidden">hidden
 <img src="{GIF}" width="30" height="15" style="visibility:visible;vertical-align:top"></a></p>
<p><a href="https://shop.example/gone" style="visibility:hidden">gone</a></p>
</body></html>"""


def test_clipping_follows_what_chromium_paints():
    xpaths = {
        1: "/html/body/div[1]/a",  # a collapsed menu: hidden by its container
        2: "/html/body/p[1]/span/a",  # overflow on an inline box clips nothing
        3: "/html/body/div[2]/div/a",  # absolutely positioned: out of the div's clip
        4: "/html/body/p[2]/a",  # hidden, but what it holds shows
        5: "/html/body/p[3]/a",  # hidden, holding nothing that shows
    }
    boxes = render_preview(CLIPPING, "desktop", xpaths, scale=1, picture=False).boxes

    assert boxes[1] == []
    assert off(union(boxes[2]), [0, 0, 50, 20]) <= 0.5
    assert off(union(boxes[3]), [100, 100, 80, 10]) <= 0.5
    image = union(boxes[4])
    assert image[2] >= 30 and image[3] >= 15 and image[1] >= 240  # the image, and its line
    assert boxes[5] == []
