"""The browser's tree of a template, and canonical XPaths into it.

Trees come from Lexbor (through selectolax), a conformant HTML5 parser: inserted
``tbody``, foster parenting, the adoption agency and nested ``a`` come out as
Chromium builds them. Scripting is off, as in the preview browser, so ``noscript``
content is markup. libxml2's HTML parser builds a different tree and must not be
used for positions.

XPath syntax (what Chromium's ``document.evaluate`` accepts on an HTML document):
``/html/body/…`` then one step per element with a positional predicate counted among
siblings of the same name, e.g. ``/html/body/table[1]/tbody[1]/tr[2]/td[1]/a[1]``.
An element outside the HTML namespace (inline SVG or MathML) or whose name is not a
plain XPath name (``o:p``, ``v:roundrect``) is written
``*[local-name()='o:p'][1]``, because unprefixed names only match HTML elements.
Comments are ``comment()[n]`` counted among sibling comments.

Checked against Chromium 156 on the corpus and on generated malformed markup
(tests/test_inventory_browser.py). Known Lexbor 1.0.2 differences: phantom copies
of formatting elements inside ``<textarea>`` (skipped, see ``link_path``), and two
the inventory does not correct, absent from email: ``<search>`` is not yet a block
element, and ``<image>`` inside a table is dropped instead of becoming an ``<img>``.
"""

import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

HTML, SVG, MATHML = "html", "svg", "math"

_NCNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
# HTML elements whose content the tree builder's "text" mode keeps as text only.
# (Not plaintext: its text goes through "in body", which may rebuild formatting.)
_TEXT_ONLY = frozenset(
    {"textarea", "title", "script", "style", "xmp", "iframe", "noembed", "noframes"}
)
_SVG_HTML_POINTS = frozenset({"foreignObject", "desc", "title"})
_MATHML_TEXT_POINTS = frozenset({"mi", "mo", "mn", "ms", "mtext"})


def parse_document(html: str) -> LexborHTMLParser:
    """The document tree a browser with scripting disabled builds from ``html``."""
    return LexborHTMLParser(html, scripting=False)


def parse_fragment(html: str) -> LexborNode | None:
    """First top-level node of ``html`` parsed as a fragment in ``<body>`` context
    (the rest are its ``next`` siblings), or None when the fragment is empty."""
    return LexborHTMLParser(html, is_fragment=True, fragment_tag="body", scripting=False).root


def document_node(tree: LexborHTMLParser) -> LexborNode:
    """The document node: parent of ``<html>`` and of comments outside it."""
    node = tree.root
    while node.parent is not None:
        node = node.parent
    return node


def xpath_literal(text: str) -> str:
    """``text`` as an XPath 1.0 string literal."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    pieces = text.split("'")
    return "concat(" + ', "\'", '.join(f"'{p}'" for p in pieces) + ")"


class XPathIndex:
    """Canonical XPaths of the nodes of one tree; caches steps of shared ancestors.

    Paths start at the document node, or for a fragment at its top level.
    """

    def __init__(self) -> None:
        # mem_id -> (location step, is an HTML element that holds text only)
        self._steps: dict[int, tuple[str, bool]] = {}
        self._namespaces: dict[int, str] = {}

    def namespace(self, node: LexborNode) -> str:
        """HTML, SVG or MATHML, as the tree builder would have assigned it.

        Lexbor does not expose namespaces, so this replays the tree builder's rule
        from the parent: ``svg``/``math`` start a foreign subtree, integration points
        (``foreignObject``, ``desc``, ``title``, MathML text points, HTML-encoded
        ``annotation-xml``) return to HTML.
        """
        # Iterative, so documents nested thousands of levels deep cannot overflow.
        pending = []
        ns = None
        while node is not None and node.is_element_node:
            ns = self._namespaces.get(node.mem_id)
            if ns is not None:
                break
            pending.append(node)
            node = node.parent
        for child in reversed(pending):
            parent = child.parent
            if ns is None:  # child of the document or at a fragment's top level
                ns = _child_namespace(HTML, "", None, child.tag)
            else:
                ns = _child_namespace(ns, parent.tag, parent, child.tag)
            self._namespaces[child.mem_id] = ns
        return ns if ns is not None else HTML

    def path(self, node: LexborNode) -> str:
        """Absolute path of ``node`` (element or comment) from the document, or from
        the fragment top level."""
        return self._path(node)[0]

    def link_path(self, node: LexborNode) -> str | None:
        """Like ``path``, but None when an ancestor is an HTML element that holds text
        only (``textarea``, ``title``, ``script`` …).

        Browsers never build elements there, but Lexbor 1.0.2 (selectolax) rebuilds
        open formatting elements inside ``<textarea>`` text (``<p><a href=x><p>
        <textarea>y`` puts a copy of the link in the textarea): such phantom links
        are no links.
        """
        path, in_text_only = self._path(node)
        return None if in_text_only else path

    def _path(self, node: LexborNode) -> tuple[str, bool]:
        steps = []
        in_text_only = False
        current = node
        while current is not None and not current.is_document_node:
            entry = self._steps.get(current.mem_id)
            if entry is None:
                self._index_siblings(current)
                entry = self._steps[current.mem_id]
            steps.append(entry[0])
            in_text_only = in_text_only or (entry[1] and current is not node)
            current = current.parent
        return "/" + "/".join(reversed(steps)), in_text_only

    def _index_siblings(self, node: LexborNode) -> None:
        # One pass over all children of the parent, so wide parents (a body with
        # thousands of paragraphs) cost linear time, not quadratic.
        parent = node.parent
        if parent is not None:
            sibling = parent.child
        else:  # top level of a fragment
            sibling = node
            while sibling.prev is not None:
                sibling = sibling.prev
        if parent is not None and parent.is_element_node:
            parent_ns, parent_tag = self.namespace(parent), parent.tag
        else:
            parent_ns, parent_tag = HTML, ""
        at_root = parent is not None and parent.is_document_node
        in_root_html = (
            parent_tag == "html" and parent.parent is not None and parent.parent.is_document_node
        )
        counts: dict[str, int] = {}
        while sibling is not None:
            # Lexbor names non-elements "-text", "-comment", "-doctype", and None for a
            # processing instruction ("<?php …?>"), which Chromium 156 builds too.
            tag = sibling.tag
            if tag is None or tag == "-text" or tag == "-doctype":
                pass
            elif tag == "-comment":
                position = counts[tag] = counts.get(tag, 0) + 1
                self._steps[sibling.mem_id] = (f"comment()[{position}]", False)
            else:
                key = sibling.mem_id
                position = counts[tag] = counts.get(tag, 0) + 1
                ns = _child_namespace(parent_ns, parent_tag, parent, tag)
                self._namespaces[key] = ns
                if (at_root and tag == "html") or (in_root_html and tag in ("head", "body")):
                    step = tag  # unique in every parsed document
                elif ns == HTML and _NCNAME.match(tag):
                    step = f"{tag}[{position}]"
                else:
                    step = f"*[local-name()={xpath_literal(tag)}][{position}]"
                self._steps[key] = (step, ns == HTML and tag in _TEXT_ONLY)
            sibling = sibling.next


def _child_namespace(parent_ns: str, parent_tag: str, parent, tag: str) -> str:
    if parent_ns == HTML:
        return _html_child(tag)
    if parent_ns == SVG:
        return SVG if parent_tag not in _SVG_HTML_POINTS else _html_child(tag)
    # MathML
    if parent_tag == "annotation-xml":
        if tag == "svg":
            return SVG
        encoding = (parent.attributes.get("encoding") or "").lower()
        if encoding in ("text/html", "application/xhtml+xml"):
            return _html_child(tag)
        return MATHML
    if parent_tag not in _MATHML_TEXT_POINTS or tag in ("mglyph", "malignmark"):
        return MATHML
    return _html_child(tag)


def _html_child(tag: str) -> str:
    if tag == "svg":
        return SVG
    if tag == "math":
        return MATHML
    return HTML
