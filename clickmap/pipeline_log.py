"""The pipeline's own log lines and counters, after each ingestion and aggregation run
of a Celery worker (clickmap/celery_signals.py calls `after_run`).

Each run writes one line with its numbers as fields: what it did, how long it took, what
is left (spool files, change-log rows) and how far behind that is (the oldest waiting
file's and change row's age). A run that found nothing writes it at DEBUG, so an idle
pipeline writes nothing at INFO. A backlog or lag past its threshold (settings.HEALTH_*)
is logged at WARNING once, by whichever worker process sees it first (a Redis key says
it was said), and once more, at INFO, when it is back under.
"""

import logging
import time

from django.conf import settings

from clickmap import heartbeats, telemetry
from clickmap.pipeline_health import change_log_state, spool_state

log = logging.getLogger("clickmap.pipeline")

INGEST_TASK = "tracking.ingest_events"
AGGREGATE_TASK = "clickmap.aggregate"
PIPELINE_TASK = "clickmap.pipeline"  # both in turns: what beat runs (clickmap/pipeline.py)
TASKS = frozenset({INGEST_TASK, AGGREGATE_TASK, PIPELINE_TASK})

_warned_here: set[str] = set()  # without Redis (inline tasks): this process's memory


def after_run(task: str, result: dict, seconds: float) -> None:
    now = time.time()
    spool_files, spool_age = spool_state(settings.TRACKING_SPOOL_DIR, now)
    backlog, change_age = change_log_state()
    fields = {"seconds": round(seconds, 3)}
    if task == PIPELINE_TASK:
        changes = int(result.get("changes") or 0)
        ingest_s, aggregate_s = result.get("ingest_s", 0.0), result.get("aggregate_s", 0.0)
        telemetry.INGESTION_RUN_SECONDS.observe(ingest_s)
        telemetry.AGGREGATION_RUN_SECONDS.observe(aggregate_s)
        telemetry.AGGREGATION_CHANGES.inc(changes)
        if heartbeats.enabled():
            heartbeats.record_aggregate_run(now, aggregate_s, changes)
        fields |= {key: result.get(key, 0) for key in ("files", "clicks", "opens")}
        fields |= {"changes": changes, "busy_shards": result.get("busy_shards", 0)}
        fields |= {"ingest_s": ingest_s, "aggregate_s": aggregate_s}
        fields["work_left"] = bool(result.get("work_left"))
        message, busy = "pipeline run", changes > 0 or bool(result.get("files"))
    elif task == AGGREGATE_TASK:
        changes = int(result.get("changes") or 0)
        telemetry.AGGREGATION_RUN_SECONDS.observe(seconds)
        telemetry.AGGREGATION_CHANGES.inc(changes)
        if heartbeats.enabled():
            heartbeats.record_aggregate_run(now, seconds, changes)
        fields |= {"changes": changes, "pairs": result.get("pairs", 0)}
        fields["busy_shards"] = result.get("busy_shards", 0)
        message, busy = "aggregation run", changes > 0
    else:
        telemetry.INGESTION_RUN_SECONDS.observe(seconds)
        fields |= {key: result.get(key, 0) for key in ("files", "clicks", "opens")}
        message, busy = "ingestion run", bool(result.get("files"))
    fields |= {  # nothing waiting: no lag
        "backlog": backlog,
        "lag_s": _round(change_age or 0.0),
        "spool_files": spool_files,
        "spool_lag_s": _round(spool_age or 0.0),
    }
    log.log(logging.INFO if busy or backlog else logging.DEBUG, message, extra={"fields": fields})
    watch(
        {
            "spool_lag": (spool_age, settings.HEALTH_SPOOL_AGE_SECONDS, "s"),
            "change_backlog": (backlog, settings.HEALTH_CHANGE_BACKLOG, "rows"),
            "change_lag": (change_age, settings.HEALTH_CHANGE_AGE_SECONDS, "s"),
        }
    )


def watch(measures: dict) -> None:
    """WARNING once when a measure passes its threshold, INFO once when it is back."""
    for name, (value, limit, unit) in measures.items():
        fields = {"measure": name, "value": _round(value), "threshold": limit, "unit": unit}
        if value is not None and value > limit:
            if _first_warning(name):
                log.warning(f"{name} over its threshold", extra={"fields": fields})
        elif _first_recovery(name):
            log.info(f"{name} back under its threshold", extra={"fields": fields})


def _first_warning(name: str) -> bool:
    if heartbeats.enabled():
        return heartbeats.warn_once(name)
    if name in _warned_here:
        return False
    _warned_here.add(name)
    return True


def _first_recovery(name: str) -> bool:
    if heartbeats.enabled():
        return heartbeats.recovered(name)
    if name not in _warned_here:
        return False
    _warned_here.discard(name)
    return True


def _round(value):
    return None if value is None else round(value, 3)
