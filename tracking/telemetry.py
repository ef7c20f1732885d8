"""Prometheus counters of the tracking side: requests, events spooled, ingested and
classified. clickmap/telemetry.py serves them with the rest at /metrics (every process
counts into its own file, settings.PROMETHEUS_MULTIPROC_DIR, and the endpoint adds them
up); docs/operations.md lists every metric and the alert to set on it.

The HTTP request metrics live here, not in clickmap, because the click and open
endpoints (tracking/hotpath.py) count themselves and must not import clickmap; the
dashboard's middleware (clickmap.telemetry) uses the same two.
"""

from prometheus_client import Counter, Histogram

# Latency buckets from a redirect's few milliseconds to a slow export.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

HTTP_REQUESTS = Counter(
    "clickmap_http_requests",
    "HTTP requests answered, by route group (redirect, pixel, dashboard, export, …) and status.",
    ["group", "status"],
)
HTTP_LATENCY = Histogram(
    "clickmap_http_request_duration_seconds",
    "Time to answer an HTTP request, by route group.",
    ["group"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_SPOOLED = Counter(
    "clickmap_events_spooled",
    "Click and open events written to the spool by the tracker (kind: click, open).",
    ["kind"],
)
EVENTS_LOST = Counter(
    "clickmap_events_lost",
    "Events the spool refused (full or read-only disk): answered, never stored.",
    ["kind"],
)
EVENTS_INGESTED = Counter(
    "clickmap_events_ingested",
    "Events stored from the spool into the database (kind: click, open).",
    ["kind"],
)
EVENTS_DROPPED = Counter(
    "clickmap_events_dropped",
    "Spooled events naming a delivery or link that no longer exists.",
)
CLICKS_CLASSIFIED = Counter(
    "clickmap_clicks_classified",
    "Clicks stored, by the classifier's verdict (reliable, or the reason they are not).",
    ["reason"],
)

KIND = {"c": "click", "o": "open"}
