"""Which link of one template version is which link of another.

Two versions of an email (or the templates of two A/B variants) mostly hold the same
links, some edited, some added, removed or moved. Positions (xpaths) are a poor key: a
row inserted at the top shifts every later xpath. So links are matched by what they are
first, in document order, and by place last:

1. the longest run-preserving alignment of identical links (same format, kind, Outlook
   flag, href and text), as a text diff aligns lines: an insertion shifts nothing;
2. inside each stretch the alignment could not match, a link with the same text, or
   else the same href, as one on the other side is that link changed (a new URL on the
   same button); when both sides of a stretch hold as many links, the rest pair up in
   order where they stand at the same xpath (same place, other content);
3. what is left with an identical twin elsewhere has moved; the rest was added or
   removed.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Protocol


class Link(Protocol):
    xpath: str
    format: str
    kind: str
    mso: bool
    href: str
    text: str


@dataclass(frozen=True)
class Match:
    change: str  # "same" | "changed" | "moved" | "added" | "removed"
    old: object | None
    new: object | None


def _key(link: Link) -> tuple:
    return (link.format, link.kind, link.mso, link.href, link.text)


def match_links(old: Sequence[Link], new: Sequence[Link]) -> list[Match]:
    """Every link of ``old`` and ``new`` (each in document order), paired or alone.

    Pairs are "same" (identical, in order), "changed" (the same link with another href
    or text) or "moved" (identical, out of order); unpaired links are "added" (only in
    ``new``) or "removed" (only in ``old``). Links of different formats never pair.
    """
    matches: list[Match] = []
    for fmt in sorted({link.format for link in (*old, *new)}):
        matches += _match_format(
            [link for link in old if link.format == fmt],
            [link for link in new if link.format == fmt],
        )
    return matches


def _match_format(old: list, new: list) -> list[Match]:
    matches: list[Match] = []
    left_old: list = []
    left_new: list = []
    aligner = SequenceMatcher(None, [_key(x) for x in old], [_key(x) for x in new], autojunk=False)
    for tag, i1, i2, j1, j2 in aligner.get_opcodes():
        if tag == "equal":
            matches += [Match("same", o, n) for o, n in zip(old[i1:i2], new[j1:j2], strict=True)]
            continue
        stretch_old, stretch_new = list(old[i1:i2]), list(new[j1:j2])
        for same in (lambda o, n: o.text == n.text, lambda o, n: o.href == n.href):
            for o in list(stretch_old):
                n = next(
                    (n for n in stretch_new if o.kind == n.kind and o.mso == n.mso and same(o, n)),
                    None,
                )
                if n is not None and _key(o) != _key(n):
                    matches.append(Match("changed", o, n))
                    stretch_old.remove(o)
                    stretch_new.remove(n)
        if len(stretch_old) == len(stretch_new):
            for o, n in zip(stretch_old, stretch_new, strict=True):
                if o.xpath == n.xpath and o.kind == n.kind and o.mso == n.mso:
                    matches.append(Match("changed", o, n))
                    stretch_old.remove(o)
                    stretch_new.remove(n)
        left_old += stretch_old
        left_new += stretch_new
    waiting: dict[tuple, list] = {}
    for o in left_old:
        waiting.setdefault(_key(o), []).append(o)
    for n in left_new:
        if waiting.get(_key(n)):
            matches.append(Match("moved", waiting[_key(n)].pop(0), n))
        else:
            matches.append(Match("added", None, n))
    matches += [Match("removed", o, None) for rest in waiting.values() for o in rest]
    return matches
