"""The text/plain part of an email, from its rendered HTML."""

import re

from selectolax.lexbor import LexborHTMLParser

_BLOCKS = {"p", "div", "br", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "li", "hr"}
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")


def html_to_text(html: str) -> str:
    """Readable text of an HTML email: block elements on their own lines, links as
    ``text (url)``, hidden, head, style and script content left out."""
    tree = LexborHTMLParser(html)
    for node in tree.css("head, style, script, title, [aria-hidden=true]"):
        node.decompose()
    body = tree.body or tree.root
    if body is None:
        return ""
    for link in body.css("a[href]"):
        href = (link.attributes.get("href") or "").strip()
        text = link.text(separator=" ", strip=True)
        if href and not href.startswith(("#", "mailto:")) and href != text:
            link.insert_after(f" ({href})" if text else href)
    for node in body.css(",".join(sorted(_BLOCKS))):
        node.insert_before("\n")
        node.insert_after("\n")
    text = body.text(separator="", strip=False)
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"
