"""Health checks that check: the web's /healthz fails while its PostgreSQL is stopped
(a server of the test's own, really stopped) or its cache is unreachable, and passes
again once it is back; the tracker's fails while its spool is read-only and never opens
a database connection; /healthz/pipeline turns unhealthy when beat or the worker stops
(real `celery beat` and `celery worker` processes) and healthy again when they return."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.test import Client

from clickmap import embedded_db
from clickmap.pipeline_health import consumed_queues
from tests.conftest import database_url, free_port
from tests.tracker_server import Tracker, remount, tmpfs

ROOT = Path(__file__).resolve().parents[1]


def wait_for(condition, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def health(server: Tracker, path: str = "/healthz") -> tuple[int, dict]:
    import json

    status, headers, body = server.request("GET", path)
    assert headers["Content-Type"] == "application/json", body
    return status, json.loads(body)


def test_the_webs_health_check_fails_while_its_database_is_stopped(tmp_path):
    # Not under pytest's tmp_path: its folders are private to root, and the embedded
    # server runs as a user of its own (as root), which must reach its data directory.
    home = Path(tempfile.mkdtemp(prefix="clickmap-health-pg-"))
    home.chmod(0o755)
    data_dir = home / "postgres"
    web = None
    try:
        socket_dir = embedded_db.start(data_dir, "health")
        web = Tracker(
            tmp_path,
            tmp_path / "spool",
            {
                "SERVICE_ROLE": "web",
                "DATABASE_URL": f"postgres://postgres@/health?host={socket_dir}",
            },
            workers=1,
        )
        status, body = health(web)
        assert status == 200, body
        assert body["checks"]["database"]["ok"] and body["checks"]["cache"]["ok"]

        assert embedded_db.stop(data_dir)
        status, body = health(web)
        assert status == 503 and body["status"] == "unhealthy"
        assert [reason.split(":")[0] for reason in body["reasons"]] == ["database"]
        assert "OperationalError" in body["checks"]["database"]["detail"]
        assert body["checks"]["cache"]["ok"]

        embedded_db.start(data_dir)
        wait_for(lambda: health(web)[0] == 200, "the web to see its database again", 30)
    finally:
        if web:
            web.stop()
        embedded_db.stop(data_dir)
        shutil.rmtree(home, ignore_errors=True)


def test_the_webs_health_check_fails_when_the_cache_is_unreachable(settings, db):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        }
    }
    response = Client().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["cache"]["ok"] is False
    assert body["reasons"][0].startswith("cache: ConnectionError")


@contextmanager
def listener_counting_connections():
    """A TCP port that accepts and counts connections (a database stand-in that must
    never be called)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        server.close()
        for conn in accepted:
            conn.close()


def test_the_trackers_health_check_is_its_spool_and_never_the_database(tmp_path):
    with listener_counting_connections() as (port, accepted), tmpfs(tmp_path / "mnt", "1m") as mnt:
        spool_dir = mnt / "spool"
        spool_dir.mkdir()
        tracker = Tracker(
            tmp_path,
            spool_dir,
            {"SERVICE_ROLE": "tracker", "DATABASE_URL": f"postgres://u@127.0.0.1:{port}/x"},
            workers=1,
        )
        try:
            status, body = health(tracker)
            assert (status, body["role"], list(body["checks"])) == (200, "tracker", ["spool"])

            remount(mnt, "ro")
            status, body = health(tracker)
            assert status == 503
            assert body["reasons"][0].startswith("spool: tracking spool:")
            assert "Read-only file system" in body["reasons"][0]

            remount(mnt, "rw")
            assert health(tracker)[0] == 200
            # The pipeline's health reads the database: not the tracker's to answer.
            assert tracker.request("GET", "/healthz/pipeline")[0] == 404
        finally:
            tracker.stop()
        assert accepted == []  # no health check opened a database connection


@contextmanager
def celery(args: list[str], env: dict, log: Path):
    """A real `celery -A clickmap …` process, stopped (TERM, then KILL) afterwards."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "clickmap", *args],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGCONT)  # a stopped one must be able to exit
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def failing(client: Client) -> list[str]:
    """The names of the /healthz/pipeline checks failing now."""
    response = client.get("/healthz/pipeline")
    body = response.json()
    failed = sorted(name for name, check in body["checks"].items() if not check["ok"])
    assert (response.status_code == 200) == (not failed), body
    return failed


@pytest.mark.django_db(transaction=True)
def test_the_pipeline_check_follows_beat_and_the_worker(redis_client, settings, tmp_path):
    """Thresholds shortened (settings here, HEARTBEAT_SECONDS in the processes): a
    heartbeat older than 3 s fails its check."""
    settings.HEALTH_HEARTBEAT_AGE_SECONDS = 3.0
    settings.HEALTH_AGGREGATE_AGE_SECONDS = 60.0
    settings.TRACKING_SPOOL_DIR = tmp_path / "spool"
    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        TRACKING_SPOOL_DIR=str(tmp_path / "spool"),
        HEARTBEAT_SECONDS="0.5",
    )
    queues = consumed_queues()
    workers = [f"worker:{queue}" for queue in queues]
    worker_args = ["worker", "-Q", ",".join(queues), "--concurrency=1", "--loglevel=INFO"]
    worker_args += ["-n", f"health-{os.getpid()}@%h"]
    beat_args = ["beat", "--loglevel=INFO", "--schedule", str(tmp_path / "beat-schedule")]
    client = Client()
    # Nothing ran yet: no heartbeat, no aggregation run.
    assert failing(client) == sorted(["aggregation", "beat", *workers])

    with celery(worker_args, env, tmp_path / "worker.log") as worker:
        with celery(beat_args, env, tmp_path / "beat.log") as beat:
            wait_for(lambda: not failing(client), "the pipeline to be healthy")

            stop(beat)  # beat sends nothing more; its stamp ages past 3 s
            assert wait_for(lambda: failing(client), "beat's check to fail") == ["beat"]
            detail = client.get("/healthz/pipeline").json()["checks"]["beat"]["detail"]
            assert detail.startswith("beat last sent a task") and "over the 3 s threshold" in detail

        with celery(beat_args, env, tmp_path / "beat.log"):
            wait_for(lambda: not failing(client), "beat's return")

            os.kill(worker.pid, signal.SIGSTOP)  # a frozen worker: its heartbeat ages
            try:
                assert wait_for(lambda: failing(client), "the frozen worker's check") == workers
            finally:
                os.kill(worker.pid, signal.SIGCONT)
            wait_for(lambda: not failing(client), "the thawed worker")

            stop(worker)  # a worker that shuts down takes its heartbeat with it at once
            assert failing(client) == workers
            with celery(worker_args, env, tmp_path / "worker.log"):
                wait_for(lambda: not failing(client), "the worker's return")
    log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_without_redis_the_pipeline_check_says_tasks_run_inline(settings, db, tmp_path):
    """The embedded default: no worker or beat to wait for; backlogs still judged."""
    settings.REDIS_URL = ""
    settings.TRACKING_SPOOL_DIR = tmp_path / "spool"
    response = Client().get("/healthz/pipeline")
    assert response.status_code == 200
    checks = response.json()["checks"]
    for name in ("aggregation", "beat", "workers"):
        assert checks[name]["detail"].startswith("tasks run inline"), name
    assert checks["change_backlog"] == {
        "ok": True,
        "detail": "0 change-log row(s) wait for the aggregator",
        "value": 0,
        "threshold": settings.HEALTH_CHANGE_BACKLOG,
    }


def test_probes_and_scrapers_need_no_public_host_name_and_no_tls(settings, db):
    """Compose probes 127.0.0.1, Prometheus scrapes web:8000, over plain HTTP: the ops
    endpoints answer them although neither host is allowed and HTTPS is enforced."""
    settings.ALLOWED_HOSTS = ["clickmap.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    settings.METRICS_TOKEN = "t" * 32
    client = Client()
    assert client.get("/login/", HTTP_HOST="web:8000").status_code == 400  # the rest: refused
    assert client.get("/healthz", HTTP_HOST="127.0.0.1:8000").status_code == 200
    assert client.get("/healthz/pipeline", HTTP_HOST="web:8000").status_code in (200, 503)
    scrape = client.get("/metrics", HTTP_HOST="web:8000", HTTP_AUTHORIZATION="Bearer " + "t" * 32)
    assert scrape.status_code == 200 and b"clickmap_pipeline_up 1.0" in scrape.content
