"""Link inventory of an email template: every link, where the browser puts it, what it is.

The first step of the pipeline (README, "Templates and the link inventory").
``decode_template`` turns uploaded bytes into text or a marketer-readable
``TemplateInputError``; ``inventory_links`` lists the links;
``template_warnings`` (htmlwarnings.py) says what the browser will rearrange.

Positions. The template is parsed with the HTML5 algorithm (html5tree.py), so every
row's ``xpath`` resolves in Chromium to the element the recipient sees. Outlook-only
links live inside conditional comments, which browsers keep as comments; their
``xpath`` is the comment's path, ``#mso``, then the link's path inside the comment
body parsed as a ``<body>`` fragment::

    /html/body/table[1]/tbody[1]/tr[1]/td[1]/comment()[2]#mso/*[local-name()='v:roundrect'][1]

``split_mso_xpath`` takes such a path apart.

Personalisation. Links are identified from the template SOURCE, before Jinja runs:
each link start tag (``a``/``area`` with an href; also VML ``v:*`` inside Outlook
comments) has a *source index*, its 0-based position among link start tags in
source order (linktags.py). Before tree building a marker attribute carrying that
index is injected into each such tag, so every tree element, including the copies
the adoption agency makes of a misnested ``<a>``, reports its ``source_index``.
At send time ``rewrite_links(source, replace)`` wraps each href in the template,
e.g. ``{% filter cm_track(7) %}{{ product.url }}{% endfilter %}``, so after
per-customer rendering each tracking URL names its source link however loops and
conditions reshaped the email. Several rows share a source index when the browser
duplicates one tag; a row with source index -1 came from markup the source scanner
could not place (see linktags.py) and cannot be tracked by index.
"""

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

import webencodings

from campaigns.html5tree import XPathIndex, document_node, parse_document, parse_fragment
from campaigns.htmlwarnings import TemplateWarning, template_warnings
from campaigns.linkflags import has_placeholder, is_trackable, is_unsubscribe
from campaigns.linktags import (
    MARKER_ATTR,
    mark_link_tags,
    nesting_depth,
    outlook_comment_body,
    rewrite_links,
    scan_link_tags,
)

__all__ = [
    "MAX_NESTING",
    "MAX_TEMPLATE_BYTES",
    "FORMATS",
    "InventoryLink",
    "TemplateInputError",
    "TemplateWarning",
    "decode_template",
    "inventory_links",
    "rewrite_links",
    "split_mso_xpath",
    "template_warnings",
]

# 5 MB templates must work; a 10 MB one is refused before any parsing.
MAX_TEMPLATE_BYTES = 8 * 1024 * 1024
# Tree building is quadratic in nesting depth; real emails nest about 30 deep and
# Chromium stops nesting at 512. Deeper (tags opened, never closed) is refused.
MAX_NESTING = 4096
FORMATS = ("html", "amp")
MSO_SEPARATOR = "#mso"

_HTML_WS = " \t\n\r\f"
_MSO_XPATH = re.compile(r"(.*/comment\(\)\[\d+\])#mso(/.*)\Z", re.DOTALL)


class TemplateInputError(ValueError):
    """The uploaded template cannot be read; the message is meant for the marketer."""


@dataclass(frozen=True)
class InventoryLink:
    """One link of a template, as the browser's tree holds it.

    ``ordinal`` is the 0-based row position (document order; Outlook rows stand at
    their comment), stable for a given source. ``href`` is the attribute value with
    character references decoded and template syntax kept, surrounding whitespace
    stripped. ``text`` is the visible text, whitespace-collapsed, or the image alt
    text when there is none. ``twin_xpath`` (Outlook rows only) is the xpath of the
    visible row with the same href nearest in document order (fewest rows between,
    the following one on a tie), None when there is none.
    """

    ordinal: int
    xpath: str
    href: str
    text: str
    kind: str  # 'a' | 'area' | 'vml'
    format: str  # 'html' | 'amp'
    mso: bool
    twin_xpath: str | None
    unsubscribe: bool
    trackable: bool
    placeholder: bool
    source_index: int


def split_mso_xpath(xpath: str) -> tuple[str, str] | None:
    """``(comment xpath, path inside the comment body)`` of an Outlook row's xpath,
    or None for an ordinary xpath."""
    match = _MSO_XPATH.match(xpath)
    return (match.group(1), match.group(2)) if match else None


def inventory_links(html: str, format: str = "html") -> list[InventoryLink]:
    """All links of ``html`` in document order.

    Invariants: for the rows with ``mso=False`` each xpath selects exactly one element
    in Chromium's tree of ``html``, whose href attribute (stripped) is the row's
    href, and those rows are exactly the elements ``a[href], area[href]`` there.
    Parsing only: nothing in the template runs. Raises TemplateInputError for input
    over ``MAX_TEMPLATE_BYTES`` characters or nested deeper than ``MAX_NESTING``,
    ValueError for an unknown format.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {format!r}")
    if len(html) > MAX_TEMPLATE_BYTES:
        raise TemplateInputError(_too_large_message(len(html)))
    if (depth := _nesting_beyond_limit(html)) is not None:
        raise TemplateInputError(too_deep_message(depth))
    marked = mark_link_tags(html, scan_link_tags(html))
    tree = parse_document(marked)
    xpaths = XPathIndex()
    found = []  # row fields in document order
    for node in document_node(tree).traverse():
        if node.is_comment_node:
            content = node.comment_content
            if content and content.startswith("[if"):
                body = outlook_comment_body(node.html[4:-3])
                for fields in _outlook_links(body[1]) if body is not None else ():
                    fields["xpath"] = xpaths.path(node) + MSO_SEPARATOR + fields["xpath"]
                    found.append(fields)
            continue
        tag = node.tag
        if tag != "a" and tag != "area":
            continue
        attributes = node.attributes
        if "href" not in attributes:
            continue
        xpath = xpaths.link_path(node)
        if xpath is None:
            continue
        fields = _link_fields(node, tag, attributes, mso=False)
        fields["xpath"] = xpath
        found.append(fields)

    visible: dict[str, list[tuple[int, str]]] = {}
    for ordinal, fields in enumerate(found):
        if not fields["mso"]:
            visible.setdefault(fields["href"], []).append((ordinal, fields["xpath"]))
    rows = []
    for ordinal, fields in enumerate(found):
        twin = _nearest(visible.get(fields["href"], ()), ordinal) if fields["mso"] else None
        rows.append(InventoryLink(ordinal=ordinal, format=format, twin_xpath=twin, **fields))
    return rows


def _outlook_links(body: str) -> list[dict]:
    if "href" not in body.lower():
        return []  # most Outlook comments hold only table scaffolding or styles
    first = parse_fragment(body)
    if first is None:
        return []
    xpaths = XPathIndex()
    links = []
    for node in first.traverse():
        if not node.is_element_node:
            continue
        tag = node.tag
        if tag != "a" and tag != "area" and not tag.startswith("v:"):
            continue
        attributes = node.attributes
        if "href" not in attributes:
            continue
        xpath = xpaths.link_path(node)
        if xpath is None:
            continue
        fields = _link_fields(node, tag, attributes, mso=True)
        fields["xpath"] = xpath
        links.append(fields)
    return links


def _link_fields(node, tag: str, attributes: dict, mso: bool) -> dict:
    href = (attributes.get("href") or "").strip(_HTML_WS)
    if tag == "area":
        text = _collapse(attributes.get("alt") or "")
    else:
        text = _collapse(node.text(deep=True))
        if not text:
            alts = (_collapse(img.attributes.get("alt") or "") for img in node.css("img"))
            text = " ".join(alt for alt in alts if alt)
    try:
        source_index = int(attributes.get(MARKER_ATTR) or "")
    except ValueError:
        source_index = -1
    return {
        "href": href,
        "text": text,
        "kind": tag if tag in ("a", "area") else "vml",
        "mso": mso,
        "unsubscribe": is_unsubscribe(href, text),
        "trackable": is_trackable(href),
        "placeholder": has_placeholder(href),
        "source_index": source_index,
    }


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _nearest(candidates, ordinal: int) -> str | None:
    """XPath of the candidate row with the fewest rows between it and ``ordinal``; on a
    tie the later one, since the visible twin usually follows its Outlook version."""
    best = None
    for candidate_position, xpath in candidates:
        key = (abs(candidate_position - ordinal), candidate_position < ordinal)
        if best is None or key < best[0]:
            best = (key, xpath)
    return best[1] if best else None


# --- decoding uploaded bytes ---------------------------------------------------------

_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"RIFF", "a media file (WebP, WAV or AVI)"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or a Word/Excel document)"),
    (b"\xd0\xcf\x11\xe0", "an old-style Office document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "a program"),
)
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\f") + b"\x7f"
_META_CHARSET = re.compile(rb"<meta[\s/][^>]*?charset\s*=\s*[\"']?\s*([^\s\"'/>;]+)", re.I)
_COMMENT_BYTES = re.compile(rb"<!--.*?-->", re.S)


def _nesting_beyond_limit(html: str) -> int | None:
    # Fewer '<' than the limit cannot nest past it: most templates skip the scan.
    if html.count("<") <= MAX_NESTING:
        return None
    depth = nesting_depth(html)
    return depth if depth > MAX_NESTING else None


def too_deep_message(depth: int) -> str:
    return (
        f"Tags in this template nest about {depth} levels deep (emails need a few dozen; "
        "browsers stop at 512): tags are opened and never closed. Close them and try again."
    )


def _too_large_message(size: int) -> str:
    return (
        f"The template is {size / 1_048_576:.1f} MB; the limit is "
        f"{MAX_TEMPLATE_BYTES // 1_048_576} MB. Move images and large styles out of the HTML."
    )


def _whatwg_c1(error: UnicodeDecodeError) -> tuple[str, int]:
    # windows-1252 per WHATWG maps its 5 undefined bytes to the C1 controls.
    return "".join(chr(b) for b in error.object[error.start : error.end]), error.end


codecs.register_error("clickmap-whatwg-c1", _whatwg_c1)


def declared_encoding(data: bytes) -> str | None:
    """Python codec name of the ``<meta charset>`` (or http-equiv content) declared in
    the first 1024 bytes, mapped through the WHATWG label table; None if absent or
    unknown. UTF-16 labels mean UTF-8 there, as in browsers."""
    head = _COMMENT_BYTES.sub(b"", data[:1024])
    match = _META_CHARSET.search(head)
    if match is None:
        return None
    encoding = webencodings.lookup(match.group(1).decode("ascii", "replace"))
    if encoding is None:
        return None
    if encoding.name in ("utf-16be", "utf-16le"):
        return "utf-8"
    if encoding.name == "x-user-defined":
        return "cp1252"
    return encoding.codec_info.name


def read_template_file(path: Path) -> str:
    """The text of a template file on disk (see decode_template). Raises
    TemplateInputError for a missing, unreadable, too large or undecodable file; a
    file over the limit is refused before it is read."""
    try:
        if not path.is_file():
            raise TemplateInputError("no such file." if not path.exists() else "not a file.")
        size = path.stat().st_size
        if size > MAX_TEMPLATE_BYTES:
            raise TemplateInputError(_too_large_message(size))
        return decode_template(path.read_bytes())
    except OSError as error:
        raise TemplateInputError(f"cannot read it ({error.strerror or error}).") from None


def decode_template(data: bytes) -> str:
    """Text of an uploaded template.

    A byte order mark wins, then a ``<meta charset>`` declaration (legacy encodings
    such as windows-1251 or Shift_JIS included), else UTF-8. Raises
    TemplateInputError, with a message a marketer can act on, for files over
    ``MAX_TEMPLATE_BYTES``, images/archives/other binary data, bytes that are not
    valid in the encoding (naming the line and column of the first bad byte), and a
    NUL character anywhere (which no database text column stores).
    An empty file is an empty template.
    """
    if len(data) > MAX_TEMPLATE_BYTES:
        raise TemplateInputError(_too_large_message(len(data)))
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise TemplateInputError(f"This file is {what}, not an HTML template.")
    if data.startswith(codecs.BOM_UTF8):
        return _decode(data[3:], "utf-8", "UTF-8")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _decode(data, "utf-16", "UTF-16")
    sample = data[:65536]
    if b"\x00" in sample or (
        sample and len(sample) - len(sample.translate(None, _CONTROL_BYTES)) > len(sample) // 20
    ):
        raise TemplateInputError(
            "This file holds binary data, not an HTML template (if it is text, save it as UTF-8)."
        )
    encoding = declared_encoding(data) or "utf-8"
    return _decode(data, encoding, encoding.upper())


def _decode(data: bytes, codec: str, label: str) -> str:
    errors = "clickmap-whatwg-c1" if codec == "cp1252" else "strict"
    try:
        text = data.decode(codec, errors)
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode(codec, "replace")) + 1
        hint = (
            "Save the file as UTF-8, or declare its encoding with <meta charset=…>"
            if label == "UTF-8"
            else f"Check that the file really is {label}, as it declares, or save it as UTF-8"
        )
        raise TemplateInputError(
            f"The file is not valid {label} text: line {line}, column {column} holds a "
            f"byte that is not part of any character. {hint}."
        ) from None
    if (nul := text.find("\x00")) >= 0:  # past the binary sniff's first 64 KiB, or UTF-16
        line = text.count("\n", 0, nul) + 1
        column = nul - text.rfind("\n", 0, nul)
        raise TemplateInputError(
            f"The file holds a NUL character (line {line}, column {column}), which an HTML "
            "template never contains: it is binary data or damaged. Remove it, or save the "
            "file again as UTF-8 text."
        )
    return text
