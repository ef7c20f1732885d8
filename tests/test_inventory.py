"""Link inventory: the browser's tree, XPaths, Outlook links, personalisation, flags,
warnings and bad input (campaigns/inventory.py and its helper modules)."""

import json
import re
import time
import warnings
from html import unescape
from io import StringIO
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import html5lib
import pytest
from django.core.management import CommandError, call_command
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from campaigns.inventory import (
    MAX_TEMPLATE_BYTES,
    TemplateInputError,
    decode_template,
    inventory_links,
    rewrite_links,
    split_mso_xpath,
    template_warnings,
)
from campaigns.linkflags import has_placeholder, is_trackable, is_unsubscribe
from campaigns.linktags import MARKER_ATTR, scan_link_tags

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
CORPUS_FILES = sorted(CORPUS.glob("*.html"))


def read(name: str) -> str:
    return (CORPUS / name).read_text(encoding="utf-8")


def rows_by_href(html: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for row in inventory_links(html):
        found.setdefault(row.href, []).append(row)
    return found


# --- the browser's tree and its XPaths ---------------------------------------------


def test_corpus_is_present():
    assert len(CORPUS_FILES) >= 17
    assert (CORPUS / "edge-cases.html") in CORPUS_FILES


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_xpaths_select_the_same_links_in_html5libs_independent_tree(path):
    """A second conformant HTML5 parser (html5lib, pure Python) resolves every xpath to
    one link with the row's href, and holds exactly as many links as the inventory."""
    html = path.read_text(encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # html5lib's lxml builder warns on xmlns:v names
        tree = html5lib.parse(html, treebuilder="lxml", namespaceHTMLElements=False)
    rows = [row for row in inventory_links(html) if not row.mso]
    for row in rows:
        found = tree.xpath(row.xpath)
        assert len(found) == 1, row.xpath
        assert found[0].get("href").strip() == row.href
    assert len(tree.xpath("//a[@href] | //area[@href]")) == len(rows)


def test_edge_cases_get_the_browsers_positions():
    by_href = rows_by_href(read("edge-cases.html"))
    base = "https://shop.example.com/"

    def xpaths(path):
        return [row.xpath for row in by_href[base + path]]

    assert xpaths("?utm_source=email") == ["/html/body/table[1]/tbody[1]/tr[1]/td[1]/a[1]"]
    assert xpaths("p-closed-by-div") == ["/html/body/table[1]/tbody[1]/tr[2]/td[1]/div[1]/a[1]"]
    # The adoption agency copies a misnested link: two elements, one source tag.
    assert xpaths("misnested") == ["/html/body/p[1]/b[1]/i[1]/a[1]", "/html/body/p[1]/i[1]/a[1]"]
    assert len({row.source_index for row in by_href[base + "misnested"]}) == 1
    assert xpaths("outer") == ["/html/body/p[2]/a[1]"]
    assert xpaths("inner") == ["/html/body/p[2]/a[2]"]
    assert xpaths("foster") == ["/html/body/a[1]"]  # moved in front of its table
    assert xpaths("same") == [
        "/html/body/ul[1]/li[1]/a[1]",
        "/html/body/ul[1]/li[2]/a[1]",
        "/html/body/p[3]/a[1]",
    ]
    assert xpaths("left") == ["/html/body/map[1]/area[1]"]
    assert xpaths("nested") == [
        "/html/body/table[3]/tbody[1]/tr[1]/td[1]/table[1]/tbody[1]/tr[1]/td[1]/a[1]"
    ]
    assert xpaths("unclosed") == ["/html/body/p[7]/span[1]/a[1]"]


def test_rows_carry_href_text_kind_and_order():
    rows = inventory_links(read("edge-cases.html"))
    assert [row.ordinal for row in rows] == list(range(len(rows)))
    escaped = next(row for row in rows if "ent?" in row.href)
    assert escaped.href == "https://shop.example.com/ent?a=1&b=2"  # &amp; decoded
    upper = next(row for row in rows if row.href.endswith("/upper"))
    assert (upper.kind, upper.text) == ("a", "upper-case tags")
    area = next(row for row in rows if row.href.endswith("/right"))
    assert (area.kind, area.text) == ("area", "right")  # area text is its alt
    assert all(row.format == "html" for row in rows)


def test_text_falls_back_to_image_alt_and_collapses_whitespace():
    rows = inventory_links(
        '<a href="/a">  Two\n\t words </a><a href="/b"><img src="x.png" alt=" Sale  banner"></a>'
    )
    assert [row.text for row in rows] == ["Two words", "Sale banner"]


def test_a_link_of_several_images_reads_all_their_alts():
    html = (
        '<a href="/p"><img src="a.png" alt="Merino beanie"><img src="b.png" alt="">'
        '<img src="c.png" alt="£25"></a>'
    )
    assert [row.text for row in inventory_links(html)] == ["Merino beanie £25"]


def test_links_inside_svg_and_odd_names_use_local_name_steps():
    html = '<p><svg><a href="https://e.x/s">s</a></svg><o:p><a href="https://e.x/o">o</a></o:p>'
    rows = inventory_links(html)
    assert [row.xpath for row in rows] == [
        "/html/body/p[1]/*[local-name()='svg'][1]/*[local-name()='a'][1]",
        "/html/body/p[1]/*[local-name()='o:p'][1]/a[1]",
    ]


def test_links_only_in_template_content_or_without_href_are_not_rows():
    html = "<template><a href='/t'>t</a></template><a name=top>anchor</a><a href>empty</a>"
    rows = inventory_links(html)
    assert [(row.href, row.trackable) for row in rows] == [("", False)]


def test_scripts_styles_comments_and_titles_hold_no_links():
    html = (
        "<title><a href=/t></title><script>var s = '<a href=/s>';</script>"
        "<style>/* <a href=/c> */</style><!-- <a href=/m> --><textarea><a href=/x></textarea>"
        "<p><a href=/real>real</a>"
    )
    assert [row.href for row in inventory_links(html)] == ["/real"]


def test_link_copies_lexbor_puts_inside_a_textarea_are_not_links():
    rows = inventory_links("<p><a href=/x>x<p><textarea>y</textarea>")
    assert [row.xpath for row in rows] == ["/html/body/p[1]/a[1]"]


def test_links_in_svg_style_keep_their_source_index():
    # <style> is raw text in HTML but markup inside SVG: the link is real there.
    rows = inventory_links('<svg><style><a href="/s">s</a></style></svg><a href="/h">h</a>')
    assert [(row.href, row.source_index) for row in rows] == [("/s", 0), ("/h", 1)]


def test_quoted_greater_than_does_not_end_the_tag():
    rows = inventory_links('<a title="1 > 0" href="/ok">ok</a>')
    assert [(row.href, row.text, row.source_index) for row in rows] == [("/ok", "ok", 0)]


def test_first_of_duplicate_hrefs_wins_like_the_browser():
    rows = inventory_links('<a href="/first" HREF="/second">x</a>')
    assert [row.href for row in rows] == ["/first"]


def test_marker_attribute_never_reaches_the_rows():
    html = f'<a {MARKER_ATTR}="99" href="/a">a</a><a href="/b">{MARKER_ATTR}</a>'
    rows = inventory_links(html)
    assert [row.source_index for row in rows] == [0, 1]
    assert all(MARKER_ATTR not in row.xpath and MARKER_ATTR not in row.href for row in rows)


# --- Outlook links ----------------------------------------------------------------


def test_vml_button_is_an_mso_row_with_its_visible_twin():
    rows = inventory_links(read("edge-cases.html"))
    [vml] = [row for row in rows if row.mso]
    assert vml.kind == "vml"
    assert vml.href == "https://shop.example.com/cta"
    assert vml.text == "Buy now"
    assert vml.xpath == "/html/body/comment()[1]#mso/*[local-name()='v:roundrect'][1]"
    [twin] = [row for row in rows if row.href == vml.href and not row.mso]
    assert vml.twin_xpath == twin.xpath == "/html/body/a[2]"
    assert split_mso_xpath(vml.xpath) == (
        "/html/body/comment()[1]",
        "/*[local-name()='v:roundrect'][1]",
    )
    assert split_mso_xpath(twin.xpath) is None


_CONDITIONAL = re.compile(r"<!--\[if([^\]]*)\]>(.*?)<!\[endif\]-->", re.S)
_HREF_TAG = re.compile(r"<(a|area|v:[\w-]+)\s[^>]*?\bhref\s*=\s*([\"'])(.*?)\2", re.S | re.I)


@pytest.mark.parametrize(
    "path",
    [path for path in CORPUS_FILES if "[if" in path.read_text(encoding="utf-8")],
    ids=lambda p: p.name,
)
def test_corpus_outlook_links_are_found_with_their_nearest_twin(path):
    html = path.read_text(encoding="utf-8")
    expected = [
        match.group(3)
        for comment in _CONDITIONAL.finditer(html)
        if "mso" in comment.group(1) and "!mso" not in comment.group(1).replace(" ", "")
        for match in _HREF_TAG.finditer(comment.group(2))
    ]
    rows = inventory_links(html)
    mso = [row for row in rows if row.mso]
    assert [row.href for row in mso] == expected
    for row in mso:
        visible = [other for other in rows if not other.mso and other.href == row.href]
        if not visible:
            assert row.twin_xpath is None
            continue
        distances = sorted((abs(other.ordinal - row.ordinal), other.xpath) for other in visible)
        assert row.twin_xpath == distances[0][1]


def test_outlook_conditions_choose_which_comments_are_read():
    html = (
        '<!--[if gte mso 9]><a href="/gte">g</a><![endif]-->'
        '<!--[if (gte mso 9)|(IE)]><table><tr><td><a href="/or">o</a></td></tr></table>'
        "<![endif]-->"
        '<!--[if mso | IE]><v:rect href="/rect">r</v:rect><![endif]-->'
        '<!--[if !mso]><a href="/hidden-from-outlook">h</a><![endif]-->'
        '<!--[if IE]><a href="/ie">ie</a><![endif]-->'
        '<!--[if !mso]><!--><a href="/revealed">visible</a><!--<![endif]-->'
        '<!-- [if mso]><a href="/not-conditional">n</a><![endif]-->'
    )
    rows = inventory_links(html)
    assert [(row.href, row.mso, row.kind) for row in rows] == [
        ("/gte", True, "a"),
        ("/or", True, "a"),
        ("/rect", True, "vml"),
        ("/revealed", False, "a"),
    ]
    assert rows[1].xpath.endswith("#mso/table[1]/tbody[1]/tr[1]/td[1]/a[1]")
    assert all(row.twin_xpath is None for row in rows)


def test_outlook_comment_positions_count_comments_only():
    # "<!x>" and "<![CDATA[…]]>" are bogus comments; "<?php…?>" is a processing
    # instruction in Chromium 156 (and Lexbor), not a comment.
    html = '<p><?php x ?><!-- c --><!x><![CDATA[y]]><!--[if mso]><a href="/o">o</a><![endif]-->'
    [row] = inventory_links(html)
    assert row.xpath == "/html/body/p[1]/comment()[4]#mso/a[1]"


def test_twin_is_the_nearest_visible_link_with_the_same_href():
    vml = '<!--[if mso]><v:roundrect href="/cta">Buy</v:roundrect><![endif]-->'
    after_is_nearer = (
        '<p><a href="/cta">far</a></p><p><a href="/x">x</a></p>'
        + vml
        + '<a href="/cta">after</a><p><a href="/cta">later</a></p>'
    )
    before_is_nearer = (
        '<p><a href="/cta">before</a></p>' + vml + '<a href="/x">x</a><a href="/cta">after</a>'
    )
    tie = '<a href="/cta">before</a>' + vml + '<a href="/cta">after</a>'
    for html, nearest in ((after_is_nearer, "after"), (before_is_nearer, "before"), (tie, "after")):
        rows = inventory_links(html)
        [outlook] = [row for row in rows if row.mso]
        assert outlook.twin_xpath == next(row.xpath for row in rows if row.text == nearest)


# --- personalisation: links identified in the source -------------------------------


def test_source_indices_follow_link_tags_in_source_order():
    html = (
        '<a href="/0">0</a><!--[if mso]><v:roundrect href="/1"/><![endif]-->'
        "<a name=no-href>x</a><area href='/2' alt=a><A HREF=/3>3</A>"
    )
    links = scan_link_tags(html)
    assert [html[link.href_start : link.href_end] for link in links] == ["/0", "/1", "/2", "/3"]
    assert [link.tag.mso for link in links] == [False, True, False, False]
    rows = inventory_links(html)
    assert {row.href: row.source_index for row in rows} == {"/0": 0, "/1": 1, "/2": 2, "/3": 3}


def test_rewrite_links_changes_only_href_values():
    html = (
        "<p title='<a href=no>'>x</p>\n<a class=b href=\"{{ url }}\">a</a>"
        "<a href=/bare-value>b</a><a href>c</a><!--[if mso]><v:rect href='/v'/><![endif]-->"
    )
    out = rewrite_links(html, lambda k, raw: f"[{k}:{raw}]")
    assert out == (
        "<p title='<a href=no>'>x</p>\n<a class=b href=\"[0:{{ url }}]\">a</a>"
        "<a href=[1:/bare-value]>b</a><a href=[2:]>c</a>"
        "<!--[if mso]><v:rect href='[3:/v]'/><![endif]-->"
    )
    assert rewrite_links(html, lambda k, raw: raw) == html


def test_rewrite_links_quotes_an_unquoted_value_that_gains_spaces():
    out = rewrite_links("<a href=/x>x</a>", lambda k, raw: "{% filter t(0) %}" + raw + "{% end %}")
    assert out == '<a href="{% filter t(0) %}/x{% end %}">x</a>'


PERSONALISED = """<!DOCTYPE html>
<html><body>
<p>Hi {{ customer.first_name }},
<a href="https://shop.example.com/?c={{ customer.id }}">shop</a></p>
<table>
{% for product in products %}
<tr><td><a href="{{ product.url }}">{{ product.name }}</a></td>
<td><a href="{{ product.url }}?buy=1"><img src="{{ product.image }}" alt="Buy"></a></td></tr>
{% endfor %}
</table>
{% if customer.vip %}<p><a href="https://shop.example.com/vip">VIP lounge</a></p>{% endif %}
<!--[if mso]><v:roundrect href="https://shop.example.com/cta">Buy now</v:roundrect><![endif]-->
<!--[if !mso]><!--><a href="https://shop.example.com/cta">Buy now</a><!--<![endif]-->
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>
"""


def _render_tracked(template: str, context: dict) -> str:
    env = SandboxedEnvironment(autoescape=True)

    def cm_track(value, index):
        destination = str(value).replace("&amp;", "&")
        url = f"https://t.example/c?k={index}&amp;to={quote(destination, safe='')}"
        return Markup(url)  # noqa: S704 - built from quoted parts only

    env.filters["cm_track"] = cm_track
    tracked = rewrite_links(
        template, lambda k, raw: f"{{% filter cm_track({k}) %}}{raw}{{% endfilter %}}"
    )
    return env.from_string(tracked).render(**context)


def _clicks(rendered: str) -> list[tuple[int, str]]:
    """(source index, destination) of every link in the rendered email, source order."""
    found = []
    for link in scan_link_tags(rendered):
        query = parse_qs(urlsplit(unescape(rendered[link.href_start : link.href_end])).query)
        found.append((int(query["k"][0]), query["to"][0]))
    return found


def test_personalised_emails_map_every_link_back_to_its_inventory_row():
    rows = inventory_links(PERSONALISED)
    index = {row.href: row.source_index for row in rows if not row.mso}
    vml_index = next(row.source_index for row in rows if row.mso)
    assert len({row.source_index for row in rows}) == len(rows) == 7
    unsubscribe = next(row for row in rows if row.unsubscribe)
    assert unsubscribe.href == "{{ unsubscribe_url }}" and unsubscribe.placeholder

    products = [
        {"name": f"P{n}", "url": f"https://shop.example.com/p/{n}", "image": "x.png"}
        for n in (1, 2, 3)
    ]
    vip = {
        "customer": {"first_name": "Ada", "id": 7, "vip": True},
        "products": products,
        "unsubscribe_url": "https://shop.example.com/u/7",
    }
    regular = {
        "customer": {"first_name": "Bo", "id": 8, "vip": False},
        "products": products[1:2],
        "unsubscribe_url": "https://shop.example.com/u/8",
    }

    def expected(context):
        clicks = [
            (
                index["https://shop.example.com/?c={{ customer.id }}"],
                f"https://shop.example.com/?c={context['customer']['id']}",
            )
        ]
        for product in context["products"]:
            clicks.append((index["{{ product.url }}"], product["url"]))
            clicks.append((index["{{ product.url }}?buy=1"], product["url"] + "?buy=1"))
        if context["customer"]["vip"]:
            clicks.append((index["https://shop.example.com/vip"], "https://shop.example.com/vip"))
        clicks.append((vml_index, "https://shop.example.com/cta"))
        clicks.append((index["https://shop.example.com/cta"], "https://shop.example.com/cta"))
        clicks.append((index["{{ unsubscribe_url }}"], context["unsubscribe_url"]))
        return clicks

    for context in (vip, regular):
        assert _clicks(_render_tracked(PERSONALISED, context)) == expected(context)
    # Structure differs per customer, identities do not.
    assert len(_clicks(_render_tracked(PERSONALISED, vip))) == 11
    assert len(_clicks(_render_tracked(PERSONALISED, regular))) == 6


# --- flags ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Unsubscribe",
        "opt out",
        "Opt-out of these emails",
        "Newsletter abmelden",
        "Se désinscrire",
        "Vous pouvez vous désabonner",
        "Darse de baja",
        "Cancelar inscrição",
        "Annulla iscrizione",
        "Afmelden",
        "Wypisz się",
        "Отписаться от рассылки",
        "退订",
        "配信停止",
        "수신거부",
    ],
)
def test_unsubscribe_link_text_in_many_languages(text):
    assert is_unsubscribe("https://shop.example.com/x", text)


@pytest.mark.parametrize(
    "href",
    [
        "https://shop.example.com/unsubscribe?u=1",
        "https://shop.example.com/email/opt_out",
        "{{ unsubscribe_url }}",
        "{{ links.list_unsubscribe }}",
        "{% url 'optout' %}",
        "mailto:list@example.com?subject=unsubscribe",
        "mailto:unsubscribe@example.com",
        "https://shop.example.com/d%C3%A9sinscription",
    ],
)
def test_unsubscribe_href_or_placeholder_name(href):
    assert is_unsubscribe(href, "click here")


@pytest.mark.parametrize(
    "href, text",
    [
        ("https://shop.example.com/subscribe", "Subscribe"),
        ("https://shop.example.com/", "Our baja california collection"),
        ("{{ product.url }}", "Out now"),
    ],
)
def test_ordinary_links_are_not_unsubscribe(href, text):
    assert not is_unsubscribe(href, text)


@pytest.mark.parametrize(
    "href",
    [
        "",
        "#top",
        "mailto:a@b.c",
        "MAILTO:a@b.c",
        "tel:+1555",
        "sms:+1555",
        "javascript:0",
        " java\nscript:alert(1)",
        "data:text/html,x",
    ],
)
def test_untrackable_hrefs(href):
    assert not is_trackable(href)


@pytest.mark.parametrize(
    "href", ["https://x.example/", "http://x", "/relative", "{{ product.url }}", "x.html#frag"]
)
def test_trackable_hrefs(href):
    assert is_trackable(href)


def test_placeholder_flag():
    assert has_placeholder("https://x/?n={{ customer.first_name }}")
    assert has_placeholder("{% if a %}https://a{% else %}https://b{% endif %}")
    assert not has_placeholder("https://x/?a={b}")


# --- warnings ---------------------------------------------------------------------


def test_warnings_say_what_the_browser_rearranges_with_lines():
    found = {(w.line, w.code) for w in template_warnings(read("edge-cases.html"))}
    assert {
        (9, "misnested-tags"),
        (10, "implied-end-tag"),
        (10, "stray-end-tag"),
        (11, "moved-out-of-table"),
        (27, "unclosed-tag"),
    } <= found
    table = next(w for w in template_warnings(read("edge-cases.html")) if w.line == 11)
    assert str(table) == (
        "Line 11: a link inside a table but outside a cell is moved above the table by browsers"
    )


def test_well_formed_template_has_no_warnings():
    assert template_warnings(read("leemunroe-email.html")) == []


def test_link_without_text_or_alt_is_warned_once_per_source_tag():
    html = '<!DOCTYPE html>\n<p>\n<a href="/empty"><img src="a.png" width=1 height=1></a>\n'
    html += '<a href="/ok"><img src="b.png" alt="Shop" width=1 height=1></a>'
    [warning] = template_warnings(html)
    assert (warning.line, warning.code) == (3, "link-without-text")
    assert "/empty" in warning.message


def test_duplicate_ids_and_images_without_size():
    html = '<!DOCTYPE html>\n<p id="hero">\n<img src="https://cdn.example/a/banner.png">\n'
    html += '<div id="hero"></div>'
    found = template_warnings(html)
    assert [(w.line, w.code) for w in found] == [(3, "image-without-size"), (4, "duplicate-id")]
    assert '"banner.png"' in found[0].message
    assert 'id "hero" is used 2 times (first on line 2)' in found[1].message


def test_repeated_warnings_are_folded_into_one():
    html = "<!DOCTYPE html>\n" + "".join(f"<p>{n}</td>\n" for n in range(10))
    [warning] = template_warnings(html)
    assert warning.code == "stray-end-tag" and warning.line == 2
    assert warning.message.endswith("(also on lines 3, 4, 5, 6, 7 and 4 more)")


def test_missing_doctype_and_unclosed_comment_are_warned():
    codes = {w.code for w in template_warnings("<p>x</p><!-- never closed <a href=/x>x</a>")}
    assert {"quirks-mode", "unclosed-comment"} <= codes


# --- bad input --------------------------------------------------------------------


def test_invalid_utf8_names_line_and_column():
    with pytest.raises(TemplateInputError, match="not valid UTF-8.*line 2, column 7"):
        decode_template(b"<p>ok</p>\n<p>caf\xe9</p>")


def test_binary_garbage_is_refused():
    garbage = bytes((n * 7919 + 13) % 256 for n in range(4096))
    with pytest.raises(TemplateInputError, match="binary data"):
        decode_template(garbage)


def test_image_file_is_refused_by_name():
    with pytest.raises(TemplateInputError, match="PNG image"):
        decode_template(b"\x89PNG\r\n\x1a\n" + bytes(100))


def test_too_large_template_is_refused_before_parsing():
    with pytest.raises(TemplateInputError, match="limit is 8 MB"):
        decode_template(b"a" * (10 * 1024 * 1024))
    with pytest.raises(TemplateInputError, match="limit"):
        inventory_links("a" * (MAX_TEMPLATE_BYTES + 1))


def test_five_megabyte_template_is_inventoried():
    page = read("cerberus-hybrid.html")
    body = page[page.index("<body") : page.index("</body>")].split(">", 1)[1]
    copies = 5 * 1024 * 1024 // len(body)
    big = page.replace("</body>", body * copies + "</body>").encode("utf-8")
    assert 5 * 1024 * 1024 <= len(big) < MAX_TEMPLATE_BYTES
    rows = inventory_links(decode_template(big))
    assert len(rows) == len(inventory_links(page)) * (copies + 1)


def test_unclosed_tags_nesting_thousands_deep_are_refused_fast():
    html = "<div>" * 30_000 + '<a href="/x">x</a>'
    started = time.perf_counter()
    with pytest.raises(TemplateInputError, match="nest about 30001 levels deep"):
        inventory_links(html)
    [warning] = template_warnings(html)
    assert warning.code == "too-deep"
    assert time.perf_counter() - started < 5  # tree building would take many seconds


def test_nesting_deeper_than_chromium_builds_is_warned():
    html = "<!DOCTYPE html>" + "<div>" * 600 + '<a href="/x">x</a>'
    assert [row.href for row in inventory_links(html)] == ["/x"]
    assert "too-deep" in {w.code for w in template_warnings(html)}


def test_encodings_bom_meta_and_legacy():
    assert decode_template("\ufeff<p>é</p>".encode()) == "<p>é</p>"
    assert decode_template("<p>é</p>".encode("utf-16")) == "<p>é</p>"
    cyrillic = '<meta charset="windows-1251"><p>Привет</p>'
    assert decode_template(cyrillic.encode("cp1251")) == cyrillic
    latin = b'<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1"><p>'
    assert decode_template(latin + b"\xe9\x80\x81") == latin.decode() + "é€\x81"
    assert decode_template(b"") == ""


def test_template_without_links_has_an_empty_inventory():
    assert inventory_links("<!DOCTYPE html><p>Just text</p>") == []
    assert inventory_links("") == []


def test_amp_email_is_inventoried_as_amp():
    amp = (
        "<!doctype html><html \u26a14email><head><meta charset=utf-8>"
        "<script async src=https://cdn.ampproject.org/v0.js></script>"
        "<style amp4email-boilerplate>body{visibility:hidden}</style></head><body>"
        "<amp-img src=https://x/p.png width=600 height=300 layout=responsive></amp-img>"
        '<a href="https://shop.example.com/amp">Shop</a>'
        '<amp-carousel width=600 height=300 type=slides><div><a href="https://x/1">1</a></div>'
        "</amp-carousel></body></html>"
    )
    rows = inventory_links(amp, format="amp")
    assert [(row.href, row.format) for row in rows] == [
        ("https://shop.example.com/amp", "amp"),
        ("https://x/1", "amp"),
    ]
    assert rows[1].xpath == "/html/body/amp-carousel[1]/div[1]/a[1]"
    with pytest.raises(ValueError):
        inventory_links(amp, format="pdf")


# --- the management command -------------------------------------------------------


def test_inventory_command_prints_json_rows():
    out = StringIO()
    call_command("inventory", str(CORPUS / "edge-cases.html"), "--json", stdout=out)
    rows = json.loads(out.getvalue())
    assert len(rows) == len(inventory_links(read("edge-cases.html")))
    vml = next(row for row in rows if row["mso"])
    assert vml["kind"] == "vml" and vml["twin_xpath"] == "/html/body/a[2]"
    assert {
        "xpath",
        "href",
        "text",
        "kind",
        "mso",
        "twin_xpath",
        "unsubscribe",
        "trackable",
        "placeholder",
        "format",
        "ordinal",
    } <= set(rows[0])


def test_inventory_command_prints_a_table():
    out = StringIO()
    call_command("inventory", str(CORPUS / "mailgun-action.html"), stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:4] == ["#", "kind", "flags", "href"]
    assert lines[-1] == "2 links"


def test_inventory_command_reports_bad_files_without_traceback(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_bytes(b"<p>\xff\xfe\xfa</p>")
    with pytest.raises(CommandError, match="bad.html: The file is not valid UTF-8"):
        call_command("inventory", str(bad))
    with pytest.raises(CommandError, match="no such file"):
        call_command("inventory", str(tmp_path / "missing.html"))
    huge = tmp_path / "huge.html"
    with huge.open("wb") as f:
        f.truncate(MAX_TEMPLATE_BYTES + 1)
    with pytest.raises(CommandError, match="limit is 8 MB"):
        call_command("inventory", str(huge))
    deep = tmp_path / "deep.html"
    deep.write_text("<div>" * 5000)
    with pytest.raises(CommandError, match="deep.html: Tags in this template nest"):
        call_command("inventory", str(deep))
