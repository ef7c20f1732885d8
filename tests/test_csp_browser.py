"""Every page of the app in Chromium with the Content-Security-Policy enforced: no
violation is reported (securitypolicyviolation events and the console), no script error
is thrown, htmx still swaps the campaign list, and the version page's compare selector
(a handler moved out of the HTML) still works.

The pages are enumerated from the URL patterns: a new pattern fails this test until it
is visited here or listed with the reason it is not a page.
"""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django_scopes import scope, scopes_disabled

from campaigns import services
from campaigns.customer_import import upload_import
from campaigns.models import Campaign, Delivery, Segment, Template
from clickmap.demo import seed_demo
from clickmap.models import Preview
from tracking.tokens import UnsubscribeToken, sign_token

PASSWORD = "csp-browser-password-1"

# URL names that are no page a browser shows, and why.
NOT_PAGES = {
    "logout": "POST only (the header's Log out button)",
    "workspace-create": "POST only (the new-workspace form's target)",
    "campaigns:variant-add": "POST only",
    "campaigns:send": "POST only (its confirmation page: tests/test_send_panel_browser.py)",
    "campaigns:send-cancel": "POST only",
    "campaigns:send-resume": "POST only",
    "campaigns:test-send": "POST only",
    "campaigns:sender": "POST only",
    "campaigns:segment-delete": "POST only",
    "campaigns:segment-preview": "the builder's count fragment (the builder loads it)",
    "campaigns:segment-condition": "the builder's row fragment (the builder loads it)",
    "campaigns:member-role": "POST only",
    "campaigns:member-remove": "POST only",
    "campaigns:invitation-revoke": "POST only",
    "campaigns:customer-export": "a CSV download",
    "campaigns:customer-import-errors": "a CSV download",
    "clickmap:export": "a CSV or Excel download",
    "clickmap:campaign-figures": "the campaign list's figure cells (htmx, out of band), which "
    "the list page visited here loads",
    "clickmap:preview-image": "an image (loaded by the click-map page visited here)",
    "healthz": "JSON for load balancers",
    "healthz-pipeline": "JSON for operators' probes",
    "metrics": "Prometheus text, behind a bearer token",
    "favicon": "a redirect to the static icon",
    "campaigns:version-image": "an image (shown by the version page visited here)",
    "campaigns:version-images": "the version page's images fragment, polled while fetching",
    "clickmap:report-export": "a CSV or Excel download",
    "clickmap:thumbnail-image": "an image (loaded by the thumbnail fragment visited here)",
    "clickmap:draft-preview": "POST only (the editor visited here loads it as it opens)",
    "click": "a redirect, served outside Django by tracking.hotpath",
    "open": "a 1×1 GIF, served outside Django by tracking.hotpath",
}


def url_names(patterns=None, namespace=None):
    """Every named URL pattern ("namespace:name"), the admin's excepted (Django's own
    pages; a sample of them is visited)."""
    names = set()
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin":
                continue
            names |= url_names(entry.url_patterns, entry.namespace or namespace)
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(f"{namespace}:{entry.name}" if namespace else entry.name)
    return names


def build_world():
    """The demo workspace, and one object of each kind a page needs."""
    login = seed_demo(PASSWORD, customers=60)
    workspace = login.workspace
    user = get_user_model().objects.get(username=login.username)
    user.is_staff = user.is_superuser = True  # for the admin's pages
    user.save()
    outsider = get_user_model().objects.create_user("outsider", "outsider@example.test", "x")
    other = services.workspace_create(name="Outsider's shop", owner=outsider)
    tokens = []
    # An invitation for someone else (its sign-up page) and one for the demo user.
    for where, address, inviter in (
        (workspace, "invitee@example.test", user),
        (other, user.email, outsider),
    ):
        services.member_invite(
            workspace=where,
            email=address,
            role="viewer",
            invited_by=inviter,
            link_for=tokens.append,
        )
    with scope(workspace=workspace):
        campaign = Campaign.objects.get(name__startswith="Black Friday — 30%")
        variant = campaign.nodes.get().variants.get(name="A")
        version = variant.template_version
        template = version.template
        # A third version of a template, so the compare selector has a choice to make.
        newsletter = Template.objects.filter(versions__number=2).first()
        latest = newsletter.versions.order_by("-number").first()
        services.template_version_save(
            template=newsletter,
            html=latest.html + "<p><a href='https://example.com/new'>New</a></p>",
            author=user,
            note="A third version",
        )
        link = version.links.filter(trackable=True).order_by("ordinal").first()
        delivery = Delivery.objects.filter(variant=variant).order_by("pk").first()
        customer_import = upload_import(
            workspace,
            SimpleUploadedFile("list.csv", b"email;name;vip\na@example.com;Ann;yes\n"),
            user,
        )
        segment = Segment.objects.order_by("pk").first()
    with scopes_disabled():
        assert Preview.objects.filter(version=version, status=Preview.Status.DONE).exists()
    return {
        "user": user,
        "workspace": workspace,
        "campaign": campaign,
        "variant": variant,
        "template": template,
        "version": version,
        "newsletter": newsletter,
        "link": link,
        "customer": delivery.customer,
        "customer_import": customer_import,
        "segment": segment,
        "invitation_for_someone_else": tokens[0],
        "invitation_for_me": tokens[1],
        "unsubscribe": sign_token(UnsubscribeToken(delivery.pk)),
        "reset_uid": urlsafe_base64_encode(force_bytes(user.pk)),
        "reset_token": default_token_generator.make_token(user),
    }


def pages(w):
    """{url name: [(logged in?, URL, final status), …]}: every page, as a visitor sees it."""
    ws = {"workspace_slug": w["workspace"].slug}
    campaign = {**ws, "campaign_id": w["campaign"].pk}
    template = {**ws, "template_id": w["template"].pk}
    variant = f"?variant={w['variant'].pk}"
    customer = {**ws, "customer_id": w["customer"].pk}
    an_import = {**ws, "import_id": w["customer_import"].pk}
    reset = {"uidb64": w["reset_uid"], "token": w["reset_token"]}
    someone_else = reverse("invitation", args=[w["invitation_for_someone_else"]])

    def member(name, query="", status=200, **kwargs):
        return [(True, reverse(name, kwargs=kwargs or None) + query, status)]

    def visitor(name, status=200, **kwargs):
        return [(False, reverse(name, kwargs=kwargs or None), status)]

    return {
        "home": member("home", "?new=1"),
        "login": visitor("login"),
        "password_change": member("password_change"),
        "password_change_done": member("password_change_done"),
        "password_reset": visitor("password_reset"),
        "password_reset_done": visitor("password_reset_done"),
        "password_reset_confirm": visitor("password_reset_confirm", **reset),
        "password_reset_complete": visitor("password_reset_complete"),
        "invitation": [
            (False, someone_else, 200),  # the sign-up form
            (True, someone_else, 403),  # refused: another address
            (True, reverse("invitation", args=[w["invitation_for_me"]]), 200),  # Join as …
            (False, reverse("invitation", args=["no-such-invitation"]), 404),
        ],
        "unsubscribe": visitor("unsubscribe", token=w["unsubscribe"]),
        "campaigns:workspace": member("campaigns:workspace", **ws),
        "campaigns:list": member("campaigns:list", **ws),
        "campaigns:create": member("campaigns:create", **ws),
        "campaigns:detail": member("campaigns:detail", **campaign),
        "campaigns:edit": member("campaigns:edit", **campaign),
        "campaigns:progress": member("campaigns:progress", **campaign),
        "campaigns:members": member("campaigns:members", **ws),
        "campaigns:segments": member("campaigns:segments", **ws),
        "campaigns:segment-create": member("campaigns:segment-create", **ws),
        "campaigns:segment": member("campaigns:segment", segment_id=w["segment"].pk, **ws),
        "test-unsubscribe": visitor("test-unsubscribe"),
        "campaigns:settings": member("campaigns:settings", **ws),
        "campaigns:templates": member("campaigns:templates", **ws),
        "campaigns:template-create": member("campaigns:template-create", **ws),
        "campaigns:template": member("campaigns:template", **template),
        "campaigns:template-edit": member("campaigns:template-edit", **template),
        "campaigns:version": member("campaigns:version", number=w["version"].number, **template),
        "clickmap:campaign-results": member("clickmap:campaign-results", **campaign),
        "clickmap:page": member("clickmap:page", variant, **campaign),
        "clickmap:preview": member("clickmap:preview", variant, **campaign),
        "clickmap:destinations": member("clickmap:destinations", variant, **campaign),
        "clickmap:clickers": member("clickmap:clickers", variant, link_id=w["link"].pk, **campaign),
        "clickmap:report": member("clickmap:report", "", **template)
        + member("clickmap:report", "?version=1&view=mobile&from=2020-01-01", **template),
        "clickmap:report-preview": member("clickmap:report-preview", **template),
        "clickmap:report-clickers": member(
            "clickmap:report-clickers",
            f"?version={w['version'].number}",
            link_id=w["link"].pk,
            **template,
        ),
        "clickmap:thumbnail": member("clickmap:thumbnail", number=w["version"].number, **template),
        "clickmap:customer-timeline": member("clickmap:customer-timeline", **customer),
        "campaigns:customers": member("campaigns:customers", **ws),
        "campaigns:customer": member("campaigns:customer", **customer),
        "campaigns:customer-edit": member("campaigns:customer-edit", **customer),
        "campaigns:customer-delete": member("campaigns:customer-delete", **customer),
        "campaigns:customer-import-upload": member("campaigns:customer-import-upload", **ws),
        "campaigns:customer-import": member("campaigns:customer-import", **an_import),
        "campaigns:customer-import-progress": member(
            "campaigns:customer-import-progress", **an_import
        ),
    }


class Watcher:
    """Collects what the browser reports against the policy, and script errors."""

    def __init__(self, context):
        self.problems = []
        context.expose_function("cmReportViolation", lambda report: self.problems.append(report))
        # A listener in every document, before its own scripts run.
        context.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => window.cmReportViolation("
            "`violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}"
            " at ${e.sourceFile}:${e.lineNumber}`));"
        )

    def watch(self, page):
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))

    def _console(self, message):
        text = message.text
        if message.type in ("error", "warning") and any(
            words in text
            for words in (
                "Content Security Policy",
                "Content-Security-Policy",
                "Permissions-Policy",
            )
        ):
            self.problems.append(f"console {message.type}: {text}")

    def take(self):
        problems, self.problems[:] = list(self.problems), []
        return problems


def visit(page, watcher, url, status=200):
    response = page.goto(url)
    page.wait_for_load_state("networkidle")
    assert response.status == status, url
    assert watcher.take() == [], url


def log_in(page, base, username):
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/w/**")


@pytest.mark.browser
def test_every_page_runs_under_the_csp_without_a_violation(
    transactional_db, live_server, browser, eager_tasks
):
    world = build_world()
    visits = pages(world)
    missing = url_names() - set(visits) - set(NOT_PAGES)
    assert not missing, f"pages this test does not visit (add them, or to NOT_PAGES): {missing}"
    assert not set(visits) & set(NOT_PAGES)
    base = live_server.url
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watcher = Watcher(context)
    page = context.new_page()
    watcher.watch(page)
    try:
        # The policy is enforced and the watcher sees a breach: an inline script and an
        # inline handler are refused and reported.
        visit(page, watcher, f"{base}/login/")
        with page.expect_console_message():
            page.evaluate(
                "() => { const s = document.createElement('script');"
                " s.textContent = 'window.cmRan = true'; document.head.append(s); }"
            )
        with page.expect_console_message():
            page.evaluate(
                "() => { document.body.setAttribute('onclick', 'window.cmRan = true');"
                " document.body.click(); }"
            )
        assert page.evaluate("() => window.cmRan") is None
        page.reload()  # a round trip: the violation reports have reached the watcher
        caught = watcher.take()
        assert len([p for p in caught if p.startswith("violation: script-src")]) == 2, caught
        assert len([p for p in caught if p.startswith("console error")]) == 2, caught

        entries = [entry for listed in visits.values() for entry in listed]
        for _, url, status in [entry for entry in entries if not entry[0]]:
            visit(page, watcher, base + url, status)
        visit(page, watcher, f"{base}/admin/login/")
        visit(page, watcher, f"{base}/no-such-page/", 404)

        # The unsubscribe page's button (a form posting to its own address).
        visit(page, watcher, base + visits["unsubscribe"][0][1])
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        assert "You are unsubscribed" in page.content()
        assert watcher.take() == []

        log_in(page, base, world["user"].username)
        assert watcher.take() == []
        for _, url, status in [entry for entry in entries if entry[0]]:
            visit(page, watcher, base + url, status)
        for url in (
            "/admin/",
            "/admin/campaigns/workspace/",
            f"/admin/campaigns/workspace/{world['workspace'].pk}/change/",
        ):
            visit(page, watcher, base + url)
        visit(page, watcher, f"{base}/no-such-page/", 404)

        # htmx swaps the campaign list as the filter is typed in.
        slug = world["workspace"].slug
        visit(page, watcher, f"{base}/w/{slug}/campaigns/")
        names = page.locator("#campaign-table tbody tr").count()
        assert names > 1
        with page.expect_response(lambda r: "q=newsletter" in r.url) as swap:
            page.fill("#id_q", "newsletter")
        assert swap.value.request.headers.get("hx-request") == "true"
        page.wait_for_url(lambda url: "q=newsletter" in url)
        rows = page.locator("#campaign-table tbody tr")
        assert rows.count() == 1 and "November newsletter" in rows.first.inner_text()
        assert watcher.take() == []

        # The list's figures and the campaign page's results arrive by htmx: swapped in
        # (out of band, for the list) under the policy.
        visit(page, watcher, f"{base}/w/{slug}/campaigns/")
        page.wait_for_selector("#campaign-table .pending", state="detached")
        visit(page, watcher, base + visits["campaigns:detail"][0][1])
        page.wait_for_selector("#campaign-results .kpis")
        assert watcher.take() == []

        # The compare selector submits its form from the static script.
        newsletter = world["newsletter"]
        visit(page, watcher, f"{base}/w/{slug}/templates/{newsletter.pk}/versions/3/")
        with page.expect_navigation():
            page.select_option("#compare", "1")
        assert page.url.endswith("/versions/3/?compare=1")
        assert "Changes since version 1" in page.content()
        assert watcher.take() == []
    finally:
        context.close()
