"""Warnings for the template editor: what browsers will rearrange, and what hurts a
click map (links without text, duplicate ids, images without a size).

Parse errors come from html5lib, which reports the HTML5 algorithm's errors with
line numbers; each kind that changes the tree (or the layout) is translated into
words a marketer can act on, the rest (entity and attribute-spelling details) is
left out. Repeats of one message are folded into one warning.
"""

import bisect
import re
import warnings as python_warnings
from dataclasses import dataclass
from posixpath import basename
from urllib.parse import urlsplit

import html5lib

from campaigns.linktags import iter_start_tags, nesting_depth, scan_link_tags

MAX_LINES_LISTED = 5
CHROMIUM_MAX_DEPTH = 512  # Blink's HTML parser puts deeper elements beside, not inside


@dataclass(frozen=True)
class TemplateWarning:
    """One warning: ``line`` (1-based, None when not tied to a line), a stable
    ``code`` (e.g. ``moved-out-of-table``) and a ``message`` for the marketer."""

    line: int | None
    code: str
    message: str

    def __str__(self) -> str:
        return f"Line {self.line}: {self.message}" if self.line else self.message


_STRAY = "</{name}> has no matching opening tag: browsers ignore it"
_STILL_OPEN = "<{expectedName}> is still open at </{gotName}>: browsers close it there"
_QUIRKS = (
    "no <!DOCTYPE> at the top: browsers use quirks mode, where tables, paragraphs and "
    "spacing behave differently"
)
_AFTER_BODY = "content after </body> is moved back into the body by browsers"
_UNCLOSED_COMMENT = "a comment (<!--) is never closed: browsers hide everything after it"
_CUT_OFF_TAG = "the last tag is never closed with >: browsers drop it"
_OPEN_QUOTE = "an attribute's quote is never closed: browsers drop that tag and all that follows"

# html5lib error code -> (our code, message). A message is a str.format template over
# the error's data, or a dict choosing one by the data's "name" ("*" otherwise).
# Codes not listed (entity, attribute-spelling, comment-syntax details) are not shown.
_PARSE_ERRORS = {
    "unexpected-start-tag-implies-table-voodoo": (
        "moved-out-of-table",
        {
            "a": "a link inside a table but outside a cell is moved above the table by browsers",
            "*": "<{name}> inside a table but outside a cell is moved above the table by browsers",
        },
    ),
    "unexpected-char-implies-table-voodoo": (
        "moved-out-of-table",
        "text inside a table but outside a cell is moved above the table by browsers",
    ),
    "unexpected-form-in-table": (
        "moved-out-of-table",
        "a <form> directly inside a table is emptied by browsers",
    ),
    "adoption-agency-1.2": ("misnested-tags", None),
    "adoption-agency-1.3": ("misnested-tags", None),
    "adoption-agency-4.4": ("misnested-tags", None),
    "unexpected-start-tag-implies-end-tag": ("implied-end-tag", None),
    "unexpected-end-tag": ("stray-end-tag", _STRAY),
    "adoption-agency-1.1": ("stray-end-tag", _STRAY),
    "unexpected-end-tag-in-table-body": ("stray-end-tag", _STRAY),
    "unexpected-end-tag-in-table-row": ("stray-end-tag", _STRAY),
    "end-tag-too-early-ignored": (
        "stray-end-tag",
        "</{name}> comes before its content is closed: browsers ignore it",
    ),
    "unexpected-end-tag-treated-as": (
        "stray-end-tag",
        {
            "p": "</p> without an open paragraph: browsers insert an empty paragraph",
            "*": "</{originalName}> is read as <{newName}> by browsers",
        },
    ),
    "expected-one-end-tag-but-got-another": ("unclosed-tag", _STILL_OPEN),
    "end-tag-too-early-named": ("unclosed-tag", _STILL_OPEN),
    "end-tag-too-early": (
        "unclosed-tag",
        "</{name}> comes while tags inside it are still open: browsers close them there",
    ),
    "expected-named-closing-tag-but-got-eof": ("unclosed-tag", "<{name}> is never closed"),
    "unexpected-cell-in-table-body": (
        "missing-table-row",
        "<{name}> outside a row: browsers insert a <tr> around it",
    ),
    "unexpected-start-tag": (
        "not-allowed-here",
        {
            "form": "a form inside a form: browsers ignore the inner <form> tag",
            "html": "a second <html> tag: browsers merge it into the first",
            "body": "a second <body> tag: browsers merge it into the first",
            "head": "a second <head> tag: browsers ignore it",
            "*": "<{name}> is not allowed here: browsers drop or move it",
        },
    ),
    "unexpected-start-tag-ignored": (
        "not-allowed-here",
        "<{name}> is not allowed here: browsers drop it",
    ),
    "unexpected-start-tag-treated-as": (
        "not-allowed-here",
        "<{originalName}> is read as <{newName}> by browsers",
    ),
    "unexpected-html-element-in-foreign-content": (
        "not-allowed-here",
        "<{name}> inside <svg> or <math> ends the drawing there",
    ),
    "non-void-element-with-trailing-solidus": (
        "not-self-closing",
        "<{name}/> is not self-closing in HTML: browsers treat it as an opening tag, so "
        "what follows ends up inside it",
    ),
    "unexpected-char-after-body": ("after-body", _AFTER_BODY),
    "unexpected-start-tag-after-body": ("after-body", _AFTER_BODY),
    "expected-doctype-but-got-start-tag": ("quirks-mode", _QUIRKS),
    "expected-doctype-but-got-chars": ("quirks-mode", _QUIRKS),
    "eof-in-comment": ("unclosed-comment", _UNCLOSED_COMMENT),
    "eof-in-comment-double-dash": ("unclosed-comment", _UNCLOSED_COMMENT),
    "eof-in-comment-end-dash": ("unclosed-comment", _UNCLOSED_COMMENT),
    "eof-in-tag-name": ("cut-off-tag", _CUT_OFF_TAG),
    "eof-in-attribute-name": ("cut-off-tag", _CUT_OFF_TAG),
    "expected-attribute-name-but-got-eof": ("cut-off-tag", _CUT_OFF_TAG),
    "expected-end-of-tag-name-but-got-eof": ("cut-off-tag", _CUT_OFF_TAG),
    "expected-attribute-value-but-got-eof": ("cut-off-tag", _CUT_OFF_TAG),
    "unexpected-EOF-after-solidus-in-tag": ("cut-off-tag", _CUT_OFF_TAG),
    "eof-in-attribute-value-no-quotes": ("cut-off-tag", _CUT_OFF_TAG),
    "eof-in-attribute-value-double-quote": ("cut-off-tag", _OPEN_QUOTE),
    "eof-in-attribute-value-single-quote": ("cut-off-tag", _OPEN_QUOTE),
}


class _Blank(dict):
    def __missing__(self, key):
        return "?"


def _parse_error_message(code: str, template, data: dict) -> str:
    name = data.get("name")
    if code == "misnested-tags":
        if name == "a":
            return (
                "</a> closes tags in the wrong order: browsers split the link or copy it, "
                "so one link can become several"
            )
        return f"</{name}> closes tags in the wrong order: browsers rearrange the tags around it"
    if code == "implied-end-tag":
        start, end = data.get("startName"), data.get("endName")
        if start == end == "a":
            return "a link inside a link: browsers end the first link where the second starts"
        return f"<{start}> inside <{end}> is not allowed: browsers close the <{end}> first"
    if isinstance(template, dict):
        key = data.get("originalName") if "originalName" in data else name
        template = template.get(key, template["*"])
    return template.format_map(_Blank(data))


def template_warnings(html: str) -> list[TemplateWarning]:
    """Warnings for ``html``, ordered by line.

    Covers the HTML5 parse errors that make browsers move, split, drop or merge
    markup; links with neither text nor image alt text; id values used more than
    once; images without width or height. Each message appears once, listing
    further lines where it repeats. Never raises on malformed markup.
    """
    from campaigns.inventory import MAX_NESTING, too_deep_message

    depth = nesting_depth(html) if html.count("<") > CHROMIUM_MAX_DEPTH else 0
    if depth > MAX_NESTING:  # parsing it would take minutes; say why instead
        return [TemplateWarning(None, "too-deep", too_deep_message(depth))]
    lines = _LineIndex(html)
    found: list[TemplateWarning] = []
    if depth > CHROMIUM_MAX_DEPTH:
        found.append(
            TemplateWarning(
                None,
                "too-deep",
                f"tags nest about {depth} levels deep: browsers stop nesting at "
                f"{CHROMIUM_MAX_DEPTH}, so the layout and link positions below that break",
            )
        )
    found.extend(_parse_error_warnings(html))
    found.extend(_source_warnings(html, lines))
    return _fold(found)


def _parse_error_warnings(html: str) -> list[TemplateWarning]:
    parser = html5lib.HTMLParser(namespaceHTMLElements=False)
    with python_warnings.catch_warnings():
        python_warnings.simplefilter("ignore")
        parser.parse(html, scripting=False)
    found = []
    for (line, _column), error, data in parser.errors:
        known = _PARSE_ERRORS.get(error)
        if known is None:
            continue
        code, template = known
        message = _parse_error_message(code, template, data or {})
        found.append(TemplateWarning(line or None, code, message))
    return found


def _source_warnings(html: str, lines: "_LineIndex") -> list[TemplateWarning]:
    found = []
    ids: dict[str, list[int]] = {}
    for tag in iter_start_tags(html):
        if tag.mso or tag.raw_text:
            continue
        attributes = tag.attributes(html)
        for name in tag.duplicate_attributes(html):
            found.append(
                TemplateWarning(
                    lines.line(tag.start),
                    "duplicate-attribute",
                    f"<{tag.name}> has the attribute {name} more than once: browsers keep "
                    "only the first",
                )
            )
        if "id" in attributes:
            start, end, _quote = attributes["id"]
            ids.setdefault(html[start:end], []).append(lines.line(tag.start))
        if tag.name == "img" and ("width" not in attributes or "height" not in attributes):
            found.append(
                TemplateWarning(
                    lines.line(tag.start),
                    "image-without-size",
                    f"image {_image_name(html, attributes)} has no width or height: Outlook "
                    "may show it at its full size and the layout jumps while it loads",
                )
            )
        if tag.name == "area" and "href" in attributes and not _value(html, attributes, "alt"):
            found.append(
                TemplateWarning(
                    lines.line(tag.start),
                    "link-without-text",
                    f"an image-map area linking to {_value(html, attributes, 'href')} has no "
                    "alt text: screen readers and the click-map list can show only its address",
                )
            )
    found.extend(_textless_links(html, lines))
    for value, where in ids.items():
        if len(where) > 1 and value:
            found.append(
                TemplateWarning(
                    where[1],
                    "duplicate-id",
                    f'id "{value}" is used {len(where)} times (first on line {where[0]}): '
                    "links and styles that point to it reach only the first",
                )
            )
    return found


def _textless_links(html: str, lines: "_LineIndex") -> list[TemplateWarning]:
    # The inventory knows each link's text and alt in the browser's tree. Imported
    # here because campaigns.inventory re-exports this module's API.
    from campaigns.inventory import TemplateInputError, inventory_links

    try:
        rows = inventory_links(html)
    except TemplateInputError:
        return []  # too large: decode_template tells the marketer
    starts = {link.index: link.tag.start for link in scan_link_tags(html)}
    found = []
    seen = set()
    for row in rows:
        if row.mso or row.kind != "a" or row.text or row.source_index in seen:
            continue
        seen.add(row.source_index)
        start = starts.get(row.source_index)
        found.append(
            TemplateWarning(
                lines.line(start) if start is not None else None,
                "link-without-text",
                f"a link to {row.href or '(empty address)'} has no text and no image alt "
                "text: screen readers, Outlook with images off and the click-map list can "
                "show only its address",
            )
        )
    return found


def _value(html: str, attributes: dict, name: str) -> str:
    span = attributes.get(name)
    return html[span[0] : span[1]].strip() if span else ""


def _image_name(html: str, attributes: dict) -> str:
    src = _value(html, attributes, "src")
    name = basename(urlsplit(src).path) if src else ""
    return f'"{name}"' if name else "(no src)"


class _LineIndex:
    """Offset -> 1-based line, counting CRLF, CR and LF as one break each."""

    def __init__(self, text: str) -> None:
        self._starts = [m.end() for m in re.finditer(r"\r\n?|\n", text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset) + 1


def _fold(found: list[TemplateWarning]) -> list[TemplateWarning]:
    groups: dict[tuple[str, str], list[int | None]] = {}
    for warning in found:
        groups.setdefault((warning.code, warning.message), []).append(warning.line)
    folded = []
    for (code, message), where in groups.items():
        numbered = sorted({line for line in where if line is not None})
        first = numbered[0] if numbered else None
        others = numbered[1:]
        if others:
            listed = ", ".join(str(line) for line in others[:MAX_LINES_LISTED])
            more = len(others) - MAX_LINES_LISTED
            listed += f" and {more} more" if more > 0 else ""
            message = f"{message} (also on line{'s' if len(others) > 1 else ''} {listed})"
        folded.append(TemplateWarning(first, code, message))
    folded.sort(key=lambda w: (w.line is None, w.line or 0, w.code))
    return folded
