"""The campaign list's figures: one batch per page against one email_totals per row.

Data: one workspace, 20,000 customers, a page of 20 campaigns (16 A/B campaigns of one
email and 4 two-email scenarios), each email sent to every customer (about 480,000
deliveries), a quarter of them opened and half of those clicked (links by position),
aggregated with clickmap.rollups.recompute. In its own PostgreSQL database
(clickmap_bench_list, dropped, recreated and migrated each run).

  bench: campaign_list_figures_p95_ms value=<ms, metrics.campaign_figures for the page>
         baseline=<ms, metrics.email_totals for each campaign of the page> ratio=… goal=<0.5
  bench: campaign_list_figures_one_email_p95_ms … the same over the page's 16 one-email
         campaigns alone (a scenario's exact distinct customers across its emails cost
         the same either way; this line isolates what batching saves)
      (query counts of both printed as comments; the figures must agree, or the script
      exits non-zero)

Usage: bench/bench_campaign_list.py [--customers N] [--repeats N] [--reuse] (--reuse
keeps an earlier run's database: for development only). BENCH_PG_ADMIN_URL
(postgresql://postgres@127.0.0.1:5432/postgres) names the server, BENCH_LIST_DB the
database.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DB_NAME = os.environ.get("BENCH_LIST_DB", "clickmap_bench_list")
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE_URL = (
    PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgres://") + "/" + DB_NAME
)
os.environ.update(
    {
        "DATABASE_URL": DATABASE_URL,
        "SECRET_KEY": "bench-campaign-list-" + "x" * 48,
        "DEBUG": "0",
        "HTTPS_ONLY": "0",
        "STATIC_MANIFEST": "0",
        "DJANGO_SETTINGS_MODULE": "clickmap.settings",
    }
)
os.environ.pop("REDIS_URL", None)
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HTML = "".join(f'<p><a href="https://shop.example/{n}">Link {n}</a></p>' for n in range(12))


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def prepare_database() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=dict(os.environ),
        check=True,
    )


def generate(customers: int) -> tuple[object, list[int]]:
    """The workspace and its page of campaign ids (newest first, as the list shows them)."""
    from django.contrib.auth import get_user_model
    from django_scopes import scope

    from campaigns.models import Campaign, Customer, Delivery, EmailNode, Variant
    from campaigns.services import template_create, workspace_create
    from clickmap.rollups import recompute
    from tracking.models import ClickEvent, OpenEvent

    owner = get_user_model().objects.create_user("bench", "bench@example.test", "x")
    workspace = workspace_create(name="Bench shop", owner=owner)
    with scope(workspace=workspace):
        people = Customer.objects.bulk_create(
            Customer(workspace=workspace, external_id=f"c{i}", email=f"c{i}@example.test")
            for i in range(customers)
        )
        versions = [template_create(workspace=workspace, name=f"T{n}", html=HTML) for n in range(2)]
        links = {v.pk: list(v.links.order_by("ordinal")) for v in versions}
        ids = []
        for c in range(20):
            scenario = c % 5 == 4
            campaign = Campaign.objects.create(
                workspace=workspace,
                name=f"Campaign {c}",
                kind="scenario" if scenario else "campaign",
                status="sent",
            )
            ids.append(campaign.pk)
            for position in range(1, 3 if scenario else 2):
                node = EmailNode.objects.create(campaign=campaign, name="E", position=position)
                variants = [
                    Variant.objects.create(
                        node=node, name=name, subject="s", template_version=versions[n]
                    )
                    for n, name in enumerate("AB" if not scenario else "A")
                ]
                deliveries = Delivery.objects.bulk_create(
                    Delivery(
                        workspace=workspace,
                        node=node,
                        variant=(v := variants[i % len(variants)]),
                        customer=person,
                        template_version=v.template_version,
                        status="sent" if i % 50 else "bounced",
                        sent_at=T0,
                    )
                    for i, person in enumerate(people)
                )
                opens, clicks = [], []
                for i, d in enumerate(deliveries):
                    if (i + c) % 4:
                        continue
                    common = dict(workspace=workspace, delivery=d, device="desktop")
                    at = T0 + timedelta(minutes=i % 600)
                    opens.append(OpenEvent(event_id=uuid.uuid4(), at=at, **common))
                    if i % 8 == 0:
                        link = links[d.template_version_id][i % 12]
                        clicks.append(
                            ClickEvent(
                                event_id=uuid.uuid4(), at=at, link=link, url=link.href, **common
                            )
                        )
                OpenEvent.objects.bulk_create(opens, batch_size=5000)
                ClickEvent.objects.bulk_create(clicks, batch_size=5000)
    started = time.perf_counter()
    recompute()
    log(f"rollups rebuilt in {time.perf_counter() - started:.1f}s")
    return workspace, ids[::-1]


def existing() -> tuple[object, list[int]]:
    """The workspace and page of an earlier run's database (--reuse)."""
    from django_scopes import scopes_disabled

    from campaigns.models import Campaign, Workspace

    with scopes_disabled():
        workspace = Workspace.objects.get(name="Bench shop")
        ids = list(
            Campaign.objects.filter(workspace=workspace)
            .order_by("-created_at", "-pk")
            .values_list("pk", flat=True)
        )
    return workspace, ids


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--reuse", action="store_true", help="keep an earlier run's data")
    args = parser.parse_args()
    if not args.reuse:
        prepare_database()
    import django

    django.setup()
    from django.db import connection
    from django_scopes import scope

    from campaigns.models import Campaign

    started = time.perf_counter()
    workspace, ids = existing() if args.reuse else generate(args.customers)
    log(f"generated in {time.perf_counter() - started:.1f}s")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as autovacuum would have after the bulk load

    with scope(workspace=workspace):
        one_email = [
            pk for pk in ids if not Campaign.objects.filter(pk=pk, kind="scenario").exists()
        ]
        for name, page in (("", ids), ("_one_email", one_email)):
            result = measure(workspace, page, args.repeats, name or "_page")
            if result is None:
                return 1
            value, baseline = result
            print(
                f"bench: campaign_list_figures{name}_p95_ms value={value:.4g} "
                f"baseline={baseline:.4g} ratio={value / baseline:.3g} goal=<0.5",
                flush=True,
            )
    return 0


def measure(workspace, ids, repeats, label):
    """p95 ms of the batch and of email_totals per campaign for `ids`, after checking
    that both give the same figures (None when they differ)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from clickmap import metrics

    def batched():
        return metrics.campaign_figures(ids)

    def one_by_one():
        return {
            pk: metrics.email_totals(metrics.Scope(workspace=workspace, campaign_id=pk))
            for pk in ids
        }

    fast, slow = batched(), one_by_one()
    for pk in ids:
        a, b = fast[pk], slow[pk]
        got = (a.sent, a.delivered, a.unique_opens, a.clickers, a.ctr, a.ctor)
        want = (b.sent, b.delivered, b.unique_opens, b.clickers, b.ctr, b.ctor)
        if got != want:
            print(f"bench: campaign {pk}: batch {got} != email_totals {want}")
            return None
    timings = {}
    for name, run in (("batched", batched), ("one_by_one", one_by_one)):
        with CaptureQueriesContext(connection) as captured:
            run()
        log(f"{label} {name}: {len(captured)} queries for {len(ids)} campaigns")
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            samples.append((time.perf_counter() - started) * 1000)
        timings[name] = samples
        log(f"{label} {name}: p50 {statistics.median(samples):.2f} ms")
    return p95(timings["batched"]), p95(timings["one_by_one"])


if __name__ == "__main__":
    sys.exit(main())
