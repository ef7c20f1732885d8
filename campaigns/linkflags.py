"""What an inventory row's href and text say about the link: unsubscribe, trackable,
template placeholder."""

import re
import unicodedata
from functools import lru_cache
from urllib.parse import unquote

# Unsubscribe wording, written as it reads after _fold(): lowercase, accents removed,
# every run of punctuation or spaces one space. Whole-word where a short stem would
# hit ordinary words.
_UNSUBSCRIBE_WORDS = (
    r"unsubscrib",  # unsubscribe, unsubscribed, list unsubscribe, unsubscribe_url
    r"\bunsub\b",
    r"\bopt ?out\b",  # opt out, opt-out, optout, opt_out_url
    r"abmeld",  # abmelden, abmeldung (de)
    r"abbestell",  # abbestellen (de)
    r"newsletter austragen",
    r"desabonn",  # désabonner, désabonnement (fr)
    r"desinscri",  # se désinscrire, désinscription (fr)
    r"\bda(?:r|rse|rme|te) de baja\b",  # darse de baja (es)
    r"cancelar (?:la |a |sua )?(?:suscripcion|subscricao|inscricao|assinatura)",  # es, pt
    r"descadastr",  # descadastrar (pt)
    r"annulla(?:re)? (?:l )?iscrizione",  # it
    r"disiscri",  # disiscriviti, disiscrizione (it)
    r"afmeld",  # afmelden (nl), afmeld (da)
    r"uitschrijv",  # uitschrijven (nl)
    r"wypisz",  # wypisz się (pl)
    r"wypisac",
    r"avregistrer",  # sv
    r"avsluta prenumeration",
    r"odhlasit",  # cs
    r"abonelikten c[iı]k",  # tr
    r"отпис",  # отписаться, отписка (ru, uk)
    r"退订",  # zh
    r"取消订阅",
    r"取消訂閱",
    r"配信停止",  # ja
    r"登録解除",
    r"購読解除",
    r"수신 ?거부",  # ko
    r"구독 ?취소",
)
_UNSUBSCRIBE = re.compile("|".join(_UNSUBSCRIBE_WORDS))
_SEPARATORS = re.compile(r"[\W_]+")
_COMBINING_MARKS = re.compile("[\u0300-\u036f]")  # accents left by NFKD: é -> e
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):")
_UNTRACKABLE_SCHEMES = frozenset({"mailto", "tel", "sms", "javascript", "data", "callto"})
_C0_AND_SPACE = "".join(map(chr, range(0x21)))


def _fold(text: str) -> str:
    text = text.lower()
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = unicodedata.normalize("NFC", _COMBINING_MARKS.sub("", decomposed))
    return _SEPARATORS.sub(" ", text)


@lru_cache(maxsize=4096)  # link-dense emails repeat the same hrefs and labels
def is_unsubscribe(href: str, text: str) -> bool:
    """True when the href (percent-decoded, placeholders included, e.g.
    ``{{ unsubscribe_url }}`` or ``mailto:…?subject=unsubscribe``) or the link text
    asks to unsubscribe, in any of the languages listed above."""
    return bool(_UNSUBSCRIBE.search(_fold(unquote(href))) or _UNSUBSCRIBE.search(_fold(text)))


def has_placeholder(href: str) -> bool:
    """True when the href holds template syntax (``{{ … }}`` or ``{% … %}``)."""
    return bool(_PLACEHOLDER.search(href))


def _as_browsers_read(href: str) -> str:
    # URL parsing drops tabs and newlines anywhere and leading controls and spaces.
    return href.replace("\t", "").replace("\n", "").replace("\r", "").lstrip(_C0_AND_SPACE)


def href_scheme(href: str) -> str | None:
    """The href's scheme as a browser reads it, lower-cased (``JavaScript:`` with a tab
    inside is ``javascript``), or None for a relative href."""
    scheme = _SCHEME.match(_as_browsers_read(href))
    return scheme.group(1).lower() if scheme else None


def is_trackable(href: str) -> bool:
    """False for hrefs a redirect cannot wrap: empty, ``#fragment`` and the schemes
    mailto, tel, sms, javascript, data (and callto); True otherwise. Placeholders
    count as URLs, since they render to one per customer."""
    cleaned = _as_browsers_read(href)
    if not cleaned or cleaned.startswith("#"):
        return False
    return href_scheme(cleaned) not in _UNTRACKABLE_SCHEMES
