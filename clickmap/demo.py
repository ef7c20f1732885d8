"""The demo workspace that `make run` opens on: a living click map.

Real corpus emails (../shared/corpus, when the checkout has it; small built-in emails
otherwise), a campaign with two A/B variants, a newsletter with two template versions,
a three-email scenario with an AMP variant, thousands of customers, long-tailed clicks
over two weeks through the real ingestion path (so scanners, bursts and too-quick
clicks are classified as in production), segments, aggregated rollups and rendered
previews. Idempotent: data is created once; a rerun only resets the demo password.
"""

import random
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django_scopes import scope

from campaigns.models import (
    Campaign,
    Customer,
    Delivery,
    EmailNode,
    Membership,
    Role,
    Segment,
    TemplateVersion,
    Variant,
    Workspace,
)
from campaigns.services import template_create, template_version_save
from clickmap.rollups import aggregate
from tracking.ingest import IngestReport, store_records
from tracking.models import Unsubscribe

DEMO_USERNAME = "demo"
DEMO_EMAIL = "demo@clickmap.local"
CORPUS = Path(settings.BASE_DIR).parent / "shared" / "corpus"
CUSTOMERS = 3000
SEED = 20261126

DEMO_CAMPAIGNS = [
    ("Black Friday — 30% off everything", Campaign.Kind.CAMPAIGN, Campaign.Status.SENT),
    ("November newsletter", Campaign.Kind.CAMPAIGN, Campaign.Status.SENT),
    ("Welcome series", Campaign.Kind.SCENARIO, Campaign.Status.SENDING),
    ("Abandoned cart reminder", Campaign.Kind.SCENARIO, Campaign.Status.DRAFT),
    ("Winter collection preview", Campaign.Kind.CAMPAIGN, Campaign.Status.SCHEDULED),
    ("Loyalty programme relaunch", Campaign.Kind.CAMPAIGN, Campaign.Status.DRAFT),
    ("Spring clearance", Campaign.Kind.CAMPAIGN, Campaign.Status.ARCHIVED),
]
FIRST_NAMES = [
    "Ann",
    "Bob",
    "Chloé",
    "Dmitri",
    "Emma",
    "Farid",
    "Greta",
    "Hiro",
    "Inès",
    "Jonas",
    "Kofi",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Uma",
    "Viktor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoe",
]
COUNTRIES = ["DE", "FR", "US", "GB", "ES", "IT", "NL", "PL", "SE", "JP"]
USER_AGENTS = {
    "mobile": [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/125.0.0.0 Mobile Safari/537.36",
    ],
    "desktop": [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/125.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        "Microsoft Outlook 16.0.17628; Pro",
    ],
    "tablet": [
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148",
    ],
}
SCANNER_UA = "BingPreview/1.0b"
AMP_EMAIL = """<!doctype html><html ⚡4email data-css-strict><head><meta charset="utf-8">
<script async src="https://cdn.ampproject.org/v0.js"></script>
<style amp4email-boilerplate>body{visibility:hidden}</style></head><body>
<h1>Welcome, {{ first_name }}!</h1>
<p><a href="https://shop.example/start?src=amp">Start shopping</a></p>
<p><a href="https://shop.example/help">Help centre</a></p></body></html>"""
FALLBACK = """<!doctype html><html><body style="font-family:sans-serif">
<h1>Hello {{ first_name }}</h1><p><a href="https://shop.example/deals">See the deals</a></p>
<p><a href="https://shop.example/blog">Read the blog</a></p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>"""


@dataclass
class DemoLogin:
    username: str
    password: str
    workspace: Workspace
    created: bool


# Some corpus emails carry their own placeholder style ({{Campaign-Name}}), which is not
# Jinja: the demo fills them in, as a marketer would before sending.
FILLED_IN = {
    "Campaign-Name": "black-friday",
    "Campaign-Source": "newsletter",
    "Button-Name": "shop-now",
    "Client-ID": "demo",
    "UA-Tracking-ID": "UA-000000",
    "Ìmage-Name": "hero",
}


def corpus_email(name: str) -> str:
    path = CORPUS / name
    html = path.read_text(encoding="utf-8") if path.is_file() else FALLBACK
    for placeholder, value in FILLED_IN.items():
        html = html.replace("{{" + placeholder + "}}", value)
    return html


def seed_demo(password: str, *, customers: int = CUSTOMERS, render_previews=True) -> DemoLogin:
    """Create the demo workspace once (refreshing only the password afterwards)."""
    user, _ = get_user_model().objects.get_or_create(
        username=DEMO_USERNAME, defaults={"email": DEMO_EMAIL}
    )
    user.set_password(password)
    user.save()
    workspace, created = Workspace.objects.get_or_create(
        slug="demo", defaults={"name": "Demo Shop"}
    )
    with scope(workspace=workspace):
        Membership.objects.get_or_create(
            workspace=workspace, user=user, defaults={"role": Role.OWNER}
        )
        if not Customer.objects.exists():
            _populate(workspace, user, customers)
            if render_previews:
                _render_previews()
    return DemoLogin(DEMO_USERNAME, password, workspace, created)


@transaction.atomic
def _populate(workspace, user, count):
    rng = random.Random(SEED)
    campaigns = {
        name: Campaign.objects.create(
            workspace=workspace, name=name, kind=kind, status=status, created_by=user
        )
        for name, kind, status in DEMO_CAMPAIGNS
    }
    people = Customer.objects.bulk_create(
        Customer(
            workspace=workspace,
            external_id=f"cookie-{i:05d}",
            email=f"{FIRST_NAMES[i % len(FIRST_NAMES)].lower()}.{i}@example.com",
            attributes={
                "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
                "name": FIRST_NAMES[i % len(FIRST_NAMES)],
                "country": rng.choice(COUNTRIES),
                "tier": "gold" if rng.random() < 0.15 else "standard",
                "products": [
                    {"name": f"Product {n}", "url": f"https://shop.example/p/{n}"}
                    for n in rng.sample(range(1, 40), 3)
                ],
                "action_url": "https://shop.example/start",
                "login_url": "https://shop.example/login",
                "username": f"user{i}",
                "support_email": "help@shop.example",
                "help_url": "https://shop.example/help",
                "live_chat_url": "https://shop.example/chat",
                "trial_length": "14 days",
            },
        )
        for i in range(count)
    )
    for name, attribute, value in (("Germany", "country", "DE"), ("Gold tier", "tier", "gold")):
        Segment.objects.create(
            workspace=workspace,
            name=name,
            rule=[{"attribute": attribute, "op": "eq", "value": value}],
        )
    now = timezone.now()
    friday = campaigns["Black Friday — 30% off everything"]
    _email(
        friday,
        1,
        "Black Friday",
        people,
        now - timedelta(days=13),
        rng,
        [
            (
                "A",
                "30% off everything, {{ first_name }}",
                _template(workspace, "Promo — bold", "konsav-promotional.html", user),
            ),
            (
                "B",
                "Black Friday starts now",
                _template(workspace, "Promo — editorial", "konsav-general.html", user),
            ),
        ],
    )
    news = campaigns["November newsletter"]
    first = _template(workspace, "Newsletter", "leemunroe-email.html", user)
    edited, _ = template_version_save(
        template=first.template,
        html=first.html.replace(
            "</body>", '<p><a href="https://shop.example/events">Upcoming events</a></p></body>', 1
        ),
        author=user,
        note="Added the events link",
    )
    _email(
        news,
        1,
        "Newsletter",
        people,
        now - timedelta(days=10),
        rng,
        [
            ("v1", "Our November news", first),
            ("v2", "Our November news", edited),
        ],
    )
    welcome = campaigns["Welcome series"]
    steps = [
        ("Welcome", "postmark-welcome.html", now - timedelta(days=14)),
        ("Trial ending", "postmark-trial-expiring.html", now - timedelta(days=7)),
        ("Invite your team", "postmark-user-invitation.html", now - timedelta(days=3)),
    ]
    for position, (name, file, sent) in enumerate(steps, 1):
        version = _template(
            workspace,
            f"Welcome {position}: {name}",
            file,
            user,
            amp=AMP_EMAIL if position == 1 else "",
        )
        variants = [("A", f"{name}, {{{{ first_name }}}}", version)]
        if position == 1:
            variants.append(("AMP", f"{name} (interactive)", version))
        _email(welcome, position, name, people[: count * 2 // 3], sent, rng, variants)
    _clicks_and_opens(workspace, rng, now)
    aggregate()


def _template(workspace, name, file, user, amp=""):
    return template_create(
        workspace=workspace, name=name, html=corpus_email(file), amp_html=amp, author=user
    )


def _email(campaign, position, name, people, sent_at, rng, variants):
    node = EmailNode.objects.create(campaign=campaign, name=name, position=position)
    made = [
        Variant.objects.create(
            node=node,
            name=label,
            subject=subject,
            template_version=version,
            format="amp" if label == "AMP" else "html",
        )
        for label, subject, version in variants
    ]
    Delivery.objects.bulk_create(
        Delivery(
            workspace_id=campaign.workspace_id,
            node=node,
            variant=(v := made[i % len(made)]),
            customer=person,
            template_version=v.template_version,
            format=v.format,
            status=Delivery.Status.BOUNCED if rng.random() < 0.02 else Delivery.Status.SENT,
            sent_at=sent_at + timedelta(seconds=i),
        )
        for i, person in enumerate(people)
    )


def _clicks_and_opens(workspace, rng, now):
    records = []
    deliveries = Delivery.objects.filter(status=Delivery.Status.SENT).select_related(
        "template_version"
    )
    links_of = {}
    for delivery in deliveries.iterator():
        key = (delivery.template_version_id, delivery.format)
        if key not in links_of:
            links_of[key] = list(
                TemplateVersion.objects.get(pk=key[0])
                .links.filter(format=key[1], trackable=True, mso=False)
                .order_by("ordinal")
            )
        links = links_of[key]
        if not links:
            continue
        sent = delivery.sent_at
        device = rng.choices(["mobile", "desktop", "tablet"], [55, 40, 5])[0]
        ua = rng.choice(USER_AGENTS[device])
        if rng.random() < 0.04:  # a security scanner follows every link within a second;
            # half of them pose as a browser and are caught by timing and bursts instead
            scanner = SCANNER_UA if rng.random() < 0.5 else USER_AGENTS["desktop"][0]
            start = sent + timedelta(seconds=rng.choice([1, 30, 300]))
            for n, link in enumerate(links[:8]):
                records.append(
                    _record("c", delivery, start + timedelta(seconds=n * 0.1), scanner, link)
                )
        if rng.random() < 0.45:  # opened
            opened = min(
                sent + timedelta(minutes=rng.lognormvariate(4, 1.5)), now - timedelta(minutes=15)
            )
            open_ua = "Mozilla/5.0" if rng.random() < 0.3 else ua  # Apple MPP fetches
            records.append(
                _record(
                    "o",
                    delivery,
                    opened,
                    open_ua,
                    ip="17.58.60.0" if open_ua == "Mozilla/5.0" else "203.0.113.0",
                )
            )
            if rng.random() < 0.35:  # clicked: a long tail over the links
                weights = [1 / (rank + 1) ** 1.3 for rank in range(len(links))]
                for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
                    link = rng.choices(links, weights)[0]
                    at = opened + timedelta(seconds=rng.uniform(5, 600))
                    at = min(at, now - timedelta(minutes=1))
                    records.append(_record("c", delivery, at, ua, link))
    store_records(records, IngestReport())
    # A few unsubscribes, as the one-click header brings them.
    for delivery in Delivery.objects.filter(status=Delivery.Status.SENT)[::97]:
        Unsubscribe.objects.get_or_create(
            delivery=delivery,
            defaults={
                "workspace_id": delivery.workspace_id,
                "customer_id": delivery.customer_id,
                "method": "one_click",
                "at": now,
            },
        )


def _record(kind, delivery, at, user_agent, link=None, ip="203.0.113.0"):
    record = {
        "id": uuid.uuid4().hex,
        "k": kind,
        "t": at.timestamp(),
        "d": delivery.pk,
        "ua": user_agent,
        "ip": ip,
        "m": "GET",
    }
    if link is not None:
        record.update(
            {
                "l": link.pk,
                "u": link.href if link.href.startswith("http") else "https://shop.example/",
            }
        )
    return record


def _render_previews():
    """Render the shown emails' previews now, so the demo opens on a finished map."""
    from clickmap.previews import preview_for, sample_customer

    for variant in Variant.objects.select_related("template_version__template"):
        sample = sample_customer(variant.template_version.template.workspace_id)
        for device in ("desktop", "mobile"):
            preview_for(variant.template_version, variant.format, device, sample)
