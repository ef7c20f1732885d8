"""Content-Security-Policy and Permissions-Policy on every response, and templates that
need neither inline scripts, inline handlers nor inline style elements."""

import json
import re
from pathlib import Path

import pytest
from django.test import Client

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def policy(response) -> dict[str, list[str]]:
    directives = {}
    for part in response["Content-Security-Policy"].split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.mark.parametrize("path", ["/login/", "/password-reset/", "/no-such-page/"])
def test_pages_carry_a_policy_without_inline_script(db, path):
    csp = policy(Client().get(path))
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["form-action"] == ["'self'"]
    assert csp["img-src"] == ["'self'", "data:"]
    # Inline styles only as attributes (the overlay boxes), never as <style> elements.
    assert csp["style-src"] == ["'self'"]
    assert csp["style-src-attr"] == ["'unsafe-inline'"]
    assert not any("unsafe" in v for d, vs in csp.items() if d != "style-src-attr" for v in vs)


def test_logged_in_pages_carry_the_policy(make_user, make_workspace, client_for):
    user = make_user()
    workspace = make_workspace(owner=user)
    response = client_for(user).get(f"/w/{workspace.slug}/members/")
    assert response.status_code == 200
    assert policy(response)["script-src"] == ["'self'"]


def test_powerful_browser_features_are_off(db):
    header = Client().get("/login/")["Permissions-Policy"]
    features = dict(item.strip().split("=") for item in header.split(","))
    for feature in ("camera", "microphone", "geolocation", "payment", "usb", "serial", "hid"):
        assert features[feature] == "()", feature


def test_htmx_is_told_not_to_eval_nor_inject_styles(db):
    page = Client().get("/login/").content.decode()
    content = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", page).group(1)
    assert json.loads(content) == {
        "allowEval": False,
        "allowScriptTags": False,
        "includeIndicatorStyles": False,
    }


INLINE = [
    (re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.I), "an inline <script>"),
    (re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I | re.S), "an inline event handler"),
    (re.compile(r"<style\b", re.I), "a <style> element"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
    (re.compile(r"\bhx-on\b|\bhx-on[:-]|\bhx-vars\b|[\"']js:", re.I), "htmx code to eval"),
]


@pytest.mark.parametrize(
    "template", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES))
)
def test_templates_need_nothing_the_policy_refuses(template):
    source = template.read_text()
    found = [what for pattern, what in INLINE if pattern.search(source)]
    assert found == [], f"{template.relative_to(TEMPLATES)} has {found}"
