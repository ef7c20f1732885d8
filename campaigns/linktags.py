"""Link start tags in template SOURCE: find them, mark them, rewrite their hrefs.

A link's identity is the position of its start tag in the template source (its
*source index*), not its place in a rendered email: Jinja loops and conditions
change the rendered structure per customer, the source does not.

The scanner follows the HTML5 tokenizer where it decides what is a tag:
comments (``-->``, ``--!>``, ``<!-->``), bogus comments and doctypes (to ``>``),
raw text of ``script style xmp iframe noembed noframes`` and RCDATA of
``textarea title`` (to the matching end tag), ``plaintext`` (to the end),
quoted attribute values that hold ``>``, the first of duplicate attributes, and an
unterminated tag at end of input (dropped). ``noscript`` is ordinary markup, as in
a browser with scripting disabled. Inside Outlook conditional comments
(``<!--[if mso]> … <![endif]-->``) it scans the comment body too, where VML
elements with ``href`` (``v:roundrect`` …) are links as well.

Link-like tags inside raw text are indexed too (``SourceTag.raw_text``): the tree
builder does not switch to raw text inside inline SVG/MathML (``<svg><style><a>``
is a link there), so marking them keeps every tree link tied to its source tag.
Such indices have no inventory row in ordinary HTML; ``rewrite_links`` passes them
to the caller, who leaves them unchanged.
"""

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

# Marker attribute put into each link start tag before tree building, so every
# tree element (adoption-agency clones included) knows its source index.
MARKER_ATTR = "data-clickmap-link"

_WS = "\t\n\f\r "
# A whole start or end tag. Atomic groups and possessive quantifiers keep it linear
# on hostile input; an unterminated quoted value runs to the end (\Z), so the
# final '>' fails and the tag is treated as cut off by end of input.
_TAG = re.compile(
    r"<(/?)([a-zA-Z][^\t\n\f\r />]*+)"
    r"(?>[\t\n\f\r /]++"
    r"|[^\t\n\f\r />][^\t\n\f\r />=]*+"
    r"(?>[\t\n\f\r ]*+=[\t\n\f\r ]*+(?>\"[^\"]*+(?:\"|\Z)|'[^']*+(?:'|\Z)|[^\t\n\f\r >]*+))?+"
    r")*+>"
)
# One markup token: a complete tag (1: "/" of an end tag, 2: name), a comment
# opening (3), a bogus comment or doctype (4), "</>" (5), or a tag cut off by the
# end of input (6).
_TOKEN = re.compile(r"<(?:" + _TAG.pattern[1:] + r"|(!--)|([!?]|/[^a-zA-Z>])|(/>)|(/?[a-zA-Z]))")
_ATTR = re.compile(
    r"[\t\n\f\r /]*+([^\t\n\f\r />][^\t\n\f\r />=]*+)"
    r"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:\"([^\"]*+)\"|'([^']*+)'|([^\t\n\f\r >]*+)))?+"
)
# Elements whose content the tokenizer reads as text (plaintext: to the very end).
_RAW_TEXT = frozenset(
    {"script", "style", "xmp", "iframe", "noembed", "noframes", "textarea", "title", "plaintext"}
)
_raw_end_cache: dict[str, re.Pattern] = {}
_LINKS, _START, _ALL = 0, 1, 2  # what _scan yields: link start tags, start tags, all tags
_LINK_OPEN = re.compile(r"<(?:a|area|v:)", re.IGNORECASE)
_COMMENT_END = re.compile(r"--!?>")
_NEEDS_QUOTES = re.compile(r"[\t\n\f\r \"'=<>`]")

# Outlook downlevel-hidden conditional comment: "[if COND]>BODY<![endif]".
_CONDITIONAL = re.compile(r"\[if([^\]]*)\]>(.*)<!\[endif\]\Z", re.DOTALL)
_MSO_CONDITION = re.compile(r"(?<![!\w])(?<!!\s)mso\b", re.IGNORECASE)


def outlook_comment_body(comment_text: str) -> tuple[int, str] | None:
    """Body of a conditional comment that Outlook (Word) shows, with its offset.

    ``comment_text`` is the raw data between ``<!--`` and ``-->``. Returns
    ``(offset of the body in comment_text, body)`` when the comment is
    downlevel-hidden and its condition names ``mso`` without negation
    (``[if mso]``, ``[if gte mso 9]``, ``[if (gte mso 9)|(IE)]``, ``[if mso | IE]``);
    None otherwise, including the downlevel-revealed ``<!--[if !mso]><!-->`` form,
    whose content is ordinary markup.
    """
    if not comment_text.startswith("[if"):
        return None
    match = _CONDITIONAL.match(comment_text)
    if match is None or not _MSO_CONDITION.search(match.group(1)):
        return None
    return match.start(2), match.group(2)


class SourceTag(NamedTuple):
    """A start tag found in the source; offsets index the original string."""

    name: str  # lowercased tag name
    start: int  # offset of '<'
    name_end: int  # offset just past the tag name
    end: int  # offset just past '>'
    mso: bool  # inside an Outlook conditional comment body
    raw_text: bool = False  # looks like a link tag inside raw text (script, title…)

    def attributes(self, source: str) -> dict[str, tuple[int, int, str | None]]:
        """Attribute name -> (value start, value end, quote) as the tokenizer keeps
        them: names lowercased, the first of duplicates wins. ``quote`` is ``"``, ``'``,
        ``""`` for an unquoted value, or None for a bare attribute (no ``=``), whose
        empty span sits at the end of its name."""
        found: dict[str, tuple[int, int, str | None]] = {}
        for m in _ATTR.finditer(source, self.name_end, self.end - 1):
            name = m.group(1).lower()
            if name in found:
                continue
            for group, quote in ((2, '"'), (3, "'"), (4, "")):
                if m.group(group) is not None:
                    found[name] = (m.start(group), m.end(group), quote)
                    break
            else:
                found[name] = (m.end(1), m.end(1), None)
        return found

    def duplicate_attributes(self, source: str) -> list[str]:
        """Names of attributes written more than once in this tag (lowercased)."""
        seen: set[str] = set()
        repeated: list[str] = []
        for m in _ATTR.finditer(source, self.name_end, self.end - 1):
            name = m.group(1).lower()
            if name in seen and name not in repeated:
                repeated.append(name)
            seen.add(name)
        return repeated


class LinkTag(NamedTuple):
    """A link start tag (has an href) with its source index."""

    index: int
    tag: SourceTag
    href_start: int
    href_end: int
    quote: str | None  # as in SourceTag.attributes


def iter_start_tags(source: str) -> Iterator[SourceTag]:
    """Every start tag the HTML5 tokenizer would emit, in source order, plus the start
    tags inside Outlook conditional comment bodies (``mso=True``) where they stand."""
    yield from _scan(source, 0, len(source), mso=False, want=_START)


# For nesting_depth: elements without content; elements that a start tag of their
# own name closes; and the containers that stop that search.
_VOID = frozenset(
    {"area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "img"}
    | {"input", "keygen", "link", "meta", "param", "source", "track", "wbr"}
)
_CLOSED_BY_SIBLING = frozenset(
    {"p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "thead", "tbody"}
    | {"tfoot", "caption", "colgroup", "rb", "rt", "rtc", "rp"}
)
_CONTAINERS = frozenset(
    {"table", "ul", "ol", "dl", "select", "datalist", "ruby", "div", "button", "html"}
    | {"body", "td", "th", "li", "dd", "blockquote", "center", "section", "article"}
)
_SIBLING_LOOKBACK = 8
# Start tags the tree builder ignores: table parts outside a table, a second
# html/head/body.
_TABLE_PARTS = frozenset({"tr", "td", "th", "thead", "tbody", "tfoot", "caption", "colgroup"})
_MERGED = frozenset({"html", "head", "body"})


def nesting_depth(source: str) -> int:
    """Estimated deepest element nesting of ``source``, from its tags alone, in
    linear time (tree building is quadratic in the depth, in Lexbor and html5lib).

    An end tag closes up to its open element; a start tag of ``p``, ``li``, ``td`` …
    closes an open one of its name found near the top of the stack, below no
    container; void elements, table parts outside tables and repeated
    ``html``/``head``/``body`` never open. Other implied end tags are not modelled
    (the estimate then errs high), nor are copies of formatting elements.
    """
    stack: list[str] = []
    open_count: dict[str, int] = {}
    deepest = 0
    for tag in _scan(source, 0, len(source), mso=False, want=_ALL):
        if tag.mso:
            continue
        name = tag.name
        if name.startswith("/"):
            name = name[1:]
            if open_count.get(name):
                _pop_to(stack, open_count, name)
            continue
        if name in _VOID or name in _MERGED:
            continue
        if name in _TABLE_PARTS and not open_count.get("table"):
            continue
        if name in _CLOSED_BY_SIBLING and open_count.get(name):
            for above in reversed(stack[-_SIBLING_LOOKBACK:]):
                if above == name:
                    _pop_to(stack, open_count, name)
                    break
                if above in _CONTAINERS:
                    break
        stack.append(name)
        open_count[name] = open_count.get(name, 0) + 1
        deepest = max(deepest, len(stack))
    return deepest


def _pop_to(stack: list[str], open_count: dict[str, int], name: str) -> None:
    while True:
        popped = stack.pop()
        open_count[popped] -= 1
        if popped == name:
            return


def _raw_end(name: str) -> re.Pattern:
    pattern = _raw_end_cache.get(name)
    if pattern is None:
        pattern = re.compile(rf"</{name}[{_WS}/>]", re.IGNORECASE)
        _raw_end_cache[name] = pattern
    return pattern


def _scan(source: str, pos: int, stop: int, mso: bool, want: int) -> Iterator[SourceTag]:
    # The regex finds each markup token in C; Python only steps in at tokens that
    # move the scan (comments, bogus comments, raw text) or yield a tag.
    find = source.find
    while pos < stop:
        for m in _TOKEN.finditer(source, pos, stop):
            name = m.group(2)
            if name is not None:  # a complete start or end tag
                if m.group(1):
                    if want == _ALL:
                        yield SourceTag("/" + name.lower(), m.start(), m.end(2), m.end(), mso)
                    continue
                name = name.lower()
                if want != _LINKS or _is_link_name(name, mso):
                    yield SourceTag(name, m.start(), m.end(2), m.end(), mso)
                if name not in _RAW_TEXT:
                    continue
                pos = m.end()
                close = _raw_end(name).search(source, pos, stop) if name != "plaintext" else None
                text_end = close.start() if close else stop
                yield from _links_in_raw_text(source, pos, text_end, mso)
                if close is None:
                    return
                pos = text_end
                break
            if m.group(3):  # "<!--"
                body = m.end()
                if source.startswith(">", body, stop):  # "<!-->"
                    pos = body + 1
                    break
                if source.startswith("->", body, stop):  # "<!--->"
                    pos = body + 2
                    break
                end = _COMMENT_END.search(source, body, stop)
                close = end.start() if end else stop
                if not mso and source.startswith("[if", body, close):
                    found = outlook_comment_body(source[body:close])
                    if found is not None:
                        inner_start = body + found[0]
                        inner_stop = inner_start + len(found[1])
                        yield from _scan(source, inner_start, inner_stop, True, want)
                if end is None:
                    return
                pos = end.end()
                break
            if m.group(4):  # doctype, bogus comment, "<!" or "<?": up to the next '>'
                gt = find(">", m.end(), stop)
                if gt < 0:
                    return
                pos = gt + 1
                break
            if m.group(5):  # "</>" is dropped
                continue
            return  # a tag cut off by the end of input swallows the rest
        else:
            return


def _links_in_raw_text(source: str, pos: int, stop: int, mso: bool) -> Iterator[SourceTag]:
    for candidate in _LINK_OPEN.finditer(source, pos, stop):
        m = _TAG.match(source, candidate.start(), stop)
        if m is None:
            return  # cut off by the end of the text; stopping keeps hostile input linear
        name = m.group(2).lower()
        if _is_link_name(name, mso):
            yield SourceTag(name, m.start(), m.end(2), m.end(), mso, raw_text=True)


def _is_link_name(name: str, mso: bool) -> bool:
    return name in ("a", "area") or (mso and name.startswith("v:"))


def scan_link_tags(source: str) -> list[LinkTag]:
    """Link start tags in source order: ``a``/``area`` with an href attribute, and
    inside Outlook conditional comments also VML ``v:*`` elements with an href.
    ``LinkTag.index`` is the source index, 0-based."""
    links: list[LinkTag] = []
    for tag in _scan(source, 0, len(source), mso=False, want=_LINKS):
        for m in _ATTR.finditer(source, tag.name_end, tag.end - 1):
            if m.group(1).lower() != "href":
                continue  # the first href wins, as in the tokenizer
            for group, quote in ((2, '"'), (3, "'"), (4, "")):
                if m.group(group) is not None:
                    span = (m.start(group), m.end(group), quote)
                    break
            else:
                span = (m.end(1), m.end(1), None)
            links.append(LinkTag(len(links), tag, *span))
            break
    return links


def mark_link_tags(source: str, links: list[LinkTag]) -> str:
    """The source with ``MARKER_ATTR="<source index>"`` as the first attribute of every
    link start tag. Being first, it wins over any same-named attribute in the source."""
    parts: list[str] = []
    pos = 0
    for link in links:
        cut = link.tag.name_end
        parts.append(source[pos:cut])
        parts.append(f' {MARKER_ATTR}="{link.index}"')
        pos = cut
    parts.append(source[pos:])
    return "".join(parts)


def rewrite_links(source: str, replace: Callable[[int, str], str]) -> str:
    """The source with each link's href value replaced by ``replace(source_index, raw)``.

    ``raw`` is the href value exactly as written (character references and template
    syntax untouched, surrounding whitespace kept); the result is inserted verbatim
    inside the original quotes. An unquoted (or bare) value whose replacement needs
    quoting gets double quotes (single ones if it holds a double quote and no single
    one), so ``{% filter cm_track(3) %}…{% endfilter %}`` stays one value. A
    replacement equal to ``raw`` leaves the tag byte for byte as it was.
    Indices are those of ``scan_link_tags`` and ``InventoryLink.source_index``;
    ``replace`` is called for every index, also those with no inventory row (link
    text inside ``<script>`` or ``<title>``): return ``raw`` to leave one unchanged.
    Every other byte of the source is kept.
    """
    parts: list[str] = []
    pos = 0
    for link in scan_link_tags(source):
        raw = source[link.href_start : link.href_end]
        new = replace(link.index, raw)
        if new == raw:
            continue
        parts.append(source[pos : link.href_start])
        if link.quote is None:
            parts.append("=")  # bare "href" attribute
        if link.quote or (new and not _NEEDS_QUOTES.search(new)):
            parts.append(new)
        else:
            quote = "'" if '"' in new and "'" not in new else '"'
            parts.append(f"{quote}{new}{quote}")
        pos = link.href_end
    parts.append(source[pos:])
    return "".join(parts)
