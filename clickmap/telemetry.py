"""Prometheus metrics: the pipeline's and the previews' counters, the request metrics
middleware, and what /metrics serves (clickmap/ops_views.py).

Every process counts into its own file in settings.PROMETHEUS_MULTIPROC_DIR
(clickmap/config.py names the files by host and process, so the containers of
docker-compose.yml can share one volume), and a scrape adds every file up: the web's
gunicorn workers, the tracker's and the Celery workers'. Backlogs, lags and heartbeats
are not counted but read at scrape time from where they are (PipelineCollector: the
spool directory, the change log, Redis), the numbers /healthz/pipeline judges.
docs/operations.md lists every metric and the alert to set on it.
"""

import math
import time

from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from tracking.telemetry import HTTP_LATENCY, HTTP_REQUESTS

RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

AGGREGATION_RUN_SECONDS = Histogram(
    "clickmap_aggregation_run_seconds",
    "Time of one aggregation run (the Celery task), however much it applied.",
    buckets=RUN_BUCKETS,
)
AGGREGATION_CHANGES = Counter(
    "clickmap_aggregation_changes_applied",
    "Change-log rows the aggregation runs applied to the rollups.",
)
INGESTION_RUN_SECONDS = Histogram(
    "clickmap_ingestion_run_seconds",
    "Time of one ingestion run (spool to database).",
    buckets=RUN_BUCKETS,
)
PREVIEW_RENDERS = Counter(
    "clickmap_preview_renders",
    "Preview renders in Chromium by outcome: done, or failed (the preview shows why).",
    ["outcome"],
)
PREVIEW_RENDER_SECONDS = Histogram(
    "clickmap_preview_render_seconds",
    "Time of one preview render, failed ones included.",
    buckets=RUN_BUCKETS,
)

# Route groups of the request metrics, by URL name (the rest of the app is "dashboard").
GROUPS = {
    "clickmap:export": "export",
    "click": "redirect",
    "open": "pixel",
    "unsubscribe": "unsubscribe",
    "favicon": "static",
}


def route_group(request) -> str:
    group = getattr(request, "route_group", None)  # set by the ops endpoints
    if group:
        return group
    match = request.resolver_match
    if match is None:  # WhiteNoise answered, or nothing matched
        static = "/" + settings.STATIC_URL.strip("/") + "/"
        return "static" if request.path_info.startswith(static) else "unmatched"
    if match.app_names[:1] == ["admin"]:
        return "admin"
    return GROUPS.get(match.view_name, "dashboard")


class RequestMetricsMiddleware:
    """Counts and times every request Django answers (the click and open endpoints
    count themselves, tracking/hotpath.py), by route group and status."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        group = route_group(request)
        HTTP_REQUESTS.labels(group, str(response.status_code)).inc()
        HTTP_LATENCY.labels(group).observe(time.perf_counter() - started)
        return response


def _gauge(name: str, documentation: str, value, labels: dict | None = None):
    family = GaugeMetricFamily(name, documentation, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), _number(value))
    return family


def _number(value) -> float:
    # A heartbeat or run never seen is infinitely old: every "older than" alert fires.
    return math.inf if value is None else float(value)


class PipelineCollector:
    """Backlogs, lags, heartbeats and the health checks' verdicts, read at scrape time."""

    def collect(self):
        from clickmap.pipeline_health import pipeline_checks, pipeline_state

        try:
            state = pipeline_state()
            checks = pipeline_checks(state)
        except Exception:  # the database or Redis is away: say so, serve the counters
            yield _gauge("clickmap_pipeline_up", "1 when the pipeline could be read.", 0)
            return
        yield _gauge("clickmap_pipeline_up", "1 when the pipeline could be read.", 1)
        yield _gauge(
            "clickmap_spool_files", "Complete spool files waiting for ingestion.", state.spool_files
        )
        yield _gauge(
            "clickmap_ingestion_lag_seconds",
            "Age of the oldest event waiting in the spool (0 when none waits).",
            state.spool_age or 0,
        )
        yield _gauge(
            "clickmap_change_log_rows",
            "Change-log rows (stored or reclassified events) waiting for the aggregator.",
            state.changes,
        )
        yield _gauge(
            "clickmap_aggregation_lag_seconds",
            "Age of the oldest change-log row (0 when the log is empty).",
            state.change_age or 0,
        )
        verdicts = GaugeMetricFamily(
            "clickmap_health_check_ok",
            "1 when a /healthz/pipeline check passes, 0 when it fails.",
            labels=["check"],
        )
        for check in checks:
            verdicts.add_metric([check.name], 1.0 if check.ok else 0.0)
        yield verdicts
        if state.inline:
            return
        run = state.last_run or {}
        yield _gauge(
            "clickmap_aggregation_last_run_age_seconds",
            "Seconds since the last aggregation run ended.",
            state.last_run_age,
        )
        yield _gauge(
            "clickmap_aggregation_last_run_seconds",
            "How long the last aggregation run took.",
            run.get("seconds"),
        )
        ages = GaugeMetricFamily(
            "clickmap_heartbeat_age_seconds",
            "Seconds since beat last sent a task, or a queue's freshest worker last beat.",
            labels=["process"],
        )
        ages.add_metric(["beat"], _number(state.beat_age))
        for queue, age in state.queue_ages.items():
            ages.add_metric([f"worker:{queue}"], _number(age))
        yield ages


def scrape() -> bytes:
    """Every process's counters added up, and the pipeline read now: the text format."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(settings.PROMETHEUS_MULTIPROC_DIR))
    registry.register(PipelineCollector())
    return generate_latest(registry)
