"""Every unsubscribe wording in campaigns.linkflags, in every language it lists, is
recognised in a case of its own: a hand-written link (href or text) as an email of
that language writes it, put through the template inventory. Each example hangs on
its own pattern alone, so breaking any one pattern fails its case."""

import html
import re
from urllib.parse import unquote

import pytest

from campaigns.inventory import inventory_links
from campaigns.linkflags import _UNSUBSCRIBE_WORDS, _fold

# (the pattern it exercises, language, href, link text), written by hand from how
# emails in those languages word it: never generated from the patterns.
EXAMPLES = [
    ("unsubscrib", "en", "https://shop.example/account", "Unsubscribe from these emails"),
    ("unsubscrib", "en", "https://shop.example/email/unsubscribed-confirm?u=8", "Manage"),
    (r"\bunsub\b", "en", "https://lists.example.com/unsub/4821", "Manage preferences"),
    (r"\bopt ?out\b", "en", "https://mail.example.com/optout?id=9", "here"),
    (r"\bopt ?out\b", "en", "https://mail.example.com/p", "Opt out of marketing"),
    ("abmeld", "de", "https://shop.example.de/n", "Vom Newsletter abmelden"),
    ("abbestell", "de", "https://shop.example.de/n", "Hier können Sie den Newsletter abbestellen"),
    ("newsletter austragen", "de", "https://shop.example.de/n", "Aus dem Newsletter austragen"),
    ("desabonn", "fr", "https://boutique.example.fr/p", "Se désabonner"),
    ("desinscri", "fr", "https://boutique.example.fr/d%C3%A9sinscription", "ici"),
    (r"\bda(?:r|rse|rme|te) de baja\b", "es", "https://tienda.example.es/p", "Darse de baja"),
    (r"\bda(?:r|rse|rme|te) de baja\b", "es", "https://tienda.example.es/p", "Date de baja aquí"),
    (
        r"cancelar (?:la |a |sua )?(?:suscripcion|subscricao|inscricao|assinatura)",
        "es",
        "https://tienda.example.es/p",
        "Cancelar la suscripción",
    ),
    (
        r"cancelar (?:la |a |sua )?(?:suscripcion|subscricao|inscricao|assinatura)",
        "pt",
        "https://loja.example.com.br/p",
        "Cancelar sua assinatura",
    ),
    ("descadastr", "pt", "https://loja.example.com.br/p", "Descadastrar-se"),
    (
        r"annulla(?:re)? (?:l )?iscrizione",
        "it",
        "https://negozio.example.it/p",
        "Annulla l'iscrizione",
    ),
    ("disiscri", "it", "https://negozio.example.it/p", "Disiscriviti"),
    ("afmeld", "nl", "https://winkel.example.nl/p", "Afmelden voor de nieuwsbrief"),
    ("afmeld", "da", "https://butik.example.dk/afmeld?u=3", "Klik her"),
    ("uitschrijv", "nl", "https://winkel.example.nl/p", "Uitschrijven"),
    ("wypisz", "pl", "https://sklep.example.pl/p", "Wypisz się"),
    ("wypisac", "pl", "https://sklep.example.pl/p", "Kliknij, aby wypisać się z newslettera"),
    ("avregistrer", "sv", "https://butik.example.se/p", "Avregistrera dig"),
    ("avsluta prenumeration", "sv", "https://butik.example.se/p", "Avsluta prenumerationen"),
    ("odhlasit", "cs", "https://obchod.example.cz/p", "Odhlásit odběr"),
    (r"abonelikten c[iı]k", "tr", "https://magaza.example.com.tr/p", "Abonelikten çık"),
    (r"abonelikten c[iı]k", "tr", "https://magaza.example.com.tr/p", "ABONELİKTEN ÇIKIN"),
    ("отпис", "ru", "https://magazin.example.ru/p", "Отписаться от рассылки"),
    ("退订", "zh", "https://shop.example.cn/p", "点击退订"),
    ("取消订阅", "zh", "https://shop.example.cn/p", "取消订阅"),
    ("取消訂閱", "zh-Hant", "https://shop.example.tw/p", "取消訂閱電子報"),
    ("配信停止", "ja", "https://shop.example.jp/p", "メールマガジンの配信停止はこちら"),
    ("登録解除", "ja", "https://shop.example.jp/p", "メルマガ登録解除"),
    ("購読解除", "ja", "https://shop.example.jp/p", "購読解除"),
    ("수신 ?거부", "ko", "https://shop.example.kr/p", "수신거부"),
    ("수신 ?거부", "ko", "https://shop.example.kr/p", "이메일 수신 거부"),
    ("구독 ?취소", "ko", "https://shop.example.kr/p", "구독 취소"),
]


def _case_id(example) -> str:
    pattern, language, href, text = example
    return f"{language}:{text if text not in ('here', 'ici', 'Klik her', 'Manage') else href}"


@pytest.mark.parametrize(
    ("pattern", "language", "href", "text"), EXAMPLES, ids=[_case_id(e) for e in EXAMPLES]
)
def test_unsubscribe_wording_is_recognised(pattern, language, href, text):
    source = f'<p><a href="{html.escape(href)}">{html.escape(text)}</a></p>'
    [row] = inventory_links(source)
    assert row.unsubscribe, f"{language} unsubscribe link not recognised: {href} {text!r}"


def test_every_listed_pattern_has_a_case_of_its_own():
    assert set(_UNSUBSCRIBE_WORDS) == {pattern for pattern, *_ in EXAMPLES}


@pytest.mark.parametrize(("pattern", "language", "href", "text"), EXAMPLES)
def test_each_case_is_recognised_by_its_own_pattern_alone(pattern, language, href, text):
    # So that breaking that one pattern cannot go unnoticed: no other one covers for it.
    folded = (_fold(unquote(href)), _fold(text))
    matching = [p for p in _UNSUBSCRIBE_WORDS if any(re.search(p, f) for f in folded)]
    assert matching == [pattern]
