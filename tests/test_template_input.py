"""Bad template input gets a 400 with a message and saves nothing, never a 500: NUL
characters the binary sniff cannot see, personalisation nested deeper than Jinja can
parse, subjects that are not valid Jinja, and any bytes at all."""

import codecs
import itertools

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_scopes import scope, scopes_disabled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.models import Template, Variant

_names = itertools.count(1)


@pytest.fixture
def ws(make_workspace, make_user):
    owner = make_user("owner")
    return make_workspace("Acme", owner=owner), owner


def post_upload(client, workspace, data: bytes, name="Upload"):
    upload = SimpleUploadedFile("email.html", data, "text/html")
    return client.post(f"/w/{workspace.slug}/templates/new/", {"name": name, "html_file": upload})


def refused(response, *words):
    assert response.status_code == 400
    page = response.content.decode()
    for word in words:
        assert word in page
    with scopes_disabled():
        assert not Template.objects.exists()
    return True


def test_a_nul_byte_after_the_first_64_kib_is_refused_with_its_place(ws, client_for):
    workspace, owner = ws
    head = b'<p><a href="https://shop.example/">Shop</a></p>\n' * 2000  # ~100 KB
    response = post_upload(client_for(owner), workspace, head + b"oops\x00" + b"<p>end</p>")
    # Line 2001, after "oops": column 5.
    assert refused(response, "NUL character (line 2001, column 5)")


def test_a_utf16_upload_holding_u0000_is_refused(ws, client_for):
    workspace, owner = ws
    text = '<p><a href="https://shop.example/">Shop</a></p>\n<p>a\x00b</p>'
    data = codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    assert refused(
        post_upload(client_for(owner), workspace, data), "NUL character (line 2, column 5)"
    )


def test_pasted_html_with_a_nul_is_refused_too(ws, client_for):
    workspace, owner = ws
    response = client_for(owner).post(
        f"/w/{workspace.slug}/templates/new/", {"name": "P", "html": "<p>a\x00b</p>"}
    )
    assert refused(response, "Null characters are not allowed")


@pytest.mark.parametrize(
    "html",
    [
        "<p>{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}</p>",
        "{% if 1 %}" * 2000 + "<p>x</p>" + "{% endif %}" * 2000,
        "<p>{{ " + "[" * 30 + "1" + "]" * 30 + " }}</p>",
        "{% for a in b %}" * 30 + "<p>x</p>" + "{% endfor %}" * 30,
    ],
    ids=["3,000 brackets", "2,000 ifs", "30 lists", "30 loops"],
)
def test_personalisation_nested_too_deeply_is_refused(ws, client_for, html):
    workspace, owner = ws
    response = client_for(owner).post(
        f"/w/{workspace.slug}/templates/new/", {"name": "Deep", "html": html}
    )
    assert refused(response, "The personalisation nests brackets and tags more than 24 deep")


def test_a_filter_chain_too_long_to_compile_is_refused(ws, client_for):
    workspace, owner = ws
    # No bracket, but 300 filters in a row: 300 levels for Jinja's compiler.
    html = "<p>{{ name" + "|trim" * 300 + " }}</p>"
    response = client_for(owner).post(
        f"/w/{workspace.slug}/templates/new/", {"name": "Chain", "html": html}
    )
    assert refused(response, "nests its expressions and tags more than 64 deep")


def test_the_same_nesting_in_an_edit_is_refused_and_the_version_kept(ws, client_for):
    workspace, owner = ws
    client = client_for(owner)
    client.post(f"/w/{workspace.slug}/templates/new/", {"name": "T", "html": "<p>Hi</p>"})
    with scopes_disabled():
        template = Template.objects.get()
    deep = "{% if 1 %}" * 2000 + "x" + "{% endif %}" * 2000
    response = client.post(f"/w/{workspace.slug}/templates/{template.pk}/edit/", {"html": deep})
    assert response.status_code == 400
    assert "more than 24 deep" in response.content.decode()
    with scopes_disabled():
        assert template.versions.count() == 1


@pytest.mark.parametrize(
    "subject, message",
    [
        ("Hi {{ first_name | }}", "The subject’s personalisation is invalid"),
        ("Hi {% if x %}", "The subject’s personalisation is invalid"),
        ("{{ " + "(" * 100 + "1" + ")" * 100 + " }}", "more than 24 deep"),
    ],
)
def test_a_subject_with_invalid_jinja_is_refused_when_the_variant_is_saved(
    ws, client_for, make_campaign, subject, message
):
    workspace, owner = ws
    client = client_for(owner)
    client.post(f"/w/{workspace.slug}/templates/new/", {"name": "T", "html": "<p>Hi</p>"})
    campaign = make_campaign(workspace)
    with scopes_disabled():
        template = Template.objects.get()
    data = {
        "node_name": "Email",
        "position": 1,
        "name": "A",
        "subject": subject,
        "template": template.pk,
        "weight": 1,
        "format": "html",
    }
    response = client.post(f"/w/{workspace.slug}/campaigns/{campaign.pk}/variants/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    with scopes_disabled():
        assert not Variant.objects.exists()
    data["subject"] = "Hi {{ first_name|default('there') }}"
    assert (
        client.post(f"/w/{workspace.slug}/campaigns/{campaign.pk}/variants/", data).status_code
        == 302
    )
    with scope(workspace=workspace):
        assert Variant.objects.get().subject == data["subject"]


# Pieces of real templates, Jinja and encodings: random uploads built from them reach
# deeper than random bytes alone.
_PIECES = [
    b'<a href="https://shop.example/">Shop</a>',
    b'<a href="{{ p.url }}">',
    b"</a>",
    b"{% if a %}",
    b"{% endif %}",
    b"{% for i in range(100000) %}",
    b"{% endfor %}",
    b"{{ ((((",
    b")) }}",
    b"{{ 'x' * 999999999 }}",
    b"{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    b"{#",
    b"{% raw %}",
    b"<!--[if mso]>",
    b"<![endif]-->",
    b"<meta charset='shift_jis'>",
    b"<meta charset='utf-16'>",
    codecs.BOM_UTF8,
    codecs.BOM_UTF16_LE,
    b"\x00",
    b"\xff\xfe\x00\x00",
    b"\x1b",
    "é€😀".encode(),
    "é".encode("latin-1"),
    b"<table><tr><td>",
    b"<div>" * 50,
]
uploads = st.one_of(
    st.binary(max_size=4096),
    st.lists(st.sampled_from(_PIECES), max_size=40).map(b"".join),
    st.tuples(
        st.lists(st.sampled_from(_PIECES), max_size=10).map(b"".join),
        st.binary(max_size=64),
    ).map(lambda parts: parts[0] + b"a" * 65536 + parts[1]),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=uploads)
def test_random_uploads_never_get_a_500(ws, client_for, data):
    workspace, owner = ws
    response = post_upload(client_for(owner), workspace, data, name=f"U{next(_names)}")
    assert response.status_code in (302, 400)  # the test client raises on a server error
    if response.status_code == 400:
        assert 'class="field-error"' in response.content.decode()  # with its message
