"""The compare view: two variants side by side, each link's and the email's difference in
click rate with a two-proportion test, equal to the formula written out in the test over
counts recounted from the raw clicks (tests/clickmap_truth.py)."""

import pytest
from django_scopes import scope, scopes_disabled

from campaigns.models import TemplateLink
from clickmap import metrics
from clickmap.dashboard import Selection
from clickmap.significance import two_proportion_test
from tests.clickmap_truth import recount, z_test
from tests.demo_world import compare_table, page_url, variant_named


def test_a_known_difference_has_the_textbook_p_value():
    # 10 of 100 against 20 of 100: pooled 0.15, standard error sqrt(.15·.85·.02) =
    # 0.0505, z = 0.1 / 0.0505 = 1.980, two-sided p = 0.0477 (normal tables).
    test = two_proportion_test(10, 100, 20, 100)
    assert test.z == pytest.approx(1.9803, abs=1e-4)
    assert test.p_value == pytest.approx(0.0477, abs=1e-4)
    assert test.significant
    assert two_proportion_test(20, 100, 10, 100).z == pytest.approx(-1.9803, abs=1e-4)
    assert not two_proportion_test(10, 100, 12, 100).significant
    assert two_proportion_test(0, 50, 0, 60) is None  # nothing varies: nothing to test
    assert two_proportion_test(5, 0, 1, 10) is None
    assert two_proportion_test(11, 10, 1, 10) is None  # window-mode counts over n


def test_groups_of_different_sizes_pool_each_size_in_the_standard_error():
    # 30 of 200 against 45 of 150: pooled 75/350 = 0.21429, standard error
    # sqrt(0.21429 · 0.78571 · (1/200 + 1/150)) = sqrt(0.16837 · 0.011667) = 0.044320,
    # z = (0.30 − 0.15) / 0.044320 = 3.3845, two-sided p = 0.00071 (normal tables: z 3.38
    # gives 0.00072, 3.39 gives 0.00070). Equal groups cannot tell 1/n_a from 1/n_b.
    test = two_proportion_test(30, 200, 45, 150)
    assert test.z == pytest.approx(3.3845, abs=1e-4)
    assert test.p_value == pytest.approx(0.000713, abs=2e-6)
    assert two_proportion_test(45, 150, 30, 200).z == pytest.approx(-3.3845, abs=1e-4)


def test_every_link_and_the_email_match_the_formula_over_a_recount(demo, client):
    workspace, campaign, _ = demo
    a, b = variant_named(campaign, "A"), variant_named(campaign, "B")
    html = client.get(page_url(workspace, campaign), {"compare": b.pk}).content.decode()
    rows = compare_table(html)
    with scopes_disabled():
        truth_a, truth_b = recount([a.pk]), recount([b.pk])
    with scope(workspace=workspace):
        selection = Selection.from_query(campaign, {"compare": b.pk})
        pairs = metrics.compare(selection.scope(), selection.compare_scope()).links

    # The whole email: clickers over delivered.
    name, rate_a, rate_b, diff, p, significant = rows[0]
    want_diff, want_p = z_test(
        truth_a.clickers, truth_a.delivered, truth_b.clickers, truth_b.delivered
    )
    assert (rate_a, rate_b) == (round(truth_a.ctr, 2), round(truth_b.ctr, 2))
    assert diff == pytest.approx(want_diff, abs=0.006)
    assert p == pytest.approx(round(want_p, 4), abs=1e-4)
    assert significant == ("yes" if want_p < 0.05 else "no")

    # Each link: its unique clickers over delivered, on both sides.
    assert len(rows) - 1 == len(pairs)
    checked = 0
    for (name, rate_a, rate_b, diff, p, significant), pair in zip(rows[1:], pairs, strict=True):
        if pair.a is None or pair.b is None:
            assert diff is None and p is None
            continue
        x_a = truth_a.rows[pair.a.link.pk].unique
        x_b = truth_b.rows[pair.b.link.pk].unique
        assert rate_a == pytest.approx(truth_a.rows[pair.a.link.pk].rate, abs=0.006), name
        assert rate_b == pytest.approx(truth_b.rows[pair.b.link.pk].rate, abs=0.006), name
        want_diff, want_p = z_test(x_a, truth_a.delivered, x_b, truth_b.delivered)
        assert pair.difference == pytest.approx(want_diff, abs=2e-4), name
        assert diff == pytest.approx(want_diff, abs=0.006), name
        if want_p is None:
            assert pair.test is None and p is None
            continue
        assert pair.test.p_value == pytest.approx(want_p, rel=1e-9, abs=1e-12), name
        assert p == pytest.approx(round(want_p, 4), abs=1e-4), name
        assert significant == ("yes" if want_p < 0.05 else "no")
        checked += 1
    assert checked >= 3


def test_links_of_two_templates_are_paired_by_what_they_are(demo, client):
    workspace, campaign, _ = demo
    a, b = variant_named(campaign, "A"), variant_named(campaign, "B")
    with scope(workspace=workspace):
        selection = Selection.from_query(campaign, {"compare": b.pk})
        pairs = metrics.compare(selection.scope(), selection.compare_scope()).links
    with scopes_disabled():
        a_links = set(
            TemplateLink.objects.filter(version=a.template_version, mso=False).values_list(
                "pk", flat=True
            )
        )
        b_links = set(
            TemplateLink.objects.filter(version=b.template_version, mso=False).values_list(
                "pk", flat=True
            )
        )
    shown_a = {p.a.link.pk for p in pairs if p.a}
    shown_b = {p.b.link.pk for p in pairs if p.b}
    assert shown_a <= a_links and shown_b <= b_links  # every link of each side, once
    assert len(shown_a) == len([p for p in pairs if p.a])
    for pair in pairs:
        if pair.a and pair.b:
            same_text = pair.a.link.text == pair.b.link.text
            same_href = pair.a.link.href == pair.b.link.href
            assert same_text or same_href or pair.change == "changed"


def test_the_compare_view_shows_both_maps(demo, client):
    workspace, campaign, _ = demo
    b = variant_named(campaign, "B")
    html = client.get(page_url(workspace, campaign), {"compare": b.pk}).content.decode()
    assert 'id="preview-a"' in html and 'id="preview-b"' in html
    assert "Variant B against variant A" in html
    assert "compare=" in html.split('class="button"')[1]  # the export is the compare table


def test_comparing_a_variant_with_itself_is_no_comparison(demo, client):
    workspace, campaign, _ = demo
    a = variant_named(campaign, "A")
    html = client.get(
        page_url(workspace, campaign), {"variant": a.pk, "compare": a.pk}
    ).content.decode()
    assert 'table class="data compare"' not in html


@pytest.mark.django_db
def test_two_variants_of_one_template_version_pair_each_link_once(make_workspace):
    """An A/B test of subjects only (both variants send one version): each link is one
    pair, itself against itself, in the email's order — not listed once per side."""
    from campaigns.models import Campaign, EmailNode, Variant
    from campaigns.services import template_create

    workspace = make_workspace("Subjects only")
    html = "".join(f"<p><a href='https://shop.example/{n}'>Link {n}</a></p>" for n in range(3))
    with scope(workspace=workspace):
        version = template_create(workspace=workspace, name="One", html=html)
        campaign = Campaign.objects.create(workspace=workspace, name="Subjects")
        node = EmailNode.objects.create(campaign=campaign, name="Email", position=1)
        a, b = (
            Variant.objects.create(node=node, name=name, subject=name, template_version=version)
            for name in ("A", "B")
        )
        sides = [
            metrics.Scope(workspace, campaign_id=campaign.pk, node_id=node.pk, variant_id=v.pk)
            for v in (a, b)
        ]
        pairs = metrics.compare(*sides).links
        links = list(TemplateLink.objects.filter(version=version).order_by("ordinal"))
    assert [(p.a.link, p.b.link, p.change) for p in pairs] == [(x, x, "same") for x in links]
