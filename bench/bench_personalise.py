"""Personalised renders per second of a real email, under the render budget.

The email is a corpus template with its placeholders, a product loop of 20 items and
every trackable link wrapped for tracking, as sending renders it for each customer.
Baseline: the same source rendered by Jinja's plain ImmutableSandboxedEnvironment (no
budget, no counting), so the ratio shows what the budget costs a render. Its hooks run
in Python at every loop step, call, filter and piece of output; a delivery's database
writes and SMTP exchange take several times a render, so the goal is that the budget at
most quadruples the render itself.

Prints: bench: personalise value=<renders/s> baseline=<renders/s> ratio=… goal=ratio>=0.25
"""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickmap.settings")

import django  # noqa: E402

django.setup()

from jinja2 import pass_context  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

from campaigns.inventory import inventory_links  # noqa: E402
from campaigns.personalise import render, tracked_source  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
SECONDS = 3.0
PRODUCTS = """<table>{% for p in products %}<tr>
<td><a href="{{ p.url }}">{{ p.name|title }}</a></td><td>{{ '%.2f'|format(p.price) }} €</td>
</tr>{% endfor %}</table>"""


def email() -> str:
    page = (CORPUS / "postmark-welcome.html").read_text(encoding="utf-8")
    closing = page.rindex("</body>")
    source = page[:closing] + PRODUCTS + page[closing:]
    rows = [link for link in inventory_links(source) if link.trackable]
    links = {link.source_index: i + 1 for i, link in enumerate(rows)}
    return tracked_source(source, links)


def context() -> dict:
    customer = {
        "name": "Ann",
        "action_url": "https://shop.example/start",
        "login_url": "https://shop.example/login",
        "help_url": "https://shop.example/help",
        "live_chat_url": "https://shop.example/chat",
        "support_email": "help@shop.example",
        "username": "ann42",
        "trial_length": "14 days",
        "products": [
            {"name": f"item {i}", "url": f"https://shop.example/p/{i}", "price": 9.5 + i}
            for i in range(20)
        ],
    }
    return {**customer, "customer": customer, "_cm_click_url": lambda link, url: url}


@pass_context
def _plain_track(context, value, link_id, personalised=False):
    return value


def rate(work) -> float:
    work()  # warm up (and compile)
    calls = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < SECONDS:
        work()
        calls += 1
    return calls / elapsed


def main() -> int:
    source, values = email(), context()
    plain = ImmutableSandboxedEnvironment(autoescape=True, keep_trailing_newline=True)
    plain.filters["cm_track"] = _plain_track
    baseline_template = plain.from_string(source)
    baseline = rate(lambda: baseline_template.render(values))
    value = rate(lambda: render(source, values, lambda link, url: url))
    print(f"# {len(source) / 1024:.0f} KB source, 20 products", file=sys.stderr)
    print(
        f"bench: personalise value={value:.1f} baseline={baseline:.1f} "
        f"ratio={value / baseline:.3f} goal=ratio>=0.25"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
