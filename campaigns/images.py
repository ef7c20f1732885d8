"""An email's images: where its HTML names them, and what makes bytes a safe image.

Pure functions: no database, no network (campaigns/imagefetch.py fetches,
campaigns/version_images.py stores).

Where. ``image_sources`` lists what a browser would load as an image: the ``src`` of
``img``, ``input type=image`` and AMP's ``amp-img``/``amp-anim``, ``background=``
attributes, and CSS ``url()`` in ``background``/``background-image`` declarations of
``style`` attributes and ``<style>`` blocks. It walks the same start tags as the
preview's ``clickmap.render.placeholder_images``, which swaps each of them for the
stored image or a placeholder: the two agree on what a source is (its value as the
browser reads it: character references decoded, surrounding spaces trimmed).
Outlook-only comment bodies are skipped, as the preview skips them.

What. ``verify_image`` decodes the bytes with Pillow (PNG, JPEG, GIF, WebP only; a
decompression bomb, a corrupt file, SVG and anything else are refused) and re-encodes
the first frame: no byte of the original reaches a browser.
"""

import html as html_lib
import io
import posixpath
import re
import warnings
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

from PIL import Image, ImageOps

from campaigns.linktags import iter_start_tags

# Bytes of one image, fetched or uploaded.
MAX_BYTES = 5 * 1024 * 1024
# Pixels of one image (about 5000 × 5000). Pillow's own bomb check starts at 89
# million; this one is lower and explicit, and decoding never starts above it.
MAX_PIXELS = 25_000_000
# A re-encoded image can outgrow its original (a GIF's palette as PNG's RGB).
MAX_STORED_BYTES = 2 * MAX_BYTES
# Distinct image sources kept per template version (both parts together).
MAX_IMAGES_PER_VERSION = 100

# Content types the fetcher accepts, and Pillow's decoders that may open the bytes.
ACCEPTED_TYPES = frozenset(
    {"image/png", "image/apng", "image/jpeg", "image/jpg", "image/pjpeg", "image/gif", "image/webp"}
)
_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")

CSS_URL = re.compile(r"url\(([^)]*)\)", re.IGNORECASE)
_CSS_PROPERTY = re.compile(r"([-\w]+)\s*:[^;{}]*\Z")
_BACKGROUND_PROPERTIES = frozenset({"background", "background-image"})
_AMP_BOILERPLATE = frozenset({"amp4email-boilerplate", "amp-boilerplate"})
_STYLE_END = re.compile(r"</style[\t\n\f\r />]", re.IGNORECASE)
_SVG_REFUSED = "SVG is not accepted: it is not a raster image and can carry scripts."
_SVG_START = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*(?:<\?xml|<!--|<!doctype\s+svg|<svg)", re.I)


class ImageRefused(Exception):
    """An image that is not shown: ``code`` names the rule (for tests and filters),
    ``message`` says why, for the version page."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class VerifiedImage:
    """An image decoded and re-encoded: ``data`` is a PNG or JPEG of ``mime``."""

    data: bytes
    mime: str
    width: int
    height: int


# --- Where the HTML names its images -------------------------------------------------------


def image_sources(html: str) -> list[str]:
    """Every image source of ``html`` the browser would load, once each, in source
    order; data: URLs left out (they are inline already). A source is the value as
    the browser reads it (character references decoded, spaces trimmed)."""
    found: dict[str, None] = {}

    def add(value: str) -> None:
        if value and not value.lower().startswith("data:"):
            found.setdefault(value, None)

    for tag in iter_start_tags(html):
        if tag.mso or tag.raw_text:
            continue
        attrs = tag.attributes(html)
        if tag.name == "style" and not (_AMP_BOILERPLATE & attrs.keys()):
            close = _STYLE_END.search(html, tag.end)
            for url in css_image_urls(html[tag.end : close.start() if close else len(html)]):
                add(url)
        if "style" in attrs:
            for url in css_image_urls(attribute_value(html, attrs, "style")):
                add(url)
        if is_image_element(tag.name, html, attrs):
            add(attribute_value(html, attrs, "src"))
        if "background" in attrs:
            add(attribute_value(html, attrs, "background"))
    return list(found)


def is_image_element(name: str, source: str, attrs: dict) -> bool:
    """True for the elements whose ``src`` is an image: ``img``, ``input type=image``,
    ``amp-img`` and ``amp-anim``."""
    if name == "input":
        return attribute_value(source, attrs, "type").lower() == "image"
    return name in ("img", "amp-img", "amp-anim")


def attribute_value(source: str, attrs: dict, name: str) -> str:
    """An attribute's value as the browser reads it (``attrs`` from SourceTag.attributes)."""
    if name not in attrs:
        return ""
    start, end, _quote = attrs[name]
    return html_lib.unescape(source[start:end]).strip()


def css_url_target(inner: str) -> str:
    """The URL of a CSS ``url(…)``, given what sits between its parentheses."""
    return inner.strip().strip("'\"").strip()


def css_image_urls(css: str) -> list[str]:
    """URLs of ``url()`` in ``background``/``background-image`` declarations of ``css``
    (fonts, ``@import`` and the like are not images of the email)."""
    urls = []
    for match in CSS_URL.finditer(css):
        start = max(css.rfind(";", 0, match.start()), css.rfind("{", 0, match.start())) + 1
        declaration = _CSS_PROPERTY.search(css, start, match.start())
        if declaration and declaration.group(1).lower() in _BACKGROUND_PROPERTIES:
            urls.append(css_url_target(match.group(1)))
    return urls


def base_href(html: str) -> str:
    """The document's ``<base href>`` (the first one, as browsers take it), or ""."""
    for tag in iter_start_tags(html):
        if tag.name == "base" and not tag.mso and not tag.raw_text:
            attrs = tag.attributes(html)
            if "href" in attrs:
                return attribute_value(html, attrs, "href")
    return ""


def asset_path(src: str) -> str | None:
    """The uploaded file a relative ``src`` names (``./images/a%20b.png`` ->
    ``images/a b.png``), or None for a URL with a scheme, a host or an absolute path.
    Query and fragment are dropped; ``..`` is resolved (a path that climbs above the
    HTML's folder keeps its leading ``../``, and no upload has such a name)."""
    parts = urlsplit(src)
    if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
        return None
    return normalised_path(unquote(parts.path))


def normalised_path(path: str) -> str:
    """A relative file path in one spelling: forward slashes, ``.`` and ``..`` resolved."""
    return posixpath.normpath(path.replace("\\", "/"))


def remote_url(src: str, base: str = "") -> str | None:
    """The http(s) URL ``src`` loads (resolved against ``base`` when relative), or None
    when it names no web address (a relative path with no base, ``cid:``, ``file:``…).
    A scheme-relative ``//host/x`` is taken as https."""
    url = urljoin(base, src) if base else src
    if url.startswith("//"):
        url = "https:" + url
    scheme = urlsplit(url).scheme.lower()
    return url if scheme in ("http", "https") else None


def asset_images(html: str, assets: dict[str, bytes]) -> dict[str, tuple[str, bytes]]:
    """The images of ``html`` that ``assets`` (relative path as written -> bytes, as
    template_create takes them) holds, verified and re-encoded: source as written ->
    (MIME type, bytes), ready for clickmap.render's ``images``. Sources with no file,
    or whose file is refused, are left out (the preview shows their placeholder)."""
    files = {normalised_path(path): data for path, data in assets.items()}
    shown = {}
    for src in image_sources(html):
        path = asset_path(src)
        if path is not None and path in files:
            try:
                image = verify_image(files[path])
            except ImageRefused:
                continue
            shown[src] = (image.mime, image.data)
    return shown


# --- What makes bytes a safe image ------------------------------------------------------


def content_type_refusal(content_type: str | None) -> ImageRefused | None:
    """Why a response of ``content_type`` is not read as an image, or None."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime == "image/svg+xml":
        return ImageRefused("svg", _SVG_REFUSED)
    if mime in ACCEPTED_TYPES:
        return None
    if mime.startswith("image/"):
        return ImageRefused("unsupported", f"{mime} is not accepted (PNG, JPEG, GIF and WebP are).")
    shown = mime or "no content type"
    return ImageRefused("not-image", f"The server sent {shown}, not an image.")


def verify_image(data: bytes) -> VerifiedImage:
    """Decode ``data`` and re-encode its first frame (EXIF orientation applied, as
    browsers show it): a PNG when the image has transparency or was not a JPEG, else a
    JPEG. Raises ImageRefused: ``svg``, ``not-image``, ``bomb`` (more than MAX_PIXELS,
    or Pillow's own decompression-bomb check), ``corrupt``, ``too-big``."""
    if len(data) > MAX_BYTES:
        raise ImageRefused("too-big", f"The image is over {MAX_BYTES // 1_048_576} MB.")
    if _SVG_START.match(data[:512]) and b"<svg" in data[:4096].lower():
        raise ImageRefused("svg", _SVG_REFUSED)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_FORMATS) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise _bomb(width, height)
                image.load()  # the first frame, decoded in full: truncation shows here
                kind = image.format
                upright = ImageOps.exif_transpose(image)
            return _reencoded(upright, kind)
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRefused(
            "bomb", "The image declares too many pixels to decode (a decompression bomb)."
        ) from None
    except Image.UnidentifiedImageError:
        raise ImageRefused("not-image", "The file is not a PNG, JPEG, GIF or WebP image.") from None
    except Exception as error:  # Pillow raises many kinds on hostile bytes
        raise ImageRefused("corrupt", f"The image could not be decoded ({error}).") from None


def _bomb(width: int, height: int) -> ImageRefused:
    return ImageRefused(
        "bomb",
        f"The image declares {width} × {height} pixels, more than {MAX_PIXELS:,} "
        "(a decompression bomb).",
    )


def _reencoded(image: Image.Image, kind: str) -> VerifiedImage:
    transparent = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or ("transparency" in image.info)
    out = io.BytesIO()
    if kind == "JPEG" and not transparent:
        image.convert("L" if image.mode in ("L", "1") else "RGB").save(out, "JPEG", quality=90)
        mime = "image/jpeg"
    else:
        image.convert("RGBA" if transparent else "RGB").save(out, "PNG", compress_level=6)
        mime = "image/png"
    data = out.getvalue()
    if len(data) > MAX_STORED_BYTES:
        raise ImageRefused("too-big", "The image is too big once re-encoded.")
    return VerifiedImage(data=data, mime=mime, width=image.width, height=image.height)
