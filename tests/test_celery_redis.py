"""With REDIS_URL set, a task round-trips through the real Redis broker and backend, and
one beat tick of the pipeline drains the change log."""

import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django_scopes import scopes_disabled

import clickmap.tasks  # noqa: F401 (registers the tasks with the worker)
from clickmap.celery import app
from clickmap.models import ShardMark
from tests.test_rollups import check_exact
from tests.test_rollups_workers import backlog
from tracking.models import EventChange


@app.task(name="tests.add")
def add(x, y):
    return x + y


@pytest.fixture
def redis_worker(redis_client):
    """A worker on the queues of docker-compose's `worker` (beat's tasks and the rest)."""
    app.loader.import_module("celery.contrib.testing.tasks")  # the worker's ping task
    queues = [settings.CELERY_TASK_DEFAULT_QUEUE, "pipeline"]
    with start_worker(
        app, pool="solo", perform_ping_check=True, shutdown_timeout=10, queues=queues
    ) as worker:
        yield worker


def test_task_round_trips_through_real_redis(redis_worker, redis_client):
    assert app.conf.task_always_eager is False
    assert app.conf.broker_url.startswith("redis://")
    result = add.delay(20, 22)
    assert result.get(timeout=20) == 42
    # The result really lives in Redis, under Celery's key for this task id.
    assert redis_client.exists(f"celery-task-meta-{result.id}") == 1


@pytest.mark.django_db(transaction=True)
def test_one_beat_tick_drains_the_whole_change_log_through_its_continuations(
    redis_worker, world, settings, spool_dir
):
    # Every run stops after one round of small batches: the rest of the backlog is left
    # to the continuations the runs queue, and none of them may be lost.
    settings.PIPELINE_SLICE_SECONDS = 0
    settings.PIPELINE_BATCH_SIZE = 40
    with scopes_disabled():
        backlog(world, 300)
        assert EventChange.objects.count() > 4 * 40 * settings.AGGREGATE_SHARDS
    entry = settings.CELERY_BEAT_SCHEDULE["pipeline"]
    assert entry["task"] == "clickmap.pipeline" and entry["schedule"] <= 1.0
    assert settings.CELERY_TASK_ROUTES[entry["task"]]["queue"] == "pipeline"
    app.send_task(entry["task"], **entry["options"])  # one tick, no more
    deadline = time.monotonic() + 60
    with scopes_disabled():
        while EventChange.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not EventChange.objects.exists()
        check_exact(world)
        # The last run found the log empty: every shard is marked up to date.
        assert ShardMark.objects.filter(of=settings.AGGREGATE_SHARDS).count() == (
            settings.AGGREGATE_SHARDS
        )
