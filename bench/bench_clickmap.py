"""Issue 7: click-map selector swaps and previews on a campaign of a million deliveries.

Data: one campaign with 1,000,000 deliveries (A/B: the demo's two Black Friday emails,
~40 links each, with their images, as two versions of one template),
5,000,000 click events and ~0.7M opens over 1,000,000 customers, made by the rollups
benchmark's generator (bench/rollups_data.py, reused with one campaign) in its own
PostgreSQL database (clickmap_bench_map), then aggregated with clickmap.rollups.recompute.

  bench: clickmap_swap_p95_ms value=<ms> baseline=<ms, campaign list partial p95> … goal=<100ms
      server time of the click-map htmx partial (django.test.Client, in process) over a
      sequence of selector changes (metrics, variants, reliable only, devices, a period,
      a segment, a segment in a period, "Preview for" a customer, mobile view, the
      compare view alone and with filters), previews rendered beforehand;
      the baseline is the same number of requests to a trivial workspace page.
  bench: clickmap_badge_layout_p95_ms value=<ms> baseline=<ms> … goal=info
      the browser's time to lay the numbers out on the map (static/js/clickmap.js) on
      the desktop, mobile and compare views; the baseline is reading the boxes' and
      badges' rectangles alone, in the same page.
  bench: preview_first_ms value=<ms> baseline=<cached ms> … goal=info
      render_stored_preview of a fresh row (desktop and mobile, Chromium already running;
      its startup is printed as a comment).
  bench: preview_cached_p95_ms value=<ms> baseline=<ms, one trivial ORM query p95> … goal=<20ms

Usage: bench/bench_clickmap.py [--scale 0.1] [--reuse] [--repeats N] [--budget S] [--profile]
(--reuse keeps a database made by an earlier run at the same scale; the swap passes
stop after --budget seconds, at least 3; --profile prints cProfile's top functions of
one pass over the swap sequence to stderr).
"""

import argparse
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DB_NAME = os.environ.get("BENCH_CLICKMAP_DB", "clickmap_bench_map")
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
DELIVERIES = 1_000_000
CLICKS = 5_000_000
CUSTOMERS = 1_000_000
SWAP_REPEATS = 15
SWAP_BUDGET = 150.0  # seconds of timed swaps at most (at least MIN_REPEATS passes)
MIN_REPEATS = 3
PREVIEW_FIRST_REPEATS = 3
CACHED_REPEATS = 300

ENV = {
    "DATABASE_URL": DATABASE_URL,
    "SECRET_KEY": "bench-clickmap-" + "x" * 48,
    "DEBUG": "0",
    "HTTPS_ONLY": "0",
    "STATIC_MANIFEST": "0",
    "DJANGO_SETTINGS_MODULE": "clickmap.settings",
    # Playwright's sync API keeps an event loop in this thread; the ORM calls the page's
    # routed requests make beside it are still plain synchronous calls.
    "DJANGO_ALLOW_ASYNC_UNSAFE": "true",
}
os.environ.update(ENV)
os.environ.pop("REDIS_URL", None)


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def bench_line(name: str, value: float, baseline: float, goal: str) -> None:
    ratio = value / baseline if baseline else float("inf")
    print(
        f"bench: {name} value={value:.4g} baseline={baseline:.4g} ratio={ratio:.3g} goal={goal}",
        flush=True,
    )


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def prepare_database(scale: float, reuse: bool) -> bool:
    """Drop, create and migrate the bench database; False when an earlier one is reused."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if reuse and exists:
            with psycopg.connect(DATABASE_URL.replace("postgres://", "postgresql://")) as db:
                has_meta = db.execute("SELECT to_regclass('bench_meta')").fetchone()[0]
                row = db.execute("SELECT scale FROM bench_meta").fetchone() if has_meta else None
            if row and row[0] == scale:
                return False
        admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=dict(os.environ),
        check=True,
    )
    log(f"migrated in {time.perf_counter() - started:.1f}s")
    return True


def sql(query: str, params=None) -> list:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def generate(scale: float):
    """One campaign of DELIVERIES deliveries and CLICKS clicks (× scale), aggregated."""
    from bench import rollups_data
    from campaigns.models import Segment, Workspace
    from clickmap import rollups
    from clickmap.demo import DEMO_TEMPLATES, demo_email

    rollups_data.CAMPAIGNS = 1
    rollups_data.FRESH_CAMPAIGN = False  # the one campaign has its clicks
    # A realistic email with its images: the demo's Black Friday A and B (two versions).
    rollups_data.EMAILS = lambda k, variant: demo_email(
        DEMO_TEMPLATES["Promo — bold" if variant == "A" else "Promo — editorial"]
    )
    rollups_data.CUSTOMERS = CUSTOMERS
    rollups_data.DELIVERIES_PER_CAMPAIGN = DELIVERIES
    rollups_data.CLICKS = CLICKS
    started = time.perf_counter()
    world = rollups_data.generate(scale, log)
    log(f"data generated in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    report = rollups.recompute()
    log(f"rollups recomputed in {time.perf_counter() - started:.1f}s ({report})")
    from django_scopes import scopes_disabled

    with scopes_disabled():
        workspace = Workspace.objects.get(pk=world.workspace_id)
        Segment.objects.create(
            workspace=workspace, name="Tier 1", rule=[{"attribute": "tier", "value": 1}]
        )
    # What the aggregator does next (celery beat): the new segment's members and rollups.
    started = time.perf_counter()
    report = rollups.aggregate()
    log(f"segment rollups built in {time.perf_counter() - started:.1f}s ({report})")
    sql("DROP TABLE IF EXISTS bench_pair")
    sql("CREATE TABLE bench_meta (scale float, world jsonb)")
    sql("INSERT INTO bench_meta VALUES (%s, %s::jsonb)", [scale, world.to_json()])
    return world


def swap_queries(world, segment_id: int, customer_email: str) -> list[tuple[str, dict]]:
    variant_a, variant_b = world.variant_ids[0]
    send_day = world.start.date()
    period = {
        "from": (send_day + timedelta(days=1)).isoformat(),
        "to": (send_day + timedelta(days=3)).isoformat(),
    }
    return [
        ("metric=rate", {"metric": "rate"}),
        ("metric=unique", {"metric": "unique"}),
        ("metric=total", {"metric": "total"}),
        ("metric=share", {"metric": "share"}),
        ("variant=A", {"variant": variant_a}),
        ("variant=B", {"variant": variant_b}),
        ("reliable", {"reliable": "1"}),
        ("device=mobile", {"device": "mobile"}),
        ("device=desktop", {"device": "desktop"}),
        ("period", period),
        ("segment", {"segment": segment_id}),
        ("segment+period", {"segment": segment_id, **period}),
        ("preview-for", {"for": customer_email}),
        ("view=mobile", {"view": "mobile"}),
        ("compare", {"compare": variant_b}),
        ("compare+reliable", {"compare": variant_b, "reliable": "1"}),
        ("compare+period", {"compare": variant_b, **period}),
        ("compare+segment", {"compare": variant_b, "segment": segment_id}),
    ]


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MEASURE_JS = """() => {
  const started = performance.now();
  for (const frame of document.querySelectorAll('.preview-frame')) {
    for (const el of frame.querySelectorAll('.box, .num-badge')) el.getBoundingClientRect();
  }
  return performance.now() - started;
}"""


def badge_layouts(client, page: str, queries: list[tuple[str, dict]], repeats: int):
    """(layout ms, measuring-only ms) of the badges in Chromium for each query, the page
    served by the Django test client through Playwright's request routing (static files
    from the finders): the browser's own timing of clickmap.js's layout, and of reading
    the boxes' and badges' rectangles alone."""
    from urllib.parse import urlsplit

    from django.contrib.staticfiles import finders
    from playwright.sync_api import sync_playwright

    def serve(route):
        url = urlsplit(route.request.url)
        if url.path.startswith("/static/"):
            path = finders.find(url.path.removeprefix("/static/"))
            if path:
                return route.fulfill(path=path)
            return route.fulfill(status=404)
        response = client.get(f"{url.path}?{url.query}")
        body = b"".join(response.streaming_content) if response.streaming else response.content
        route.fulfill(
            status=response.status_code,
            headers={"Content-Type": response["Content-Type"]},
            body=body,
        )

    layouts, measures = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, bypass_csp=True)
        context.route("**/*", serve)
        tab = context.new_page()
        for _ in range(repeats):
            for _name, params in queries:
                query = "&".join(f"{k}={v}" for k, v in params.items())
                tab.goto(f"http://localhost{page}?{query}")
                tab.wait_for_function(
                    "[...document.querySelectorAll('.preview-frame')].length && "
                    "[...document.querySelectorAll('.preview-frame')]"
                    ".every(f => f.dataset.layoutMs)",
                    timeout=60_000,
                )
                layouts.append(
                    tab.evaluate(
                        "Math.max(...[...document.querySelectorAll('.preview-frame')]"
                        ".map(f => +f.dataset.layoutMs))"
                    )
                )
                measures.append(tab.evaluate(MEASURE_JS))
        browser.close()
    return layouts, measures


def timed_get(client, url: str, params: dict) -> float:
    started = time.perf_counter()
    response = client.get(url, params, HTTP_HX_REQUEST="true")
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"GET {url} {params}: HTTP {response.status_code}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--repeats", type=int, default=SWAP_REPEATS)
    parser.add_argument("--budget", type=float, default=SWAP_BUDGET, help="seconds of swaps")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    total_started = time.perf_counter()
    fresh = prepare_database(args.scale, args.reuse)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse
    from django_scopes import scope as tenant_scope
    from django_scopes import scopes_disabled

    from bench import rollups_data
    from campaigns.models import Campaign, Customer, Segment, TemplateVersion, Workspace
    from clickmap import render
    from clickmap.models import Preview
    from clickmap.previews import (
        _input_hash,
        preview_for,
        render_stored_preview,
        sample_customer,
    )

    if fresh:
        world = generate(args.scale)
    else:
        world = rollups_data.World.from_json(sql("SELECT world FROM bench_meta")[0][0])
        log("reusing the existing bench database")
    print(
        f"# scale={args.scale}: {world.customers:,} customers, {world.deliveries:,} deliveries, "
        f"{world.clicks:,} clicks, {world.opens:,} opens (one campaign)"
    )
    with scopes_disabled():
        workspace = Workspace.objects.get(pk=world.workspace_id)
        campaign = Campaign.objects.get(pk=world.campaign_ids[0])
        user = get_user_model().objects.get(username="bench")
        segment = Segment.objects.get(workspace=workspace)
        customer = Customer.objects.filter(workspace=workspace).order_by("pk")[500]
        sample = sample_customer(workspace.pk)  # whose data the shared previews show
        versions = list(
            TemplateVersion.objects.filter(variants__node__campaign=campaign)
            .distinct()
            .order_by("pk")
        )

    try:
        # 1. Previews: Chromium's startup, then first renders of fresh rows.
        started = time.perf_counter()
        render._CHROMIUM.call(lambda pages: None, timeout=120)
        startup_ms = (time.perf_counter() - started) * 1000
        print(f"# chromium startup: {startup_ms:.0f}ms (excluded from preview_first_ms)")
        first = {"desktop": [], "mobile": []}
        with scopes_disabled():
            for device in first:
                for _ in range(PREVIEW_FIRST_REPEATS + 1):  # the first one warms the pages
                    lookup = dict(version=versions[0], format="html", device=device)
                    Preview.objects.filter(customer=sample, exact=False, **lookup).delete()
                    row = Preview.objects.create(
                        workspace=workspace,
                        customer=sample,
                        input_hash=_input_hash(versions[0], "html", sample, False),
                        **lookup,
                    )
                    started = time.perf_counter()
                    done = render_stored_preview(row.pk)
                    first[device].append((time.perf_counter() - started) * 1000)
                    if done.status != Preview.Status.DONE:
                        raise SystemExit(f"preview failed: {done.error}")
                first[device] = first[device][1:]
                print(
                    f"# preview_first[{device}]: median "
                    f"{statistics.median(first[device]):.0f}ms of {first[device]}"
                )
            # Everything the swap sequence shows, rendered now (tasks run inline).
            for version in versions:
                for device in ("desktop", "mobile"):
                    preview_for(version, "html", device, sample)
            preview_for(versions[0], "html", "desktop", customer, exact=True)
            undone = Preview.objects.exclude(status=Preview.Status.DONE).count()
            if undone:
                log(f"WARNING: {undone} previews not done before the swaps")

        # 2. Selector swaps against the floor page, interleaved.
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        page = reverse(
            "clickmap:page", kwargs={"workspace_slug": workspace.slug, "campaign_id": campaign.pk}
        )
        floor_page = reverse("campaigns:list", kwargs={"workspace_slug": workspace.slug})
        queries = swap_queries(world, segment.pk, customer.email)
        for _, params in queries:  # warm-up
            timed_get(client, page, params)
            timed_get(client, floor_page, {})
        with scopes_disabled():
            undone = Preview.objects.exclude(status=Preview.Status.DONE).count()
        if undone:
            log(f"WARNING: {undone} previews still not done after the warm-up")
        swaps = {name: [] for name, _ in queries}
        floor = []
        swaps_started = time.perf_counter()
        for done_passes in range(args.repeats):
            if done_passes >= MIN_REPEATS and time.perf_counter() - swaps_started > args.budget:
                log(f"swap budget spent after {done_passes} passes")
                break
            for name, params in queries:
                swaps[name].append(timed_get(client, page, params))
                floor.append(timed_get(client, floor_page, {}))
        for name, samples in swaps.items():
            print(
                f"# swap[{name}]: p50={statistics.median(samples):.1f}ms p95={p95(samples):.1f}ms"
            )
        every = [ms for samples in swaps.values() for ms in samples]
        print(
            f"# swap: {len(every)} requests, p50={statistics.median(every):.1f}ms; "
            f"floor page p50={statistics.median(floor):.1f}ms"
        )
        bench_line("clickmap_swap_p95_ms", p95(every), p95(floor), "<100ms")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _, params in queries:
                timed_get(client, page, params)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
            print(out.getvalue(), file=sys.stderr)

        # 3. The badges' layout in Chromium (desktop, mobile, the compare view).
        shown = [q for q in queries if q[0] in ("metric=rate", "view=mobile", "compare")]
        layouts, measures = badge_layouts(client, page, shown, repeats=5)
        print(f"# badge layout: {len(layouts)} pages, p50={statistics.median(layouts):.1f}ms")
        bench_line("clickmap_badge_layout_p95_ms", p95(layouts), p95(measures), "info")

        # 4. Cached preview (a done row) against one trivial ORM query.
        with tenant_scope(workspace=workspace):
            cached, trivial = [], []
            for _ in range(CACHED_REPEATS):
                started = time.perf_counter()
                preview = preview_for(versions[0], "html", "desktop", sample)
                cached.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                Campaign.objects.filter(pk=campaign.pk).exists()
                trivial.append((time.perf_counter() - started) * 1000)
            assert preview.status == Preview.Status.DONE
        first_all = first["desktop"] + first["mobile"]
        bench_line(
            "preview_first_ms", statistics.median(first_all), statistics.median(cached), "info"
        )
        bench_line("preview_cached_p95_ms", p95(cached), p95(trivial), "<20ms")
    finally:
        render.shutdown()
    log(f"total {time.perf_counter() - total_started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
