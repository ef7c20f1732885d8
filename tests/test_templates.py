"""Template pages and versions: immutable versions with their inventory, warnings, diffs,
and clear errors for bad input."""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_scopes import scope, scopes_disabled

from campaigns.inventory import inventory_links
from campaigns.models import Customer, ImmutableError, Role, Template, TemplateLink, TemplateVersion
from campaigns.selectors import version_diff
from campaigns.services import template_create, template_version_save

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

V1 = """<html><body><table>
<tr><td><a href="https://shop.example/new">New arrivals</a></td></tr>
<tr><td><a href="https://shop.example/sale">Sale</a></td></tr>
<tr><td><a href="https://shop.example/old">Old page</a></td></tr>
</table></body></html>"""


@pytest.fixture
def ws(make_workspace, make_user):
    owner = make_user("owner")
    return make_workspace("Acme", owner=owner), owner


def test_creating_a_template_saves_version_one_with_its_inventory(ws, client_for):
    workspace, owner = ws
    html = (CORPUS / "mailgun-billing.html").read_text()
    response = client_for(owner).post(
        f"/w/{workspace.slug}/templates/new/", {"name": "Billing", "html": html}, follow=True
    )
    assert response.status_code == 200
    with scopes_disabled():
        version = TemplateVersion.objects.get(template__name="Billing")
        rows = list(version.links.order_by("ordinal").values_list("xpath", "href"))
    assert version.number == 1
    assert rows == [(link.xpath, link.href) for link in inventory_links(html)]
    page = response.content.decode()
    assert f"{len(rows)} link" in page and rows[0][0] in page


def test_uploaded_files_in_other_encodings_are_decoded(ws, client_for):
    workspace, owner = ws
    html = '<meta charset="iso-8859-1"><p><a href="https://x.example/">Café Zürich</a></p>'
    upload = SimpleUploadedFile("latin.html", html.encode("latin-1"), "text/html")
    client_for(owner).post(
        f"/w/{workspace.slug}/templates/new/", {"name": "Latin", "html_file": upload}
    )
    with scopes_disabled():
        assert TemplateLink.objects.get().text == "Café Zürich"


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x00\x01\x02\xff\xfe\x00binary\x00\x00" * 100, "binary"),
        (b"x" * (11 * 1024 * 1024), "the limit is 8 mb"),
    ],
)
def test_bad_uploads_get_a_clear_message_and_save_nothing(ws, client_for, payload, message):
    workspace, owner = ws
    upload = SimpleUploadedFile("bad.html", payload, "text/html")
    response = client_for(owner).post(
        f"/w/{workspace.slug}/templates/new/", {"name": "Bad", "html_file": upload}
    )
    assert response.status_code == 400
    assert message in response.content.decode().lower()
    with scopes_disabled():
        assert not Template.objects.exists()


def test_empty_form_asks_for_html(ws, client_for):
    workspace, owner = ws
    response = client_for(owner).post(f"/w/{workspace.slug}/templates/new/", {"name": "Empty"})
    assert response.status_code == 400
    assert "Paste the template" in response.content.decode()


def test_a_five_megabyte_template_is_saved(ws, client_for):
    workspace, owner = ws
    row = '<tr><td><a href="https://x.example/p">Product</a> ' + "lorem ipsum " * 40 + "</td></tr>"
    html = "<table>" + row * (5 * 1024 * 1024 // len(row)) + "</table>"
    assert len(html) > 4.9 * 1024 * 1024
    response = client_for(owner).post(
        f"/w/{workspace.slug}/templates/new/", {"name": "Huge", "html": html}
    )
    assert response.status_code == 302
    with scopes_disabled():
        assert TemplateLink.objects.count() == html.count("<a ")


def test_script_in_a_template_is_shown_as_text_never_run(ws, client_for):
    workspace, owner = ws
    html = '<p><a href="https://x.example/">x</a><script>alert("pwned")</script></p>'
    response = client_for(owner).post(
        f"/w/{workspace.slug}/templates/new/", {"name": "Script", "html": html}, follow=True
    )
    page = response.content.decode()
    assert '<script>alert("pwned")</script>' not in page
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page


def test_template_without_links_has_an_empty_inventory(ws, client_for):
    workspace, owner = ws
    response = client_for(owner).post(
        f"/w/{workspace.slug}/templates/new/",
        {"name": "Plain", "html": "<p>Just text.</p>"},
        follow=True,
    )
    assert "This template has no links" in response.content.decode()


def test_editing_saves_a_new_version_and_old_versions_keep_their_links(ws, client_for):
    workspace, owner = ws
    with scope(workspace=workspace):
        v1 = template_create(workspace=workspace, name="News", html=V1, author=owner)
        v1_links = list(v1.links.values_list("xpath", "href"))
    edited = V1.replace("https://shop.example/sale", "https://shop.example/black-friday")
    client = client_for(owner)
    url = f"/w/{workspace.slug}/templates/{v1.template_id}/edit/"
    client.post(url, {"html": edited, "note": "Black Friday link"})
    client.post(url, {"html": edited})  # unchanged: no new version
    with scope(workspace=workspace):
        numbers = list(v1.template.versions.values_list("number", flat=True))
        assert sorted(numbers) == [1, 2]
        assert list(v1.links.values_list("xpath", "href")) == v1_links
        v2 = v1.template.versions.get(number=2)
        assert v2.note == "Black Friday link"
        assert v2.links.filter(href="https://shop.example/black-friday").exists()


def test_saved_versions_cannot_change(ws):
    workspace, owner = ws
    with scope(workspace=workspace):
        version = template_create(workspace=workspace, name="Fixed", html=V1)
        version.html = "<p>rewritten</p>"
        with pytest.raises(ImmutableError):
            version.save()


def test_diff_names_added_removed_moved_and_changed_links(ws):
    workspace, _ = ws
    v2_html = """<html><body><div><table>
<tr><td><a href="https://shop.example/new">New arrivals</a></td></tr>
<tr><td><a href="https://shop.example/sale">Sale!</a></td></tr>
</table></div>
<p><a href="https://shop.example/blog">Blog</a></p></body></html>"""
    with scope(workspace=workspace):
        v1 = template_create(workspace=workspace, name="Diff", html=V1)
        v2, _ = template_version_save(template=v1.template, html=v2_html)
        changes = {(c.change, (c.new or c.old).href) for c in version_diff(v1, v2)}
    # The table moved into a div: every xpath changed, but "New arrivals" is the same link;
    # "Sale" became "Sale!" (same link, new text); "Old page" went, "Blog" came.
    assert changes == {
        ("changed", "https://shop.example/sale"),
        ("removed", "https://shop.example/old"),
        ("added", "https://shop.example/blog"),
    }


def test_diff_a_row_inserted_at_the_top_moves_nothing(ws):
    workspace, _ = ws
    top = '<tr><td><a href="https://shop.example/banner">Banner</a></td></tr>'
    v2_html = V1.replace("<table>", "<table>" + top).replace("/sale", "/sale-2026")
    with scope(workspace=workspace):
        v1 = template_create(workspace=workspace, name="Inserted", html=V1)
        v2, _ = template_version_save(template=v1.template, html=v2_html)
        diff = version_diff(v1, v2)
    assert [(c.change, c.old and c.old.href, c.new and c.new.href) for c in diff] == [
        ("changed", "https://shop.example/sale", "https://shop.example/sale-2026"),
        ("added", None, "https://shop.example/banner"),
    ]


def test_diff_a_link_put_elsewhere_in_the_order_has_moved(ws):
    workspace, _ = ws
    rows = V1.split("\n")
    swapped = "\n".join([rows[0], rows[3], rows[1], rows[2], *rows[4:]])
    with scope(workspace=workspace):
        v1 = template_create(workspace=workspace, name="Swapped", html=V1)
        v2, _ = template_version_save(template=v1.template, html=swapped)
        diff = version_diff(v1, v2)
    assert [(c.change, c.new.href) for c in diff] == [("moved", "https://shop.example/old")]


def test_diff_same_place_other_destination_is_changed(ws):
    workspace, _ = ws
    with scope(workspace=workspace):
        v1 = template_create(workspace=workspace, name="Changed", html=V1)
        v2, _ = template_version_save(
            template=v1.template, html=V1.replace("/old", "/new-page").replace("Old page", "New")
        )
        diff = version_diff(v1, v2)
    assert [(c.change, c.old.href, c.new.href) for c in diff] == [
        ("changed", "https://shop.example/old", "https://shop.example/new-page")
    ]


def test_version_page_shows_history_diff_and_warnings(ws, client_for):
    workspace, owner = ws
    with scope(workspace=workspace):
        v1 = template_create(workspace=workspace, name="Page", html=V1)
        v2, _ = template_version_save(
            template=v1.template,
            html=V1.replace(
                '<tr><td><a href="https://shop.example/old">Old page</a></td></tr>',
                '<tr><a href="https://shop.example/stray">Stray</a></tr>',
            ),
        )
    page = client_for(owner).get(v2.get_absolute_url()).content.decode()
    assert "Version 1" in page and "Version 2" in page
    assert "Changes since version 1" in page
    assert "Removed" in page and "Added" in page
    assert "Line 4" in page  # the stray link outside a cell is moved by browsers
    older = client_for(owner).get(v1.get_absolute_url() + "?compare=2").content.decode()
    assert "Changes since version 2" in older


def test_outlook_links_point_at_their_visible_twin(ws):
    workspace, _ = ws
    html = (CORPUS / "edge-cases.html").read_text()
    with scope(workspace=workspace):
        version = template_create(workspace=workspace, name="Outlook", html=html)
        mso = list(version.links.filter(mso=True).select_related("twin"))
        assert mso, "edge-cases.html has Outlook-only links"
        twinned = [link for link in mso if link.twin is not None]
        assert twinned, "the VML button has a visible twin"
        for link in twinned:
            assert link.twin.href == link.href and not link.twin.mso
            assert link.twin.version_id == version.pk


def test_viewer_reads_templates_but_cannot_create_or_edit(ws, add_member, client_for):
    workspace, _ = ws
    with scope(workspace=workspace):
        version = template_create(workspace=workspace, name="Readable", html=V1)
    viewer = client_for(add_member(workspace, Role.VIEWER))
    assert viewer.get(f"/w/{workspace.slug}/templates/").status_code == 200
    assert viewer.get(version.get_absolute_url()).status_code == 200
    assert (
        viewer.post(f"/w/{workspace.slug}/templates/new/", {"name": "X", "html": V1}).status_code
        == 403
    )
    edit = viewer.post(f"/w/{workspace.slug}/templates/{version.template_id}/edit/", {"html": "x"})
    assert edit.status_code == 403
    with scopes_disabled():
        assert TemplateVersion.objects.count() == 1


def test_markup_nested_too_deep_gets_a_clear_message_not_a_500(ws, client_for):
    workspace, owner = ws
    html = "<div>" * 5000 + '<a href="https://x.example/">deep</a>' + "</div>" * 5000
    response = client_for(owner).post(
        f"/w/{workspace.slug}/templates/new/", {"name": "Deep", "html": html}
    )
    assert response.status_code == 400
    assert "nest" in response.content.decode().lower()
    with scopes_disabled():
        assert not Template.objects.exists()


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def test_personalisation_that_would_fail_every_send_is_a_warning_at_save(ws, client_for):
    workspace, owner = ws
    konsav = (CORPUS / "konsav-general.html").read_text(encoding="utf-8")
    broken = V1.replace("Old page", "Hi {{ first_name | }}")
    with scope(workspace=workspace):
        Customer.objects.create(workspace=workspace, email="pat@example.com")
        placeholders = template_create(workspace=workspace, name="Konsav", html=konsav)
        syntax = template_create(workspace=workspace, name="Broken", html=broken)
        fine = template_create(
            workspace=workspace, name="Fine", html=V1.replace("Old page", "Hi {{ first_name }}")
        )
    codes = {w["code"]: w for w in placeholders.warnings}
    assert "pat@example.com" in codes["personalisation-fails"]["message"]
    assert "undefined" in codes["personalisation-fails"]["message"]
    (unclosed,) = [w for w in syntax.warnings if w["code"] == "personalisation-syntax"]
    assert unclosed["line"] == broken[: broken.index("{{ first_name |")].count("\n") + 1
    assert not [w for w in fine.warnings if w["code"].startswith("personalisation")]
    page = client_for(owner).get(placeholders.get_absolute_url()).content.decode()
    assert "the personalisation fails for customer pat@example.com" in page
