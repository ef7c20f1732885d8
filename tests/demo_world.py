"""The demo campaigns as the click-map tests use them (a pytest plugin: see conftest.py),
and readers of the page's tables."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django_scopes import scopes_disabled
from lxml import html as lxml_html

from campaigns.models import Campaign, Variant
from clickmap.demo import seed_demo


@pytest.fixture
def demo(db):
    login = seed_demo("pw-for-tests-123", customers=150, render_previews=False)
    with scopes_disabled():
        campaign = Campaign.objects.get(name__startswith="Black Friday — 30%")
        scenario = Campaign.objects.get(name="Welcome series")
    return login.workspace, campaign, scenario


@pytest.fixture
def client(demo, client_for):
    return client_for(get_user_model().objects.get(username="demo"))


def page_url(workspace, campaign):
    return reverse("clickmap:page", args=[workspace.slug, campaign.pk])


def number(text: str) -> float:
    return float(text.replace(",", "").replace("%", "").strip())


def page_table(html: str) -> dict[int, tuple]:
    """link id -> (rank, total, unique, rate, share) as the page's link list shows them."""
    tree = lxml_html.fromstring(html)
    rows = {}
    for tr in tree.cssselect("table.links tbody tr[id^=row-a-]"):
        cells = [td.text_content().strip() for td in tr.cssselect("td")]
        rank, _text, _pos, total, unique, rate, share = cells
        rows[int(tr.get("id").rsplit("-", 1)[1])] = (
            int(rank),
            int(number(total)),
            int(number(unique)),
            number(rate),
            number(share),
        )
    return rows


def summary(html: str) -> dict[str, str]:
    tree = lxml_html.fromstring(html)
    return {
        div.cssselect("span")[0].text_content(): div.cssselect("strong")[0].text_content()
        for div in tree.cssselect("section.summary > div")
    }


def compare_table(html: str) -> list[tuple]:
    """The compare view's rows: (name, rate A, rate B, difference, p, significant), the
    whole email first; None where the page shows a dash."""

    def value(cell):
        text = cell.text_content().strip()
        if text == "—":
            return None
        first = text.split()[0]
        return first if first in ("yes", "no") else number(first)

    tree = lxml_html.fromstring(html)
    rows = []
    for tr in tree.cssselect("table.compare tbody tr"):
        name = tr.cssselect("th .linktext") or tr.cssselect("th")
        rows.append((name[0].text_content().strip(), *(value(td) for td in tr.cssselect("td"))))
    return rows


def variant_named(campaign, name):
    with scopes_disabled():
        return Variant.objects.get(node__campaign=campaign, name=name)
