"""With REDIS_URL set, a task round-trips through the real Redis broker and backend."""

import pytest
from celery.contrib.testing.worker import start_worker

from clickmap.celery import app


@app.task(name="tests.add")
def add(x, y):
    return x + y


@pytest.fixture
def redis_worker(redis_client):
    app.loader.import_module("celery.contrib.testing.tasks")  # the worker's ping task
    with start_worker(app, pool="solo", perform_ping_check=True, shutdown_timeout=10) as worker:
        yield worker


def test_task_round_trips_through_real_redis(redis_worker, redis_client):
    assert app.conf.task_always_eager is False
    assert app.conf.broker_url.startswith("redis://")
    result = add.delay(20, 22)
    assert result.get(timeout=20) == 42
    # The result really lives in Redis, under Celery's key for this task id.
    assert redis_client.exists(f"celery-task-meta-{result.id}") == 1
