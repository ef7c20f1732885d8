"""Health checks: the web's (database, cache), the tracker's (the spool, never the
database) and the pipeline's, each a list of `Check`s with a reason when it fails.

The pipeline's state is read where it is, never estimated: the spool directory (files
waiting and the oldest one's creation time, which its name holds), the change log (rows
and the oldest row's age, by the database's clock) and what the workers and beat stamp
in Redis (clickmap/heartbeats.py). Each measure has a threshold in settings
(HEALTH_*); /healthz/pipeline answers 503 when any is past it, and /metrics exports the
same numbers (clickmap/telemetry.py).
"""

import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from clickmap import heartbeats
from tracking.spool import file_times, write_problem


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    value: float | None = None
    threshold: float | None = None


@dataclass
class PipelineState:
    spool_files: int = 0
    spool_age: float | None = None  # seconds since the oldest waiting file was created
    changes: int = 0  # change-log rows waiting for the aggregator
    change_age: float | None = None
    inline: bool = False  # no REDIS_URL: no worker, no beat
    last_run: dict | None = None  # ended, seconds, changes
    last_run_age: float | None = None
    beat_age: float | None = None
    queue_ages: dict = field(default_factory=dict)


def respond(checks: list[Check]) -> tuple[int, dict]:
    """(HTTP status, JSON body): 200 when every check passed, else 503 with the reasons."""
    failed = [c for c in checks if not c.ok]
    body = {
        "status": "unhealthy" if failed else "ok",
        "reasons": [f"{c.name}: {c.detail}" for c in failed],
        "checks": {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in checks},
    }
    return (503 if failed else 200), body


def web_checks() -> list[Check]:
    """The dashboard's: the database answers a query, the cache keeps a value."""
    checks = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        checks.append(Check("database", True, "answers"))
    except Exception as error:  # any failure is the answer; the next request reconnects
        connection.close_if_unusable_or_obsolete()
        checks.append(Check("database", False, _error(error)))
    try:
        key, token = f"clickmap:healthz:{uuid.uuid4().hex}", uuid.uuid4().hex
        cache.set(key, token, 10)
        kept = cache.get(key) == token
        cache.delete(key)
        checks.append(
            Check("cache", kept, "keeps values" if kept else "did not keep a value just set")
        )
    except Exception as error:
        checks.append(Check("cache", False, _error(error)))
    return checks


def tracker_checks() -> list[Check]:
    """The tracker's: the spool takes an event. No database, no cache: a click never
    needs them."""
    problem = write_problem(settings.TRACKING_SPOOL_DIR)
    if problem:
        return [Check("spool", False, f"tracking spool: {problem}")]
    return [Check("spool", True, "writable")]


def _error(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:300]


def spool_state(directory: Path, now: float) -> tuple[int, float | None]:
    """(complete files waiting, seconds since the oldest was created). A file's name
    starts with its creation time in milliseconds (tracking/spool.py), and its first
    event followed at once."""
    created = file_times(directory, open_files=False)
    if not created:
        return 0, None
    return len(created), max(0.0, now - min(created))


def change_log_state() -> tuple[int, float | None]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))"
            " FROM tracking_eventchange"
        )
        rows, age = cursor.fetchone()
    return rows, None if age is None else max(0.0, float(age))


def consumed_queues() -> list[str]:
    """Every queue a task is sent to: each needs a live worker."""
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return sorted(routed | {settings.CELERY_TASK_DEFAULT_QUEUE})


def pipeline_state(now: float | None = None) -> PipelineState:
    now = time.time() if now is None else now
    state = PipelineState()
    state.spool_files, state.spool_age = spool_state(settings.TRACKING_SPOOL_DIR, now)
    state.changes, state.change_age = change_log_state()
    if not heartbeats.enabled():
        state.inline = True
        return state
    state.last_run = heartbeats.last_aggregate_run()
    if state.last_run:
        state.last_run_age = max(0.0, now - state.last_run["ended"])
    state.beat_age = heartbeats.beat_age(now)
    state.queue_ages = {queue: heartbeats.queue_age(queue, now) for queue in consumed_queues()}
    return state


def _age_check(name: str, age: float | None, limit: float, what: str, never: str) -> Check:
    if age is None:
        return Check(name, False, never, None, limit)
    ok = age <= limit
    verdict = "" if ok else f", over the {limit:g} s threshold"
    return Check(name, ok, f"{what} {age:.1f} s ago{verdict}", round(age, 3), limit)


def pipeline_checks(state: PipelineState) -> list[Check]:
    """Each measure against its threshold (settings.HEALTH_*)."""
    spool_limit = settings.HEALTH_SPOOL_AGE_SECONDS
    if state.spool_age is None:
        spool = Check("spool_lag", True, "no event waits in the spool", 0.0, spool_limit)
    else:
        ok = state.spool_age <= spool_limit
        spool = Check(
            "spool_lag",
            ok,
            f"the oldest of {state.spool_files} spool file(s) is {state.spool_age:.1f} s old"
            + ("" if ok else f", over the {spool_limit:g} s threshold"),
            round(state.spool_age, 3),
            spool_limit,
        )
    backlog_limit = settings.HEALTH_CHANGE_BACKLOG
    backlog_ok = state.changes <= backlog_limit
    backlog = Check(
        "change_backlog",
        backlog_ok,
        f"{state.changes} change-log row(s) wait for the aggregator"
        + ("" if backlog_ok else f", over the threshold of {backlog_limit}"),
        state.changes,
        backlog_limit,
    )
    age_limit = settings.HEALTH_CHANGE_AGE_SECONDS
    if state.change_age is None:
        change_lag = Check("change_lag", True, "the change log is empty", 0.0, age_limit)
    else:
        ok = state.change_age <= age_limit
        change_lag = Check(
            "change_lag",
            ok,
            f"the oldest change-log row is {state.change_age:.1f} s old"
            + ("" if ok else f", over the {age_limit:g} s threshold"),
            round(state.change_age, 3),
            age_limit,
        )
    checks = [spool, backlog, change_lag]
    if state.inline:
        detail = "tasks run inline (REDIS_URL unset): no worker or beat to watch"
        return checks + [Check(name, True, detail) for name in ("aggregation", "beat", "workers")]
    checks.append(
        _age_check(
            "aggregation",
            state.last_run_age,
            settings.HEALTH_AGGREGATE_AGE_SECONDS,
            "the last aggregation run ended",
            "no aggregation run has ended yet",
        )
    )
    beat_limit = settings.HEALTH_HEARTBEAT_AGE_SECONDS
    checks.append(
        _age_check("beat", state.beat_age, beat_limit, "beat last sent a task", "beat never ran")
    )
    for queue, age in state.queue_ages.items():
        checks.append(
            _age_check(
                f"worker:{queue}",
                age,
                beat_limit,
                f"a worker of the {queue} queue last beat",
                f"no worker of the {queue} queue ever beat",
            )
        )
    return checks
