"""Preview rendering: an email as Chromium lays it out, and where each link sits in it.

The click map's picture (README, "The click map"). ``render_preview`` loads tenant HTML
into Debian's Chromium (driven by Playwright) for a desktop or mobile viewport, takes a full-page
screenshot and measures link boxes in the same page, so the overlay and the picture
always agree.

Isolation. Tenant HTML is hostile input. The page runs with JavaScript off, every
request but ``data:`` URLs is aborted before it leaves the browser, and Chromium is
launched behind a dead proxy with no working DNS, so not even a preconnect reaches a
host (no SSRF). Images are swapped *in the HTML* (``placeholder_images``): those the
server fetched and verified beforehand (campaigns/version_images.py) become data: URLs
of their stored bytes, the others grey placeholders of their declared size, so the
layout holds and nothing is fetched. Only attribute values and ``<style>`` text
change, never the element structure, so inventory xpaths (campaigns/inventory.py)
still select the same elements.

One Chromium per process, started lazily on a dedicated thread (sync Playwright objects
belong to the thread that made them), reused across renders, restarted when it died.
Renders are serialised: callers from any thread (Celery worker, web request) queue.
"""

import atexit
import base64
import contextlib
import html as html_lib
import io
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import quote

from PIL import Image

from campaigns.images import CSS_URL, attribute_value, css_url_target, is_image_element
from campaigns.linktags import iter_start_tags

log = logging.getLogger(__name__)

CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Links of a "Preview for" render carry this href, then the TemplateLink id.
MARKER_PREFIX = "https://cm-link.invalid/"
DEFAULT_TIMEOUT = 30.0  # seconds for one render
# Largest screenshot in device pixels (about 100 MB of RGBA while it is encoded);
# beyond it the scale drops towards 1, then the picture is cut at the bottom.
MAX_PIXELS = 24_000_000
MIME = "image/png"

_BASE_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--mute-audio",
    # Defence in depth behind the request interception: a dead proxy for every host
    # (loopback included) and no name resolution, for what interception never sees
    # (preconnect, DNS prefetch).
    "--proxy-server=socks5://127.0.0.1:1",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--dns-prefetch-disable",
]


@dataclass(frozen=True)
class Device:
    name: str
    width: int  # viewport, CSS px
    height: int
    scale: float  # device pixel ratio
    mobile: bool
    user_agent: str | None = None


DEVICES = {
    "desktop": Device("desktop", 1280, 800, 1.0, False),
    "mobile": Device(
        "mobile",
        390,
        844,
        3.0,
        True,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    ),
}

Box = tuple[float, float, float, float]  # x, y, width, height in CSS px of the document


@dataclass(frozen=True)
class RenderResult:
    """A rendered preview. ``width``/``height`` are the picture's size in CSS pixels;
    the image is ``scale`` times that in pixels. ``boxes`` maps each link id to its
    boxes (x, y, width, height) in the same CSS pixels, top left of the document at
    0, 0: empty when the link is not displayed, several for a link in a loop."""

    image: bytes
    mime: str
    width: int
    height: int
    scale: float
    boxes: dict[int, list[Box]]
    render_ms: int
    html: str = ""  # the document exactly as Chromium loaded it


class RenderError(RuntimeError):
    """The preview could not be rendered; the message says why, for the page."""


def context_options(device: str, scale: float | None = None) -> dict:
    """Playwright browser-context options of a device (``scale`` overrides its ratio).
    JavaScript is off: tenant HTML never runs code in the preview browser."""
    profile = _device(device)
    options = {
        "viewport": {"width": profile.width, "height": profile.height},
        "device_scale_factor": profile.scale if scale is None else scale,
        "is_mobile": profile.mobile,
        "has_touch": profile.mobile,
        "java_script_enabled": False,
        "service_workers": "block",
        "accept_downloads": False,
        "locale": "en-US",
        "timezone_id": "UTC",
    }
    if profile.user_agent:
        options["user_agent"] = profile.user_agent
    return options


def block_network(route) -> None:
    """Route handler: data: URLs load, every other request is aborted unsent."""
    if route.request.url.startswith("data:"):
        route.continue_()
    else:
        route.abort("blockedbyclient")


def render_preview(
    html: str,
    device: str,
    link_xpaths: dict[int, str] | None = None,
    *,
    marker_links: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    scale: float | None = None,
    picture: bool = True,
    images: Mapping[str, tuple[str, bytes]] | None = None,
) -> RenderResult:
    """Render ``html`` for ``device`` ('desktop' or 'mobile') and measure link boxes.

    ``link_xpaths`` maps link ids to xpaths of the HTML's tree (Outlook-only rows,
    whose xpath holds ``#mso``, get no boxes: Chromium does not show them). With
    ``marker_links`` every ``a``/``area`` whose href is ``MARKER_PREFIX<id>`` adds a
    box to link ``id``. Boxes are measured in the very page the screenshot is taken
    of, and at its pixel ratio: Chromium snaps layout to device pixels, so the same
    email can lie a few CSS px apart at ratios 1 and 3. ``scale`` fixes the ratio
    (default: the device's, lowered for wide or huge pictures). Without ``picture``
    only the boxes are measured (``image`` is empty). ``images`` are the email's
    stored images, shown in place of placeholders (see ``placeholder_images``).
    Raises RenderError (Chromium missing or crashed, timeout).
    """
    _device(device)
    prepared = placeholder_images(html, images)
    job = _RenderJob(
        prepared, device, dict(link_xpaths or {}), marker_links, timeout, scale, picture
    )
    return _CHROMIUM.call(job.run, timeout=timeout * 2 + 30)


def shutdown() -> None:
    """Stop this process's Chromium (the next render starts a new one)."""
    _CHROMIUM.stop()


def _device(device: str) -> Device:
    try:
        return DEVICES[device]
    except KeyError:
        raise ValueError(f"device must be one of {tuple(DEVICES)}, not {device!r}") from None


# ---------------------------------------------------------------------------------------
# The render itself (runs on the Chromium thread)

# Document size in CSS px, as a full-page screenshot takes it.
_SIZE_JS = """() => {
  const d = document.documentElement, b = document.body;
  return [Math.max(d.scrollWidth, b ? b.scrollWidth : 0, d.clientWidth),
          Math.max(d.scrollHeight, b ? b.scrollHeight : 0, d.clientHeight)];
}"""

# Boxes of link elements, by xpath and/or by marker href: everything the browser draws
# for a link (docs/clickmap.md, "Link boxes"). An element link's boxes are its own line
# fragments (getClientRects: a wrapped text link is its lines, not one rectangle over the
# paragraph) and the border boxes of every rendered descendant (an image inside an
# inline <a> is not inside the <a>'s own rectangle), each clipped by the ancestors whose
# overflow is not visible; empty or fully clipped ones are dropped, and boxes that lie
# inside another or mostly overlap it become their union. An <area> has no layout box of
# its own: its box is its shape's bounds on the image that uses its map.
_BOXES_JS = """([xpaths, prefix]) => {
  const sx = window.scrollX, sy = window.scrollY;
  const root = document.documentElement, body = document.body;
  const out = {};
  const maps = new Map();
  for (const img of document.querySelectorAll("img[usemap], input[usemap], object[usemap]")) {
    const name = (img.getAttribute("usemap") || "").replace(/^#/, "");
    if (name && !maps.has(name)) maps.set(name, img);
  }
  const areaBox = (area) => {
    const map = area.closest("map");
    const img = map && (maps.get(map.getAttribute("name") || "") || maps.get(map.id));
    if (!img) return [];
    const r = img.getBoundingClientRect();
    if (!r.width || !r.height) return [];
    const cs = getComputedStyle(img);
    const left = r.left + parseFloat(cs.borderLeftWidth) + parseFloat(cs.paddingLeft);
    const top = r.top + parseFloat(cs.borderTopWidth) + parseFloat(cs.paddingTop);
    const n = (area.getAttribute("coords") || "").split(/[\\s,]+/).filter(Boolean).map(Number);
    const shape = (area.getAttribute("shape") || "rect").toLowerCase();
    let x0, y0, x1, y1;
    if (shape === "default") { x0 = 0; y0 = 0; x1 = r.width; y1 = r.height; }
    else if (shape.startsWith("circ") && n.length >= 3) {
      x0 = n[0] - n[2]; y0 = n[1] - n[2]; x1 = n[0] + n[2]; y1 = n[1] + n[2];
    } else if (shape.startsWith("poly") && n.length >= 6) {
      const xs = n.filter((_, i) => i % 2 === 0), ys = n.filter((_, i) => i % 2 === 1);
      x0 = Math.min(...xs); x1 = Math.max(...xs); y0 = Math.min(...ys); y1 = Math.max(...ys);
    } else if (n.length >= 4) {
      x0 = Math.min(n[0], n[2]); x1 = Math.max(n[0], n[2]);
      y0 = Math.min(n[1], n[3]); y1 = Math.max(n[1], n[3]);
    } else return [];
    if (n.some(Number.isNaN) || x1 <= x0 || y1 <= y0) return [];
    return [[left + x0 + sx, top + y0 + sy, x1 - x0, y1 - y0]];
  };
  // The part of the page an element's boxes can show in: the intersection of the padding
  // boxes of the ancestors that clip it: block-level ones whose overflow is not visible,
  // on its chain of containing blocks (an absolutely positioned box escapes the clipping
  // of ancestors inside its containing block, a fixed one all of it). The root and body
  // pass their overflow to the viewport, which the full-page picture does not clip.
  const containingBlock = (el) => {
    for (let a = el.parentElement; a && a !== root; a = a.parentElement) {
      const cs = getComputedStyle(a);
      if (cs.position !== "static" || cs.transform !== "none" || cs.filter !== "none") return a;
    }
    return root;
  };
  const clipOf = (el) => {
    let clip = null, until = null;
    const skip = (node) => {
      const position = getComputedStyle(node).position;
      if (position === "fixed") return "fixed";
      if (position === "absolute") until = containingBlock(node);
      return null;
    };
    if (skip(el) === "fixed") return null;
    for (let a = el.parentElement; a && a !== root && a !== body; a = a.parentElement) {
      if (until && a !== until) { if (skip(a) === "fixed") break; continue; }
      until = null;
      const cs = getComputedStyle(a);
      const clips = cs.display !== "inline" && cs.display !== "contents" &&
        (cs.overflowX !== "visible" || cs.overflowY !== "visible");
      if (clips) {
        const r = a.getBoundingClientRect();
        const left = r.left + a.clientLeft, top = r.top + a.clientTop;
        const own = [
          cs.overflowX === "visible" ? -Infinity : left,
          cs.overflowY === "visible" ? -Infinity : top,
          cs.overflowX === "visible" ? Infinity : left + a.clientWidth,
          cs.overflowY === "visible" ? Infinity : top + a.clientHeight,
        ];
        clip = clip ? [Math.max(clip[0], own[0]), Math.max(clip[1], own[1]),
                       Math.min(clip[2], own[2]), Math.min(clip[3], own[3])] : own;
      }
      if (skip(a) === "fixed") break;
    }
    return clip;
  };
  const shown = (el) => {
    const cs = getComputedStyle(el);
    return cs.display !== "none" && cs.visibility !== "hidden";
  };
  const rectsOf = (el, found) => {
    const clip = clipOf(el);
    for (const r of el.getClientRects()) {
      let x0 = r.left, y0 = r.top, x1 = r.right, y1 = r.bottom;
      if (clip) {
        x0 = Math.max(x0, clip[0]); y0 = Math.max(y0, clip[1]);
        x1 = Math.min(x1, clip[2]); y1 = Math.min(y1, clip[3]);
      }
      if (x1 - x0 > 0 && y1 - y0 > 0) found.push([x0 + sx, y0 + sy, x1 - x0, y1 - y0]);
    }
  };
  const inside = (a, b) => a[0] >= b[0] - 0.5 && a[1] >= b[1] - 0.5 &&
    a[0] + a[2] <= b[0] + b[2] + 0.5 && a[1] + a[3] <= b[1] + b[3] + 0.5;
  const boxes = (node) => {
    if (!node || node.nodeType !== 1) return [];
    if (node.localName === "area") return areaBox(node);
    const held = [], found = [];
    for (const d of node.querySelectorAll("*")) if (shown(d)) rectsOf(d, held);
    // A hidden link draws its own line boxes only around what it holds that shows.
    if (getComputedStyle(node).visibility !== "hidden" || held.length) rectsOf(node, found);
    found.push(...held);
    // Boxes that mostly overlap are one shape (an image and the line box of the inline
    // <a> around it); lines of a wrapped link, which touch or barely overlap, stay apart.
    const area = (b) => b[2] * b[3];
    const span = (a0, a1, b0, b1) => Math.max(0, Math.min(a1, b1) - Math.max(a0, b0));
    const overlap = (a, b) => span(a[0], a[0] + a[2], b[0], b[0] + b[2]) *
      span(a[1], a[1] + a[3], b[1], b[1] + b[3]);
    let merged = true;
    while (merged) {
      merged = false;
      for (let i = 0; i < found.length && !merged; i++) {
        for (let j = i + 1; j < found.length && !merged; j++) {
          const a = found[i], b = found[j];
          if (inside(a, b) || inside(b, a) || overlap(a, b) * 2 >= Math.min(area(a), area(b))) {
            const x0 = Math.min(a[0], b[0]), y0 = Math.min(a[1], b[1]);
            found[i] = [x0, y0, Math.max(a[0] + a[2], b[0] + b[2]) - x0,
                        Math.max(a[1] + a[3], b[1] + b[3]) - y0];
            found.splice(j, 1);
            merged = true;
          }
        }
      }
    }
    return found;
  };
  const add = (id, found) => { (out[id] = out[id] || []).push(...found); };
  for (const [id, xpath] of Object.entries(xpaths)) {
    let node = null;
    try {
      node = document.evaluate(
        xpath, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;
    } catch (e) { node = null; }
    add(id, boxes(node));
  }
  if (prefix) {
    for (const link of document.querySelectorAll("a[href], area[href]")) {
      const href = (link.getAttribute("href") || "").trim();
      if (!href.startsWith(prefix)) continue;
      const id = href.slice(prefix.length);
      if (/^[0-9]+$/.test(id)) add(id, boxes(link));
    }
  }
  return out;
}"""


@dataclass
class _RenderJob:
    html: str
    device: str
    link_xpaths: dict[int, str]
    marker_links: bool
    timeout: float
    scale: float | None = None
    picture: bool = True

    def run(self, pages: "_Pages") -> RenderResult:
        started = time.perf_counter()
        profile = DEVICES[self.device]
        scale = self.scale or profile.scale
        page = None
        try:
            page = pages.open(self.device, scale, self.timeout)
            page.set_content(self.html, wait_until="load")
            doc_width, doc_height = page.evaluate(_SIZE_JS)
            wanted = self.scale or _fitting_scale(profile, doc_width, doc_height)
            if wanted != scale:
                # The scale is a context option: lay out again (same CSS size) at it.
                pages.release(page)
                page, scale = None, wanted
                page = pages.open(self.device, scale, self.timeout)
                page.set_content(self.html, wait_until="load")
                doc_width, doc_height = page.evaluate(_SIZE_JS)
            shot, cut = None, False
            if self.picture:
                max_height = int(MAX_PIXELS / (max(doc_width, 1) * scale * scale))
                clip = None
                if doc_height > max_height:
                    clip = {"x": 0, "y": 0, "width": doc_width, "height": max_height}
                    cut = True
                shot = page.screenshot(
                    full_page=True, clip=clip, type="png", animations="disabled", caret="hide"
                )
            xpaths = {
                str(link_id): xpath
                for link_id, xpath in self.link_xpaths.items()
                if "#mso" not in xpath
            }
            found = page.evaluate(_BOXES_JS, [xpaths, MARKER_PREFIX if self.marker_links else ""])
        except Exception as error:
            if page is not None:
                pages.release(page, broken=True)
            raise _render_error(error) from error
        pages.release(page)
        if shot is None:
            image, width, height = b"", doc_width, doc_height
        else:
            image, pixel_width, pixel_height = _optimised_png(shot)
            width = round(pixel_width / scale)
            height = round(pixel_height / scale)
        boxes: dict[int, list[Box]] = {int(link_id): [] for link_id in self.link_xpaths}
        for link_id, found_boxes in found.items():
            boxes[int(link_id)] = [
                tuple(round(v, 2) for v in b)
                for b in found_boxes
                if not cut or b[1] < height  # below a cut picture: not in it
            ]
        return RenderResult(
            image=image,
            mime=MIME,
            width=width,
            height=height,
            scale=scale,
            boxes=boxes,
            render_ms=round((time.perf_counter() - started) * 1000),
            html=self.html,
        )


def _fitting_scale(profile: Device, doc_width: float, doc_height: float) -> float:
    """The pixel ratio to shoot at: the device's, lowered when a phone would zoom a
    wide email out to its screen width, and to keep the picture within MAX_PIXELS."""
    scale = profile.scale
    if profile.mobile and doc_width > profile.width:
        scale = max(1.0, round(scale * profile.width / doc_width, 2))
    area = max(doc_width, 1) * max(doc_height, 1)
    if area * scale * scale > MAX_PIXELS:
        scale = max(1.0, int((MAX_PIXELS / area) ** 0.5 * 100) / 100)
    return scale


def _optimised_png(png: bytes) -> tuple[bytes, int, int]:
    """The screenshot as a 256-colour PNG (about a third of the size; max-coverage
    quantisation keeps text edges within a few levels of the original), or as it
    was when that is not smaller."""
    with Image.open(io.BytesIO(png)) as shot:
        shot.load()
        size = shot.size
        rgb = shot.convert("RGB")
    palette = rgb.quantize(256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, "PNG", compress_level=7)  # 9 or optimize: 5-10x slower, 10 % smaller
    data = out.getvalue()
    return (data if len(data) < len(png) else png), size[0], size[1]


def _render_error(error: Exception) -> RenderError:
    text = _first_line(error)
    if type(error).__name__ == "TimeoutError" or "Timeout" in text:
        return RenderError("Rendering took too long and was stopped.")
    if "closed" in text.lower() or "crash" in text.lower():
        return RenderError(f"Chromium stopped while rendering ({text}).")
    return RenderError(f"Chromium could not render the email ({text}).")


def _close_quietly(context) -> None:
    with contextlib.suppress(Exception):  # the browser may be gone; it is restarted
        context.close()


# ---------------------------------------------------------------------------------------
# Placeholder images

_STYLE_END = re.compile(r"</style[\t\n\f\r />]", re.IGNORECASE)
_LENGTH = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:px)?\s*\Z", re.IGNORECASE)
_CSS_SIZE = re.compile(r"(?<![\w-])(width|height)\s*:\s*(\d+(?:\.\d+)?)px", re.IGNORECASE)
DEFAULT_IMAGE_SIZE = (200, 100)
_MAX_SIDE = 4096
PLACEHOLDER_FILL, _BACKGROUND, _ICON = "#dfe3e8", "#c9ced6", "#98a2b3"
# Background images: a plain grey, sized to whatever it fills (no intrinsic size).
_BACKGROUND_URL = "data:image/svg+xml," + quote(
    f'<svg xmlns="http://www.w3.org/2000/svg"><rect width="100%" height="100%" '
    f'fill="{_BACKGROUND}"/></svg>',
    safe="",
)


def placeholder_images(html: str, images: Mapping[str, tuple[str, bytes]] | None = None) -> str:
    """``html`` with nothing left to fetch that shows.

    ``images`` maps an image source as written in ``html`` (its value as the browser
    reads it, as campaigns.images.image_sources lists it) to a stored image's (MIME
    type, bytes): that source becomes a data: URL of those bytes wherever it appears
    (``img``/``input type=image`` ``src``, ``amp-img``, ``background`` attributes, CSS
    ``url()``). Every other ``img``/``input type=image`` source not a data: URL
    becomes a grey placeholder of the image's declared size (width/height
    attributes, else inline CSS pixels; a 2:1 box when one side is missing,
    ``DEFAULT_IMAGE_SIZE`` when both are), other CSS ``url()`` in ``style``
    attributes and ``<style>`` a grey fill, as do ``background`` attributes;
    ``srcset`` is emptied; AMP's hide-until-loaded boilerplate is emptied and
    ``amp-img`` gets a box of its size; ``meta http-equiv`` (refresh), ``link rel``
    (preconnect, prefetch) and frame sources are neutralised.

    Only attribute values and ``<style>`` text change (Outlook-only comment bodies
    are left alone), so the element tree, and every xpath in it, is unchanged.
    """
    stored = _DataUrls(images or {})
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), ascending

    def set_value(attrs, name: str, value: str) -> None:
        start, end, quote_char = attrs[name]
        edits.append((start, end, _quoted(value, quote_char)))

    for tag in iter_start_tags(html):
        if tag.mso or tag.raw_text:
            continue
        name = tag.name
        attrs = tag.attributes(html)
        if name == "style":
            if "amp4email-boilerplate" in attrs or "amp-boilerplate" in attrs:
                close = _STYLE_END.search(html, tag.end)
                edits.append((tag.end, close.start() if close else len(html), ""))
            else:
                _style_text_edits(html, tag.end, edits, stored)
        style = None  # the style attribute's new value, if it changes
        if "style" in attrs:
            start, end, _quote = attrs["style"]
            if html[start:end] != (css := _css_images(html[start:end], stored, escaped=True)):
                style = css
        if name in ("amp-img", "amp-anim"):
            width, height = _declared_size(html, attrs)
            fill = stored.get(_value(html, attrs, "src")) or _placeholder_url(width, height)
            box = _amp_image_style(_value(html, attrs, "layout"), width, height, fill)
            if "style" in attrs:
                start, end, _quote = attrs["style"]
                style = box + (style if style is not None else html[start:end])
            else:
                edits.append((tag.name_end, tag.name_end, f' style="{box}"'))
        elif is_image_element(name, html, attrs):
            src = _value(html, attrs, "src")
            if "src" in attrs and not _is_data_url(src):
                shown = stored.get(src) or _placeholder_url(*_declared_size(html, attrs))
                set_value(attrs, "src", shown)
            if "srcset" in attrs:
                set_value(attrs, "srcset", "")
        elif name == "source" and "srcset" in attrs:
            set_value(attrs, "srcset", "")
        elif name in ("iframe", "frame") and "src" in attrs:
            set_value(attrs, "src", "about:blank")
        elif name == "meta" and "http-equiv" in attrs:
            set_value(attrs, "http-equiv", "")
        elif name == "link" and "rel" in attrs:
            set_value(attrs, "rel", "")
        elif name in ("video", "audio") and "src" in attrs:
            set_value(attrs, "src", "")
        if "poster" in attrs:
            set_value(attrs, "poster", "")
        background = _value(html, attrs, "background")
        if "background" in attrs and not _is_data_url(background):
            set_value(attrs, "background", stored.get(background) or _BACKGROUND_URL)
        if style is not None:
            set_value(attrs, "style", style)
    if not edits:
        return html
    edits.sort(key=lambda edit: (edit[0], edit[1]))
    parts, pos = [], 0
    for start, end, replacement in edits:
        if start < pos:
            continue  # two edits of one span: the first wins
        parts.append(html[pos:start])
        parts.append(replacement)
        pos = end
    parts.append(html[pos:])
    return "".join(parts)


_value = attribute_value  # an attribute's value as the browser reads it


class _DataUrls:
    """Stored images as data: URLs, each encoded once, on first use."""

    def __init__(self, images: Mapping[str, tuple[str, bytes]]):
        self.images = images
        self.urls: dict[str, str] = {}

    def get(self, src: str) -> str | None:
        if src not in self.urls:
            if src not in self.images:
                return None
            mime, data = self.images[src]
            self.urls[src] = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        return self.urls[src]


def _is_data_url(value: str) -> bool:
    return value.lower().startswith("data:")


def _declared_size(source: str, attrs: dict) -> tuple[int, int]:
    sizes = {}
    for side in ("width", "height"):
        match = _LENGTH.match(_value(source, attrs, side))
        if match:
            sizes[side] = float(match.group(1))
    for side, value in _CSS_SIZE.findall(_value(source, attrs, "style")):
        sizes.setdefault(side.lower(), float(value))
    width, height = sizes.get("width"), sizes.get("height")
    if width and not height:
        height = width / 2
    elif height and not width:
        width = height * 2
    elif not width:
        width, height = DEFAULT_IMAGE_SIZE
    return (
        max(1, min(_MAX_SIDE, round(width))),
        max(1, min(_MAX_SIDE, round(height))),
    )


def _placeholder_url(width: int, height: int) -> str:
    # No viewBox: scaled by CSS, the grey fills the box and the icon stays centred.
    icon = ""
    if min(width, height) >= 32:
        icon = (
            '<svg x="50%" y="50%" overflow="visible"><g transform="translate(-12 -12)" '
            f'fill="none" stroke="{_ICON}" stroke-width="1.5" stroke-linejoin="round">'
            '<rect x="2.5" y="4.5" width="19" height="15" rx="2"/>'
            '<circle cx="8.5" cy="9.5" r="1.75"/><path d="M3 17l5.5-5 4 3.5 3-2.5 5.5 4.5"/>'
            "</g></svg>"
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<rect width="100%" height="100%" fill="{PLACEHOLDER_FILL}"/>{icon}</svg>'
    )
    return "data:image/svg+xml," + quote(svg, safe="")


def _quoted(value: str, quote_char: str | None) -> str:
    """An attribute's new value as written in place of the old one (``quote_char`` as
    in SourceTag.attributes): quoted when the old one was bare or unquoted."""
    if quote_char:
        return value  # the values written here hold no quotes
    return f'="{value}"' if quote_char is None else f'"{value}"'


def _css_images(css: str, stored: _DataUrls, escaped: bool = False) -> str:
    """``css`` with each ``url()`` that is not a data: URL replaced by its stored image,
    else a grey fill (``escaped``: the CSS is an HTML attribute value, character
    references and all)."""

    def replace(match: re.Match) -> str:
        inner = html_lib.unescape(match.group(1)) if escaped else match.group(1)
        target = css_url_target(inner)
        if _is_data_url(target):
            return match.group(0)
        return f"url({stored.get(target) or _BACKGROUND_URL})"

    return CSS_URL.sub(replace, css)


def _style_text_edits(source: str, start: int, edits: list, stored: _DataUrls) -> None:
    close = _STYLE_END.search(source, start)
    end = close.start() if close else len(source)
    css = source[start:end]
    if (replaced := _css_images(css, stored)) != css:
        edits.append((start, end, replaced))


def _amp_image_style(layout: str, width: int, height: int, image_url: str) -> str:
    # Without the AMP runtime amp-img stays empty: give it its box and its image.
    fill = f"background:url({image_url}) center/100% 100% no-repeat;"
    if layout.lower() in ("responsive", "intrinsic", "fill", "flex-item"):
        return f"display:block;width:100%;max-width:100%;aspect-ratio:{width}/{height};{fill}"
    return f"display:inline-block;width:{width}px;height:{height}px;{fill}"


# ---------------------------------------------------------------------------------------
# The process's Chromium


class _Pages:
    """The process's Chromium and one warm page per device at the device's own scale:
    opening a page costs about 200 ms, a fresh about:blank document 50. A warm page is
    reused across renders (and tenants): with scripts off and nothing fetched, no state
    passes from one render to the next but the document, which is replaced. Pages at
    other scales, and any page a render failed in, are closed after use."""

    def __init__(self, browser):
        self.browser = browser
        self._warm: dict[str, object] = {}

    def open(self, device: str, scale: float, timeout: float):
        warm = scale == DEVICES[device].scale
        page = self._warm.get(device) if warm else None
        if page is not None and not page.is_closed():
            page.context.set_default_timeout(timeout * 1000)
            # A new document: the last one's viewport meta and zoom would carry over.
            page.goto("about:blank")
            return page
        context = self.browser.new_context(**context_options(device, scale))
        context.set_default_timeout(timeout * 1000)
        context.route("**/*", block_network)
        page = context.new_page()
        if warm:
            self._warm[device] = page
        return page

    def release(self, page, broken: bool = False) -> None:
        warm = page in self._warm.values()
        if warm and not broken:
            return
        if warm:
            self._warm = {k: v for k, v in self._warm.items() if v is not page}
        _close_quietly(page.context)


class _Chromium:
    """One Chromium for the process, driven from its own thread; jobs run one at a time."""

    def __init__(self):
        self._lock = threading.Lock()  # one caller at a time
        self._jobs: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._pid = None

    def call(self, fn: Callable[["_Pages"], object], timeout: float):
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._start()
            future: Future = Future()
            self._jobs.put((fn, future))
            try:
                return future.result(timeout=timeout)
            except FutureTimeout:
                # The thread is stuck in Chromium: abandon it, the next call starts anew.
                self._jobs.put(None)
                self._thread = None
                raise RenderError("Rendering took too long and was stopped.") from None

    def stop(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                self._jobs.put(None)
                self._thread.join(timeout=30)
            self._thread = None

    def _start(self) -> None:
        self._jobs = queue.Queue()
        self._pid = os.getpid()
        self._thread = threading.Thread(
            target=self._serve, args=(self._jobs,), name="clickmap-chromium", daemon=True
        )
        self._thread.start()

    @staticmethod
    def _serve(jobs: queue.Queue) -> None:
        playwright = browser = pages = None
        try:
            while True:
                job = jobs.get()
                if job is None:
                    return
                fn, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    if browser is None or not browser.is_connected():
                        playwright, browser = _launch(playwright)
                        pages = _Pages(browser)
                    future.set_result(fn(pages))
                except BaseException as error:  # handed to the caller
                    future.set_exception(error)
        finally:
            _stop_quietly(browser, playwright)


def _stop_quietly(browser, playwright) -> None:
    for stop in (browser and browser.close, playwright and playwright.stop):
        if stop:
            with contextlib.suppress(Exception):  # already gone, or going
                stop()


def _launch(playwright):
    """(playwright, browser): Chromium started afresh, and Playwright's driver too when
    it is not running. Raises RenderError saying why Chromium cannot start."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM_PATH):
        raise RenderError(
            f"Chromium is not installed at {CHROMIUM_PATH} "
            "(install Debian's chromium package, or set CHROMIUM_PATH)."
        )
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    # Chromium refuses its sandbox as root; elsewhere it is tried first.
    attempts = [["--no-sandbox"]] if root else [[], ["--no-sandbox"]]
    problem = ""
    for sandbox_args in attempts:
        try:
            if playwright is None:
                playwright = sync_playwright().start()
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM_PATH, args=sandbox_args + _BASE_ARGS
            )
        except Exception as error:
            problem = _first_line(error)
            log.warning("Chromium did not start (%s)", problem)
            _stop_quietly(None, playwright)  # a dead driver is replaced too
            playwright = None
            continue
        if sandbox_args and not root:
            log.warning("Chromium runs without its sandbox: the sandbox could not start")
        log.info("Started Chromium %s for previews", browser.version)
        return playwright, browser
    raise RenderError(f"Chromium could not be started ({problem}).")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


_CHROMIUM = _Chromium()
atexit.register(shutdown)
