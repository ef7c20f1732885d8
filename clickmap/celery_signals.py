"""Celery's processes, watched: their logging, beat's and the workers' heartbeats, and
the pipeline runs' lines and counters. Connected by clickmap/celery.py, so every
worker and beat has them; nothing here runs in the web.

- Logging: Celery would install its own handler and format; instead settings.LOGGING
  (clickmap/log_format.py, one line per record) is applied, at the command's
  --loglevel.
- Beat stamps its heartbeat whenever it sends a task (clickmap/heartbeats.py).
- Each worker's main process stamps the queues it consumes every HEARTBEAT_SECONDS from
  a thread of its own (a pool busy with long tasks still beats), and removes its stamps
  when it shuts down.
- An ingestion or aggregation run that ends is timed and reported
  (clickmap/pipeline_log.py).
"""

import logging
import threading
import time

from celery import signals

log = logging.getLogger("clickmap.pipeline")

_level = {"name": None}
_started: dict[str, float] = {}
_heart: dict = {}


@signals.setup_logging.connect
def _configure_logging(loglevel=None, **kwargs):
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    _level["name"] = loglevel
    _apply_level()


def _apply_level():
    # Django's setup, which may come later, applies settings.LOGGING again: re-applied
    # once the process is up.
    if _level["name"]:
        logging.getLogger().setLevel(_level["name"])


@signals.beat_init.connect
def _beat_started(sender=None, **kwargs):
    _apply_level()
    signals.before_task_publish.connect(_beat_sent_a_task, weak=False)
    _beat_sent_a_task()


def _beat_sent_a_task(**kwargs):
    from clickmap import heartbeats

    if heartbeats.enabled():
        try:
            heartbeats.beat()
        except Exception as error:  # Redis away: the stamp ages, the health check says so
            log.debug("beat heartbeat not written: %r", error)


@signals.worker_ready.connect
def _worker_ready(sender=None, **kwargs):
    _apply_level()
    from django.conf import settings

    from clickmap import heartbeats

    if not heartbeats.enabled():
        return
    node = sender.hostname
    queues = sorted(q.name for q in sender.task_consumer.queues)
    stop = threading.Event()

    def beat():
        while not stop.is_set():
            try:
                heartbeats.worker_beat(node, queues)
            except Exception as error:  # Redis away: the stamps age
                log.debug("worker heartbeat not written: %r", error)
            stop.wait(settings.HEARTBEAT_SECONDS)

    thread = threading.Thread(target=beat, name="clickmap-heartbeat", daemon=True)
    _heart.update(stop=stop, thread=thread, node=node, queues=queues)
    thread.start()


@signals.worker_shutting_down.connect
def _worker_stopping(**kwargs):
    if not _heart:
        return
    from clickmap import heartbeats

    _heart["stop"].set()
    _heart["thread"].join(5)
    try:
        heartbeats.worker_gone(_heart["node"], _heart["queues"])
    except Exception as error:
        log.debug("worker heartbeat not removed: %r", error)


@signals.task_prerun.connect
def _task_started(task_id=None, task=None, **kwargs):
    from clickmap.pipeline_log import TASKS

    if task is not None and task.name in TASKS:
        _started[task_id] = time.monotonic()


@signals.task_postrun.connect
def _task_ended(task_id=None, task=None, retval=None, state=None, **kwargs):
    started = _started.pop(task_id, None)
    if started is None or state != "SUCCESS" or not isinstance(retval, dict):
        return  # Celery logs a failure itself
    from clickmap.pipeline_log import after_run

    try:
        after_run(task.name, retval, time.monotonic() - started)
    except Exception:  # watching must never fail the pipeline it watches
        log.exception("the pipeline run could not be reported")
