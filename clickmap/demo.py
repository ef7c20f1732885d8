"""The demo workspace that `make run` opens on: a living click map.

The emails are the project's own (clickmap/demo_emails: HTML written for the demo's
fictional outdoor shop, Fernhill, and its images as local files), so every clone shows
the same map. A campaign with two A/B variants, a newsletter with two template versions,
a three-email scenario with an AMP variant, thousands of customers, clicks over two
weeks through the real ingestion path (so scanners, bursts and too-quick clicks are
classified as in production) that favour heroes and buttons as real readers do,
segments, aggregated rollups and rendered previews. Idempotent: data is created once; a
rerun only resets the demo password.
"""

import html as html_lib
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django_scopes import scope

from campaigns.linktags import iter_start_tags
from campaigns.models import (
    Campaign,
    Customer,
    Delivery,
    EmailNode,
    Membership,
    Role,
    Segment,
    TemplateLink,
    TemplateVersion,
    Variant,
    Workspace,
)
from campaigns.services import template_create, template_version_save
from clickmap.pipeline import drain_everything
from tracking.ingest import IngestReport, ingest_spool, store_records
from tracking.models import Unsubscribe

DEMO_USERNAME = "demo"
DEMO_EMAIL = "demo@clickmap.local"
EMAILS = Path(__file__).resolve().parent / "demo_emails"
CUSTOMERS = 3000
SEED = 20261126

DEMO_CAMPAIGNS = [
    ("Black Friday — 30% off everything", Campaign.Kind.CAMPAIGN, Campaign.Status.SENT),
    ("Black Friday — last day (subject test)", Campaign.Kind.CAMPAIGN, Campaign.Status.SENT),
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
# The demo's templates (name: file in clickmap/demo_emails) and the AMP part of the first
# welcome email.
DEMO_TEMPLATES = {
    "Promo — bold": "black-friday-bold.html",
    "Promo — editorial": "black-friday-editorial.html",
    "Newsletter": "newsletter.html",
    "Welcome 1: Welcome": "welcome.html",
    "Welcome 2: Trial ending": "trial-ending.html",
    "Welcome 3: Invite your team": "invite-your-team.html",
}
WELCOME_AMP = "welcome.amp.html"
# What the shop sells: customers' recently viewed products (the welcome email's loop).
CATALOGUE = [
    "Ridge Down Parka",
    "Tarn Hiking Boot",
    "Summit 28 Backpack",
    "Fell Half-Zip Fleece",
    "Basecamp 2 Tent",
    "Merino Bobble Beanie",
    "Camp Enamel Mug",
    "Trail Flask 750 ml",
    "Scree Rain Shell",
    "Larch Wool Shirt",
    "Cairn Trail Runner",
    "Bothy Sleeping Bag",
    "Moraine Softshell Trousers",
    "Corrie Insulated Vest",
    "Heather Merino Socks",
    "Ghyll Waterproof Mitts",
    "Kit Roll-Top Dry Bag",
    "Tor Trekking Poles",
    "Beck Stove Set",
    "Fern Kids' Puffer",
]
# How likely an opened email is clicked, and the templates readers click more: Black
# Friday's editorial variant B beats the bold A, so the campaign page shows an A/B winner
# (the subject-line test of one template stays too close to call).
CLICK_CHANCE = 0.35
CLICK_LIFT = {"Promo — editorial": 1.5}
# How readers click, by the links' utm_content (the demo emails tag every link with its
# role, as email tools do): heroes and main buttons most, then products and stories,
# the menu, and the header, social icons and footer rarely.
CLICK_WEIGHTS = {
    "hero": 45.0,
    "cta": 36.0,
    "story": 9.0,
    "product": 8.0,
    "recommended": 7.0,
    "category": 6.0,
    "product-cta": 5.0,
    "secondary": 5.0,
    "product-name": 4.0,
    "nav": 4.0,
    "logo": 2.5,
    "social": 0.8,
    "header": 0.6,
    "footer": 0.5,
}
UNSUBSCRIBE_WEIGHT = 0.3
# The newsletter's second version: the events block the marketer added before the footer.
NEWSLETTER_EVENTS = """<!-- Events : BEGIN -->
      <tr>
        <td class="pad" style="background-color: #f6f4ef; padding: 28px 48px; text-align: center;
            font-family: Arial, Helvetica, sans-serif; font-size: 15px; line-height: 23px;
            color: #33362f;">
          Repair caf&eacute; at the Munich store, Saturday 22 November, 10:00&ndash;16:00.
          <a href="https://shop.example/events?utm_campaign=november-journal&amp;utm_content=story"
            style="color: #1f4d3a; font-weight: bold; text-decoration: underline;"
            >Upcoming events</a>
        </td>
      </tr>
      <!-- Events : END -->
      <!-- Footer : BEGIN -->"""


@dataclass
class DemoLogin:
    username: str
    password: str
    workspace: Workspace
    created: bool


def demo_email(name: str) -> tuple[str, dict[str, bytes]]:
    """One of the demo's emails and its images, read from clickmap/demo_emails.

    ``name`` is a file name there ("welcome.html"). Returns ``(html, assets)``: the
    file's text, and ``{path as written in the HTML: bytes}`` for every image it
    references by a relative path (``src`` and ``background`` attributes, Outlook-only
    markup included). Raises FileNotFoundError when the email or one of its images is
    missing, ValueError when a reference leaves the folder: a demo email never ships
    with a broken picture.
    """
    html = (EMAILS / name).read_text(encoding="utf-8")
    assets = {}
    for path in _relative_images(html):
        file = (EMAILS / path).resolve()
        if not file.is_relative_to(EMAILS):
            raise ValueError(f"{name}: image {path!r} is outside {EMAILS}")
        assets[path] = file.read_bytes()
    return html, assets


def _relative_images(html: str) -> list[str]:
    found = []
    for tag in iter_start_tags(html):
        if tag.name == "script":
            continue
        attributes = tag.attributes(html)
        for attribute in ("src", "background"):
            if attribute not in attributes:
                continue
            start, end, _quote = attributes[attribute]
            value = html_lib.unescape(html[start:end]).strip()
            parts = urlsplit(value)
            relative = value and not (parts.scheme or parts.netloc or value.startswith("/"))
            if relative and "{" not in value and value not in found:
                found.append(value)
    return found


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
                    {"name": product, "url": f"https://shop.example/p/{_slug(product)}"}
                    for product in rng.sample(CATALOGUE, 3)
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
    bold = _template(workspace, "Promo — bold", user)
    _email(
        friday,
        1,
        "Black Friday",
        people,
        now - timedelta(days=13),
        rng,
        [
            ("A", "30% off everything, {{ first_name }}", bold),
            ("B", "Black Friday starts now", _template(workspace, "Promo — editorial", user)),
        ],
    )
    # A subject-line test: two variants of one template version, so "All variants" sums them.
    _email(
        campaigns["Black Friday — last day (subject test)"],
        1,
        "Last day",
        people[::2],
        now - timedelta(days=12),
        rng,
        [
            ("A", "Last day: 30% off, {{ first_name }}", bold),
            ("B", "Ends at midnight ⏰", bold),
        ],
    )
    news = campaigns["November newsletter"]
    first = _template(workspace, "Newsletter", user)
    edited, _ = template_version_save(
        template=first.template,
        html=first.html.replace("<!-- Footer : BEGIN -->", NEWSLETTER_EVENTS, 1),
        author=user,
        note="Added the events link",
        assets=demo_email(DEMO_TEMPLATES["Newsletter"])[1],
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
        ("Welcome", now - timedelta(days=14)),
        ("Trial ending", now - timedelta(days=7)),
        ("Invite your team", now - timedelta(days=3)),
    ]
    for position, (name, sent) in enumerate(steps, 1):
        version = _template(
            workspace,
            f"Welcome {position}: {name}",
            user,
            amp=demo_email(WELCOME_AMP)[0] if position == 1 else "",
        )
        variants = [("A", f"{name}, {{{{ first_name }}}}", version)]
        if position == 1:
            variants.append(("AMP", f"{name} (interactive)", version))
        _email(welcome, position, name, people[: count * 2 // 3], sent, rng, variants)
    _clicks_and_opens(workspace, rng, now)
    # Through the pipeline's own steps, so the map's freshness line has its marks: the
    # spool (nothing in it, or real clicks: stored too) and the change log, drained.
    ingest_spool()
    drain_everything()


def _template(workspace, name, user, amp=""):
    html, assets = demo_email(DEMO_TEMPLATES[name])
    return template_create(
        workspace=workspace, name=name, html=html, amp_html=amp, author=user, assets=assets
    )


def _slug(name: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def _click_weight(link: TemplateLink) -> float:
    """How likely a reader's click lands on ``link``: by its utm_content role."""
    if link.unsubscribe:
        return UNSUBSCRIBE_WEIGHT
    role = parse_qs(urlsplit(link.href).query).get("utm_content", [""])[0]
    return CLICK_WEIGHTS.get(role, 1.0)


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
        "template_version__template"
    )
    links_of, weights_of = {}, {}
    for delivery in deliveries.iterator():
        key = (delivery.template_version_id, delivery.format)
        if key not in links_of:
            links_of[key] = list(
                TemplateVersion.objects.get(pk=key[0])
                .links.filter(format=key[1], trackable=True, mso=False)
                .order_by("ordinal")
            )
            weights_of[key] = [_click_weight(link) for link in links_of[key]]
        links = links_of[key]
        if not links:
            continue
        sent = delivery.sent_at
        device = rng.choices(["mobile", "desktop", "tablet"], [55, 40, 5])[0]
        ua = rng.choice(USER_AGENTS[device])
        if rng.random() < 0.04:  # a security scanner follows links all over the email within
            # a second; half of them pose as a browser and are caught by timing and bursts
            scanner = SCANNER_UA if rng.random() < 0.5 else USER_AGENTS["desktop"][0]
            start = sent + timedelta(seconds=rng.choice([1, 30, 300]))
            followed = sorted(rng.sample(range(len(links)), min(8, len(links))))
            for n, link in enumerate(links[i] for i in followed):
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
            chance = CLICK_CHANCE * CLICK_LIFT.get(delivery.template_version.template.name, 1)
            if rng.random() < chance:  # clicked: mostly the hero and the main button
                weights = weights_of[key]
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
