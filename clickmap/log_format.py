"""One line per log record, with its numbers as fields, for every process (gunicorn's
workers, Celery's workers and beat: clickmap/celery_signals.py hands Celery's logging to
settings.LOGGING).

    2026-12-05T14:02:03.120Z INFO clickmap.pipeline: aggregation run changes=120 backlog=0

Text (the default): time, level, logger, message, then `extra={"fields": {...}}` as
key=value (values with spaces or quotes JSON-quoted). A traceback stays on the line,
its line breaks written as \\n, so a log shipper never splits one record into many.
LOG_FORMAT=json writes one JSON object per line instead, the fields as its keys.

`RoutineAtDebug` (a handler filter) moves what runs every few seconds to DEBUG: beat's
"Sending due task" ticks and the received/succeeded lines of the routine pipeline tasks,
whose work the pipeline's own lines report (clickmap/pipeline_log.py). With the level
at INFO they are not written; at DEBUG they are, marked DEBUG.
"""

import json
import logging
from datetime import UTC, datetime

ROUTINE_TASKS = frozenset(
    {
        "tracking.ingest_events",
        "clickmap.aggregate",
        "clickmap.pipeline",
        "campaigns.start_due_sends",
        "tracking.ensure_partitions",
    }
)


def _value(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' "=\n\r\t\\'):
        return json.dumps(text)
    return text


class LineFormatter(logging.Formatter):
    def __init__(self, output: str = "text"):
        super().__init__()
        if output not in ("text", "json"):
            raise ValueError(f"LOG_FORMAT must be text or json, not {output!r}")
        self.json = output == "json"

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC)
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
        message = record.getMessage()
        fields = getattr(record, "fields", None) or {}
        error = self.formatException(record.exc_info) if record.exc_info else ""
        if record.stack_info:
            error = (error + "\n" + self.formatStack(record.stack_info)).strip()
        if self.json:
            line = {"time": stamp, "level": record.levelname, "logger": record.name}
            line["message"] = message
            line.update(fields)
            if error:
                line["exc"] = error
            return json.dumps(line, default=str)
        text = f"{stamp} {record.levelname} {record.name}: {message}"
        text = text.replace("\r", "\\r").replace("\n", "\\n")
        parts = [text] + [f"{key}={_value(value)}" for key, value in fields.items()]
        if error:
            parts.append(f"exc={json.dumps(error)}")
        return " ".join(parts)


def _routine(record: logging.LogRecord) -> bool:
    if record.levelno != logging.INFO:
        return False
    if record.name == "celery.beat":
        return str(record.msg).startswith("Scheduler: Sending due task")
    if record.name in ("celery.worker.strategy", "celery.app.trace"):
        args = record.args
        return isinstance(args, dict) and args.get("name") in ROUTINE_TASKS
    if record.name == "celery.worker.request" and str(record.msg).startswith("Discarding"):
        # A beat tick of the pipeline that expired while every slot ran a pipeline run
        # (the runs loop while there is work, so nothing waits on it): up to one a second.
        args = record.args
        return isinstance(args, tuple) and bool(args) and args[0] in ROUTINE_TASKS
    return False


class RoutineAtDebug(logging.Filter):
    """Writes routine records at DEBUG, and only when their logger is at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _routine(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
