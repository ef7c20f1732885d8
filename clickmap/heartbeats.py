"""What the pipeline's processes say about themselves, in Redis: when beat last sent a
task, when each queue's workers last beat, and the last aggregation run.

- Beat: every task it publishes stamps `clickmap:heartbeat:beat` (it publishes one
  every few seconds), so the stamp's age is how long beat has been silent.
- Workers: a thread of each worker's main process stamps, every HEARTBEAT_SECONDS, a
  hash per queue it consumes (`clickmap:heartbeat:queue:<queue>`, one field per worker),
  whatever its pool is busy with; a worker that stops removes its fields, one that is
  killed leaves them to age. A queue's age is its freshest worker's.
- The last aggregation run: when it ended, how long it took and what it applied.

The web's /healthz/pipeline and /metrics read them (clickmap/pipeline_health.py).
Without REDIS_URL tasks run inline: there is no worker or beat, and nothing is kept.
"""

import json
import time
from functools import lru_cache

import redis
from django.conf import settings

BEAT_KEY = "clickmap:heartbeat:beat"
QUEUE_KEY = "clickmap:heartbeat:queue:{}"
LAST_AGGREGATE_KEY = "clickmap:pipeline:last-aggregate"
WARNED_KEY = "clickmap:pipeline:warned:{}"
# A worker field older than this is someone else's past: dropped when read.
FORGET_AFTER_SECONDS = 7 * 86400


def enabled() -> bool:
    return bool(settings.REDIS_URL)


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # redis-py's pool notices a fork and opens new connections in the child.
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL)


def beat(now: float | None = None) -> None:
    client().set(BEAT_KEY, repr(now or time.time()))


def worker_beat(node: str, queues, now: float | None = None) -> None:
    stamp = repr(now or time.time())
    with client().pipeline() as pipe:
        for queue in queues:
            pipe.hset(QUEUE_KEY.format(queue), node, stamp)
        pipe.execute()


def worker_gone(node: str, queues) -> None:
    with client().pipeline() as pipe:
        for queue in queues:
            pipe.hdel(QUEUE_KEY.format(queue), node)
        pipe.execute()


def beat_age(now: float) -> float | None:
    stamp = client().get(BEAT_KEY)
    return None if stamp is None else max(0.0, now - float(stamp))


def queue_age(queue: str, now: float) -> float | None:
    """Seconds since the freshest worker of `queue` beat; None when none ever did."""
    key = QUEUE_KEY.format(queue)
    stamps = {node: float(stamp) for node, stamp in client().hgetall(key).items()}
    stale = [node for node, stamp in stamps.items() if now - stamp > FORGET_AFTER_SECONDS]
    if stale:
        client().hdel(key, *stale)
    if not stamps:
        return None
    return max(0.0, now - max(stamps.values()))


def record_aggregate_run(ended: float, seconds: float, changes: int) -> None:
    client().set(
        LAST_AGGREGATE_KEY, json.dumps({"ended": ended, "seconds": seconds, "changes": changes})
    )


def last_aggregate_run() -> dict | None:
    value = client().get(LAST_AGGREGATE_KEY)
    return None if value is None else json.loads(value)


def warn_once(name: str) -> bool:
    """True for the first caller (of any process) since `name` last recovered."""
    return bool(client().set(WARNED_KEY.format(name), "1", nx=True))


def recovered(name: str) -> bool:
    """True for the first caller (of any process) once `name` is back under its threshold
    after a warning."""
    return bool(client().delete(WARNED_KEY.format(name)))
