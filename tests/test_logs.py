"""Logs an operator can read and a machine can parse: one line per record with its
numbers as fields; beat's ticks at DEBUG (a real `celery beat`); a send's progress
every SEND_PROGRESS_SECONDS; an aggregation run's changes, backlog and lag; a backlog
over its threshold said once, by one process of all, not once a run."""

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone
from django_scopes import scope, scopes_disabled

from campaigns.models import Delivery
from campaigns.sending import send_campaign
from clickmap.log_format import LineFormatter, RoutineAtDebug
from clickmap.pipeline_log import AGGREGATE_TASK, after_run
from clickmap.tasks import aggregate_task, pipeline_task
from tests.conftest import SmtpSink, database_url, free_port
from tests.factories import customers, sendable_campaign
from tracking.ingest import ingest_spool
from tracking.models import EventChange
from tracking.spool import Spool

ROOT = Path(__file__).resolve().parents[1]


def record(message="aggregation run", level=logging.INFO, name="clickmap.pipeline", **extra):
    made = logging.LogRecord(name, level, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    return made


def test_a_record_is_one_line_with_its_fields_and_its_traceback():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        failing = record("run failed", logging.ERROR, exc_info=sys.exc_info())
    failing.fields = {"changes": 3, "note": "two words", "lag_s": 0.25, "none": None}
    line = LineFormatter().format(failing)
    assert "\n" not in line
    head, rest = line.split(" ", 1)
    assert head.endswith("Z") and "T" in head  # ISO time, UTC
    assert rest.startswith('ERROR clickmap.pipeline: run failed changes=3 note="two words" ')
    assert "lag_s=0.25 none=null exc=" in rest
    traceback = json.loads(rest[rest.index("exc=") + 4 :])
    assert traceback.startswith("Traceback") and "ValueError: bad\nvalue" in traceback

    parsed = json.loads(LineFormatter("json").format(failing))
    assert parsed["level"] == "ERROR" and parsed["message"] == "run failed"
    assert (parsed["changes"], parsed["note"], parsed["lag_s"]) == (3, "two words", 0.25)
    assert "ValueError" in parsed["exc"]
    with pytest.raises(ValueError, match="LOG_FORMAT must be text or json"):
        LineFormatter("xml")


def test_routine_lines_are_debug_and_written_only_at_debug():
    tick = record("Scheduler: Sending due task %s (%s)", name="celery.beat")
    tick.args = ("aggregate-rollups", "clickmap.aggregate")
    beat_logger = logging.getLogger("celery.beat")
    level = beat_logger.level
    try:
        beat_logger.setLevel(logging.INFO)
        assert RoutineAtDebug().filter(tick) is False
        assert tick.levelname == "DEBUG"
        beat_logger.setLevel(logging.DEBUG)
        assert RoutineAtDebug().filter(tick) is True
    finally:
        beat_logger.setLevel(level)
    send = record("Task %(name)s[%(id)s] received", name="celery.worker.strategy")
    send.args = {"name": "campaigns.send_campaign", "id": "x"}  # not routine: stays INFO
    assert RoutineAtDebug().filter(send) is True and send.levelname == "INFO"
    # A pipeline tick that expired while every slot was running: routine too.
    expired = record("Discarding revoked task: %s[%s]", name="celery.worker.request")
    expired.args = ("clickmap.pipeline", "x")
    assert RoutineAtDebug().filter(expired) is False and expired.levelname == "DEBUG"
    revoked = record("Discarding revoked task: %s[%s]", name="celery.worker.request")
    revoked.args = ("campaigns.send_campaign", "y")  # a revoked send is worth seeing
    assert RoutineAtDebug().filter(revoked) is True and revoked.levelname == "INFO"


def run_beat(tmp_path: Path, level: str, seconds: float) -> str:
    log = tmp_path / f"beat-{level}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "clickmap", "beat", f"--loglevel={level}"]
            + ["--schedule", str(tmp_path / f"schedule-{level}")],
            cwd=ROOT,
            env=os.environ | {"DATABASE_URL": database_url()},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "beat: Starting..." not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(seconds)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    return log.read_text()


@pytest.mark.django_db
def test_beats_ticks_are_written_at_debug_only(redis_client, tmp_path):
    quiet = run_beat(tmp_path, "INFO", 7)
    # Beat did send its tasks (ingestion every 2 s, aggregation every 3 s)...
    assert redis_client.llen("pipeline") >= 4
    # ...and wrote no line for them.
    assert "Sending due task" not in quiet
    assert "INFO celery.beat: beat: Starting..." in quiet

    loud = run_beat(tmp_path, "DEBUG", 4)
    ticks = [line for line in loud.splitlines() if "Scheduler: Sending due task" in line]
    assert ticks and all(" DEBUG celery.beat: " in line for line in ticks)


class SlowSink(SmtpSink):
    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.25)
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.django_db(transaction=True)
def test_a_send_logs_its_progress_every_few_seconds(settings, make_workspace, caplog):
    settings.SEND_PROGRESS_SECONDS = 1.0
    workspace = make_workspace("Slow")
    customers(workspace, [(f"c{i}", f"c{i}@example.test", {}) for i in range(14)])
    campaign = sendable_campaign(workspace, '<p><a href="https://shop.example/">Shop</a></p>')
    sink = SlowSink()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
    try:
        with caplog.at_level(logging.INFO, logger="campaigns.sending"), scope(workspace=workspace):
            send_campaign(campaign)
    finally:
        smtp.stop()
    lines = [(r.created, r.getMessage(), r.fields) for r in caplog.records if hasattr(r, "fields")]
    assert lines[0][1] == "send started" and lines[-1][1] == "send finished"
    assert lines[-1][2] | {"seconds": 0, "per_second": 0} == {
        "campaign": campaign.pk,
        "workspace": workspace.pk,
        "sent": 14,
        "failed": 0,
        "left": 0,
        "seconds": 0,
        "per_second": 0,
    }
    progress = [line for line in lines if line[1] == "send progress"]
    # 14 messages at 0.25 s or more: a line a second while it runs, never one a message.
    duration = lines[-1][0] - lines[0][0]
    assert duration >= 3.5 and 2 <= len(progress) <= int(duration)
    times = [lines[0][0]] + [at for at, _, _ in progress]
    assert all(later - earlier >= 0.99 for earlier, later in zip(times, times[1:], strict=False))
    sent = [fields["sent"] for _, _, fields in progress]
    assert sent == sorted(set(sent)) and sent[0] > 0 and sent[-1] <= 14
    assert all(fields["sent"] + fields["left"] == 14 for _, _, fields in progress)


@pytest.fixture
def clicks_waiting(make_workspace, spool_dir):
    """Five clicks stored by ingestion: five change-log rows wait for the aggregator."""
    workspace = make_workspace("Shop")
    customers(workspace, [(f"c{i}", f"c{i}@example.test", {}) for i in range(5)])
    campaign = sendable_campaign(workspace, '<p><a href="https://shop.example/">A</a></p>')
    from campaigns.sending import plan_deliveries

    with scope(workspace=workspace):
        plan_deliveries(campaign.nodes.get())
        Delivery.objects.update(status="sent", sent_at=timezone.now() - timedelta(hours=1))
        deliveries = list(Delivery.objects.select_related("template_version"))
    spool = Spool(spool_dir)
    with scopes_disabled():
        for delivery in deliveries:
            link = delivery.template_version.links.get()
            spool.append({"k": "c", "t": time.time(), "d": delivery.pk, "l": link.pk, "u": "u"})
    spool.close()
    assert ingest_spool(spool_dir).clicks == 5
    with scopes_disabled():
        assert EventChange.objects.count() == 5


def run_lines(caplog) -> list[dict]:
    return [
        r.fields | {"message": r.getMessage(), "level": r.levelname}
        for r in caplog.records
        if r.name == "clickmap.pipeline"
    ]


@pytest.mark.django_db(transaction=True)
def test_an_aggregation_run_logs_changes_applied_backlog_left_and_lag(
    clicks_waiting, caplog, redis_client
):
    with scopes_disabled():  # the oldest row waited 42 s, the others less
        first = EventChange.objects.order_by("pk").first()
        EventChange.objects.filter(pk=first.pk).update(
            created_at=timezone.now() - timedelta(seconds=42)
        )
    with caplog.at_level(logging.DEBUG, logger="clickmap.pipeline"):
        after_run(AGGREGATE_TASK, {"changes": 0, "pairs": 0}, 0.5)  # a run that applied none
        aggregate_task.apply()  # the real task, in this process: it applies all five
    waiting, applied = run_lines(caplog)
    assert waiting["message"] == "aggregation run" and waiting["level"] == "INFO"
    assert (waiting["changes"], waiting["backlog"], waiting["seconds"]) == (0, 5, 0.5)
    assert 42 <= waiting["lag_s"] < 50
    assert applied["message"] == "aggregation run" and applied["level"] == "INFO"
    assert (applied["changes"], applied["pairs"], applied["backlog"], applied["lag_s"]) == (
        5,
        5,
        0,
        0.0,
    )

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="clickmap.pipeline"):
        aggregate_task.apply()  # nothing to do: no INFO line
    assert run_lines(caplog) == []


@pytest.mark.django_db
def test_a_pipeline_run_logs_and_counts_what_it_ingested_and_applied(
    clicks_waiting, caplog, redis_client
):
    """What beat runs: one line for the run's two sides, with the backlog it left."""
    with caplog.at_level(logging.DEBUG, logger="clickmap.pipeline"):
        pipeline_task.apply()
    (line,) = [
        r.fields | {"level": r.levelname}
        for r in caplog.records
        if r.getMessage() == "pipeline run"
    ]
    assert line["level"] == "INFO"
    assert (line["changes"], line["backlog"], line["lag_s"], line["files"]) == (5, 0, 0.0, 0)
    assert line["work_left"] is False and line["aggregate_s"] >= 0


def other_process_run(extra_env: dict) -> str:
    """One aggregation-run report from another process: its log."""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c"]
        + ["from clickmap.pipeline_log import after_run; after_run('clickmap.aggregate', {}, 0.1)"],
        cwd=ROOT,
        env=os.environ | {"DATABASE_URL": database_url()} | extra_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_backlog_over_its_threshold_is_a_warning_once_not_one_a_run(
    clicks_waiting, settings, caplog, redis_client
):
    settings.HEALTH_CHANGE_BACKLOG = 4  # five rows wait
    with caplog.at_level(logging.INFO, logger="clickmap.pipeline"):
        for _ in range(30):
            after_run(AGGREGATE_TASK, {"changes": 0}, 0.1)
    warnings = [line for line in run_lines(caplog) if line["level"] == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0]["message"] == "change_backlog over its threshold"
    assert (warnings[0]["value"], warnings[0]["threshold"]) == (5, 4)
    # Another worker process sees the same backlog: it was said, it says nothing.
    elsewhere = other_process_run({"HEALTH_CHANGE_BACKLOG": "4"})
    assert "INFO clickmap.pipeline: aggregation run" in elsewhere and "backlog=5" in elsewhere
    assert "WARNING" not in elsewhere

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="clickmap.pipeline"):
        aggregate_task.apply()  # drained
        for _ in range(5):
            after_run(AGGREGATE_TASK, {"changes": 0}, 0.1)
    notices = [
        line["message"] for line in run_lines(caplog) if line["message"] != "aggregation run"
    ]
    assert notices == ["change_backlog back under its threshold"]

    # Over again: said again, once.
    settings.HEALTH_CHANGE_BACKLOG = 0
    EventChange.objects.create(kind="o", delivery=Delivery.objects.with_scopes_disabled().first())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="clickmap.pipeline"):
        for _ in range(10):
            after_run(AGGREGATE_TASK, {"changes": 0}, 0.1)
    assert [line["level"] for line in run_lines(caplog)].count("WARNING") == 1


# A line of clickmap/log_format.py's text format: time, level, logger, message, fields.
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: "
)
TEXT_LINE_PARTS = re.compile(r"^(\S+) (\w+) ([\w.]+): (.*)$")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("output", ["text", "json"])
def test_gunicorns_own_lines_and_its_access_log_are_in_the_one_format(output, tmp_path, spool_dir):
    """A real gunicorn as compose runs the web and tracker (the logger class and an
    access log on stdout): every line it writes, its master's and workers' as well as
    the app's, parses in the house format, and each request is one record with its
    numbers as fields."""
    from tests.tracker_server import Tracker

    tracker = Tracker(
        tmp_path,
        spool_dir,
        {"LOG_FORMAT": output},
        args=("--logger-class", "clickmap.gunicorn_logging.Logger", "--access-logfile", "-"),
    )
    try:
        assert tracker.request("GET", "/healthz?probe=1")[0] == 200
        assert tracker.request("GET", "/c/not-a-token")[0] == 404
    finally:
        tracker.stop()
    lines = [line for line in tracker.log().splitlines() if line.strip()]
    if output == "json":
        records = [json.loads(line) for line in lines]  # every line is one JSON object
    else:
        assert all(TEXT_LINE.match(line) for line in lines), lines
        records = []
        for line in lines:
            _, level, logger, message = TEXT_LINE_PARTS.match(line).groups()
            fields = dict(re.findall(r" (\w+)=(\S+)", message))
            records.append({**fields, "level": level, "logger": logger, "message": message})
    # gunicorn's master and workers say they started, in the format.
    booted = [r for r in records if r["logger"] == "gunicorn.error"]
    assert any(r["message"].startswith("Booting worker") for r in booted), lines
    access = [r for r in records if r["logger"] == "gunicorn.access"]
    assert all(r["message"].split(" ", 1)[0] == "request" for r in access)
    # Before them the readiness probe's requests: the last two are this test's.
    mine = [(r["method"], r["path"], int(r["status"])) for r in access[-2:]]
    assert mine == [("GET", "/healthz", 200), ("GET", "/c/not-a-token", 404)]
    assert all(float(r["ms"]) >= 0 and int(r["bytes"]) > 0 for r in access[-2:])
    assert all(r["remote"] == "127.0.0.1" for r in access[-2:])
    assert not any("probe=1" in line for line in lines)  # no query string is logged
