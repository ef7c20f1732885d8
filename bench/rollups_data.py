"""Data for bench/bench_rollups.py: a workspace with a million customers, ten campaigns
of 100,000 deliveries (one node, A/B variants on two template versions of ~20 links),
ten million click events and about a million opens, all scaled by `scale`.

Rows are made by set-based SQL (INSERT … SELECT over generate_series) with the tables'
secondary indexes dropped during the load and rebuilt after, and foreign-key triggers
off (session_replication_role = replica, the bench database is ours), as a bulk import
would do. Templates, campaigns and variants go through the ORM and
campaigns.services, so the link inventory is the real one.

Timeline: campaigns 0–8 went out a day apart, weeks ago, and their clicks (the history,
all ten million) are in; campaign 9 went out in the last hour and has no clicks yet: the
incremental run's new events are mostly its first clicks (see `click_insert_sql`).

Shape of the clicks (deterministic: setseed):
- 60% of delivered emails have clickers; each picks 1–9 links, skewed to the top of the
  email (rank = n·u²), which gives the candidate (delivery, link) pairs;
- each event picks a pair with weight ∝ pn^(-1/3) over a random order, so most pairs
  get a few clicks and a long tail of pairs gets hundreds (repeat clickers, scanners);
- a pair's clicks start at a skewed offset within 14 days of the send and repeat over
  the next hours to days; 5% come from bots, ~10% in all are unreliable;
- the device is mostly the delivery's own (mobile, desktop, tablet, unknown).
"""

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import connection
from django_scopes import scopes_disabled

from campaigns.models import Campaign, EmailNode, Variant
from campaigns.services import template_create, template_version_save, workspace_create

CAMPAIGNS = 10
CUSTOMERS = 1_000_000
DELIVERIES_PER_CAMPAIGN = 100_000
CLICKS = 10_000_000
CLICKER_SHARE = 0.6
BOUNCE_SHARE = 0.03
DAYS = 14
FRESH_CAMPAIGN = True  # the last campaign went out in the last hour, without clicks yet

USER_AGENTS = {
    "mobile": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148",
    "desktop": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0.0.0 Safari/537.36",
    "tablet": "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) Mobile/15E148",
    "unknown": "",
    "bot": "Mozilla/5.0 (compatible; Barracuda Sentinel)",
}


@dataclass
class World:
    workspace_id: int
    campaign_ids: list
    variant_ids: list  # per campaign: [A, B]
    start: datetime  # the first send
    customers: int
    deliveries: int
    clicks: int
    opens: int
    pairs: int

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "start": self.start.isoformat()})

    @classmethod
    def from_json(cls, data) -> "World":
        data = json.loads(data) if isinstance(data, str) else data
        return cls(**{**data, "start": datetime.fromisoformat(data["start"])})


def newsletter(campaign: int, variant: str) -> str:
    """A newsletter of ~20 links: header, navigation, product blocks, socials, footer."""
    shop = f"https://shop{campaign}.example"
    nav = "".join(
        f'<td><a href="{shop}/{part}?utm_campaign=c{campaign}">{part.title()}</a></td>'
        for part in ("new", "women", "men", "sale")
    )
    products = 6 if variant == "A" else 7
    blocks = "".join(
        f'<tr><td><a href="{shop}/p/{i}?v={variant}"><img src="{shop}/i/{i}.jpg" '
        f'alt="Product {i}"></a></td><td><a href="{shop}/p/{i}?v={variant}&amp;t=1">'
        f"Product {i} of {{{{ customer.first_name }}}}</a></td></tr>"
        for i in range(products)
    )
    socials = "".join(
        f'<a href="https://{site}.example/shop{campaign}">{site}</a> '
        for site in ("social", "video", "photos")
    )
    return (
        "<!doctype html><html><body><table>"
        f'<tr><td><a href="{shop}/?logo"><img src="{shop}/logo.png" alt="Shop"></a></td></tr>'
        f"<tr>{nav}</tr>{blocks}"
        f'<tr><td><a href="{shop}/all?v={variant}">See everything</a></td></tr>'
        f"<tr><td>{socials}</td></tr>"
        f'<tr><td><a href="{shop}/unsubscribe?u={{{{ customer.id }}}}">Unsubscribe</a>'
        "</td></tr></table></body></html>"
    )


# The emails sent, as (html, image files) for (campaign k, variant "A" or "B"): None for
# the generated newsletter above; the click-map benchmark sends the demo's own emails.
EMAILS = None


def _sql(sql: str, params=None) -> list:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


class bulk_load:
    """Drop a table's secondary indexes and unique constraints (its primary key stays),
    load, then rebuild them: faster than maintaining them row by row. Works on
    partitioned tables too (the parent's definitions recurse)."""

    def __init__(self, table: str):
        self.table = table

    def __enter__(self):
        rows = _sql(
            """SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c
               WHERE c.conrelid = %s::regclass AND c.contype = 'u'""",
            [self.table],
        )
        self.constraints = rows
        for name, _ in rows:
            _sql(f'ALTER TABLE "{self.table}" DROP CONSTRAINT "{name}"')
        self.indexes = _sql(
            """SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x
               JOIN pg_class i ON i.oid = x.indexrelid
               WHERE x.indrelid = %s::regclass AND NOT x.indisprimary
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)""",
            [self.table],
        )
        for name, _ in self.indexes:
            _sql(f'DROP INDEX "{name}"')
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            return False
        for name, definition in self.constraints:
            _sql(f'ALTER TABLE "{self.table}" ADD CONSTRAINT "{name}" {definition}')
        for _, definition in self.indexes:
            _sql(definition.replace(" ON ONLY ", " ON "))
        return False


def _ensure_partitions(start: datetime) -> None:
    # The raw tables may be partitioned by month (tracking/partitions.py): make sure the
    # months the data covers have their partitions, so nothing lands in the default one.
    try:
        from tracking.partitions import ensure_partitions
    except ImportError:
        return
    ensure_partitions(today=start.date(), months_ahead=2)


def generate(scale: float, log) -> World:
    """Create the bench data (in an empty, migrated database); returns what was made."""
    customers = max(1000, round(CUSTOMERS * scale))
    per_campaign = max(100, round(DELIVERIES_PER_CAMPAIGN * scale))
    clicks = max(10_000, round(CLICKS * scale))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=CAMPAIGNS + DAYS + 1)
    _ensure_partitions(start)
    started = time.perf_counter()
    with scopes_disabled():
        owner = get_user_model().objects.create_user("bench", password="bench-rollups")
        workspace = workspace_create(name="Bench rollups", owner=owner)
        campaign_ids, variant_ids = [], []
        for k in range(CAMPAIGNS):
            (html_a, assets_a), (html_b, assets_b) = (
                EMAILS(k, v) if EMAILS else (newsletter(k, v), None) for v in "AB"
            )
            first = template_create(
                workspace=workspace, name=f"Newsletter {k}", html=html_a, assets=assets_a
            )
            second, _ = template_version_save(
                template=first.template, html=html_b, note="Variant B", assets=assets_b
            )
            campaign = Campaign.objects.create(
                workspace=workspace, name=f"Newsletter {k}", status=Campaign.Status.SENT
            )
            node = EmailNode.objects.create(campaign=campaign, name="Email", position=1)
            variants = [
                Variant.objects.create(node=node, name=name, subject="News", template_version=v)
                for name, v in (("A", first), ("B", second))
            ]
            campaign_ids.append(campaign.pk)
            variant_ids.append([v.pk for v in variants])
    log(f"templates and campaigns in {time.perf_counter() - started:.1f}s")

    _sql("SET session_replication_role = replica")
    _sql("SET maintenance_work_mem = '1GB'")
    _sql("SET work_mem = '256MB'")
    _sql("SELECT setseed(0.42)")
    params = {
        "ws": workspace.pk,
        "customers": customers,
        "per_campaign": per_campaign,
        "clicks": clicks,
        "start": start,
        "days": DAYS,
        "clicker_share": CLICKER_SHARE,
        "bounce_share": BOUNCE_SHARE,
        "fresh": CAMPAIGNS - 1 if FRESH_CAMPAIGN else -1,
        "fresh_at": now - timedelta(hours=1),
        "fresh_variants": variant_ids[-1] if FRESH_CAMPAIGN else [0],
    }
    _sql(
        "CREATE TEMP TABLE bench_campaign (k int, node_id bigint, va bigint, vb bigint, "
        "ver_a bigint, ver_b bigint)"
    )
    for k, (a, b) in enumerate(variant_ids):
        _sql(
            """INSERT INTO bench_campaign SELECT %s, a.node_id, a.id, b.id,
                   a.template_version_id, b.template_version_id
               FROM campaigns_variant a, campaigns_variant b WHERE a.id = %s AND b.id = %s""",
            [k, a, b],
        )
    step = time.perf_counter()
    with bulk_load("campaigns_customer"):
        _sql(
            """INSERT INTO campaigns_customer
                   (workspace_id, external_id, email, attributes, created_at)
               SELECT %(ws)s, 'c' || g, 'c' || g || '@example.test',
                      jsonb_build_object('tier', g %% 3, 'first_name', 'Pat'), %(start)s
               FROM generate_series(1, %(customers)s) g""",
            params,
        )
    (first_customer,) = _sql(
        "SELECT min(id) FROM campaigns_customer WHERE workspace_id = %s", [workspace.pk]
    )[0]
    params["c0"] = first_customer
    with bulk_load("campaigns_delivery"):
        # Campaign k goes to a window of customers shifted by k·61,803: windows overlap,
        # so most customers get several campaigns. Sends of a campaign span one hour;
        # the last campaign's hour is the one just past.
        _sql(
            """INSERT INTO campaigns_delivery (workspace_id, node_id, variant_id, customer_id,
                   template_version_id, format, status, error, message_id, created_at, sent_at)
               SELECT %(ws)s, c.node_id,
                      CASE WHEN i %% 2 = 0 THEN c.va ELSE c.vb END,
                      %(c0)s + (i + c.k * 61803) %% %(customers)s,
                      CASE WHEN i %% 2 = 0 THEN c.ver_a ELSE c.ver_b END, 'html',
                      CASE WHEN random() < %(bounce_share)s THEN 'bounced' ELSE 'delivered' END,
                      '', '', s.at, s.at
               FROM bench_campaign c
               CROSS JOIN generate_series(0, %(per_campaign)s - 1) i
               CROSS JOIN LATERAL (
                   SELECT CASE WHEN c.k = %(fresh)s THEN %(fresh_at)s::timestamptz
                               ELSE %(start)s::timestamptz + c.k * interval '1 day' END
                          + (i %% 3600) * interval '1 second' AS at) s""",
            params,
        )
    log(
        f"{customers:,} customers, {per_campaign * CAMPAIGNS:,} deliveries in "
        f"{time.perf_counter() - step:.1f}s"
    )

    step = time.perf_counter()
    _sql(
        """CREATE TEMP TABLE bench_link AS
           SELECT v.id AS variant_id, l.id AS link_id, l.href,
                  row_number() OVER (PARTITION BY v.id ORDER BY l.ordinal) - 1 AS rank,
                  count(*) OVER (PARTITION BY v.id) AS links
           FROM campaigns_variant v
           JOIN campaigns_templatelink l
             ON l.version_id = v.template_version_id AND l.format = v.format
           WHERE l.trackable AND NOT l.unsubscribe"""
    )
    # Candidate pairs in a random order (pn), each with a start offset and device; the
    # fresh campaign's in their own table (its clicks are the incremental run's).
    _sql(
        """CREATE TEMP TABLE bench_pair_all AS
           SELECT random() AS r, q.*
           FROM (
             SELECT DISTINCT ON (d.id, l.link_id)
                    d.id AS delivery_id, d.workspace_id, d.variant_id, d.sent_at,
                    l.link_id, l.href,
                    d.device, %(days)s * interval '1 day' * power(random(), 3) AS offset_at
             FROM (SELECT d.id, d.workspace_id, d.variant_id, d.sent_at, n.links,
                          1 + floor(9 * power(random(), 2))::int AS picks,
                          CASE WHEN (d.id * 2654435761) %% 100 < 60 THEN 'mobile'
                               WHEN (d.id * 2654435761) %% 100 < 90 THEN 'desktop'
                               WHEN (d.id * 2654435761) %% 100 < 97 THEN 'tablet'
                               ELSE 'unknown' END AS device
                   FROM campaigns_delivery d
                   JOIN (SELECT variant_id, max(links) AS links FROM bench_link
                         GROUP BY variant_id) n ON n.variant_id = d.variant_id
                   WHERE d.workspace_id = %(ws)s AND d.status <> 'bounced'
                     AND random() < %(clicker_share)s) d
             CROSS JOIN LATERAL (SELECT floor(d.links * power(random(), 2))::int AS rank
                                 FROM generate_series(1, d.picks)) pick
             JOIN bench_link l ON l.variant_id = d.variant_id AND l.rank = pick.rank
             ORDER BY d.id, l.link_id
           ) q""",
        params,
    )
    for table, fresh in (("bench_pair", False), ("bench_pair_new", True)):
        _sql(
            f"""CREATE UNLOGGED TABLE {table} AS
                SELECT row_number() OVER (ORDER BY r) AS pn, p.* FROM bench_pair_all p
                WHERE (p.variant_id = ANY(%(fresh_variants)s)) = {fresh}""",
            params,
        )
        _sql(f"CREATE UNIQUE INDEX ON {table} (pn)")
        _sql(f"ANALYZE {table}")
    (pairs,) = _sql("SELECT count(*) FROM bench_pair")[0]
    params["pairs"] = pairs
    log(f"{pairs:,} candidate pairs in {time.perf_counter() - step:.1f}s")

    step = time.perf_counter()
    with bulk_load("tracking_clickevent"):
        _sql(click_insert_sql("generate_series(1, %(clicks)s)"), params)
    log(f"{clicks:,} click events in {time.perf_counter() - step:.1f}s")

    step = time.perf_counter()
    with bulk_load("tracking_openevent"):
        _sql(
            """INSERT INTO tracking_openevent (event_id, workspace_id, delivery_id, at,
                   user_agent, ip, device, reliable, reason, ingested_at)
               SELECT gen_random_uuid(), d.workspace_id, d.id, o.at, '', '',
                      CASE WHEN o.machine THEN 'unknown' ELSE 'mobile' END,
                      NOT o.machine, CASE WHEN o.machine THEN 'mpp' ELSE '' END, o.at
               FROM campaigns_delivery d
               CROSS JOIN LATERAL (
                   SELECT d.sent_at + %(days)s * interval '1 day' * power(random(), 3) AS at,
                          random() < 0.2 AS machine
                   FROM generate_series(1, 1 + floor(3 * power(random(), 3))::int)) o
               WHERE d.workspace_id = %(ws)s AND d.status <> 'bounced' AND random() < 0.5
                 AND d.variant_id <> ALL(%(fresh_variants)s)""",
            params,
        )
    (opens,) = _sql("SELECT count(*) FROM tracking_openevent")[0]
    log(f"{opens:,} open events in {time.perf_counter() - step:.1f}s")
    _sql("RESET session_replication_role")

    step = time.perf_counter()
    for table in (
        "campaigns_customer",
        "campaigns_delivery",
        "campaigns_templatelink",
        "tracking_clickevent",
        "tracking_openevent",
    ):
        _sql(f'VACUUM (ANALYZE) "{table}"')
    log(f"vacuum and analyze in {time.perf_counter() - step:.1f}s")
    return World(
        workspace_id=workspace.pk,
        campaign_ids=campaign_ids,
        variant_ids=variant_ids,
        start=start,
        customers=customers,
        deliveries=per_campaign * CAMPAIGNS,
        clicks=clicks,
        opens=opens,
        pairs=pairs,
    )


def click_insert_sql(series: str, at_sql: str | None = None, pairs: str = "bench_pair") -> str:
    """INSERT … SELECT of click events over `series`, each picking a pair of the table
    `pairs` by weight (its size is the parameter %(pairs)s).

    `at_sql` overrides the click time (an SQL expression over p and r); by default a pair's
    clicks repeat from its start offset over the next hours to days, within 14 days.
    """
    at_sql = at_sql or (
        "p.sent_at + least(p.offset_at + interval '3 days' * power(r.t, 4), "
        "%(days)s * interval '1 day' - interval '1 second')"
    )
    ua = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in USER_AGENTS.items())
    return f"""INSERT INTO tracking_clickevent (event_id, workspace_id, delivery_id, at,
                   user_agent, ip, device, reliable, reason, ingested_at, link_id, url,
                   honeypot, method)
               SELECT gen_random_uuid(), e.workspace_id, e.delivery_id, e.at,
                      CASE e.device {ua} END, '', e.device, e.reliable,
                      CASE WHEN e.reliable THEN '' WHEN e.bot THEN 'scanner' ELSE 'fast' END,
                      e.at, e.link_id, e.href, false, 'GET'
               FROM (SELECT p.workspace_id, p.delivery_id, p.link_id, p.href, {at_sql} AS at,
                            CASE WHEN r.bot THEN 'bot' ELSE p.device END AS device,
                            r.bot, NOT r.bot AND r.u >= 0.055 AS reliable
                     FROM (SELECT 1 + floor(%(pairs)s * power(random(), 1.5))::bigint AS pn,
                                  random() AS t, random() < 0.05 AS bot, random() AS u
                           FROM {series} g) r
                     JOIN {pairs} p ON p.pn = r.pn) e"""
