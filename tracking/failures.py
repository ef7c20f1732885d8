"""An exact count of repeated failures, logged without flooding the log.

A full disk or a stopped database fails every click until someone acts; one log line
per click would bury the cause under thousands of copies. So the first failure of a
run is logged at once, then at most one line per LOG_EVERY_SECONDS while they go on,
and one when they stop; every line carries the exact count so far.
"""

import logging
import os
import threading
import time

LOG_EVERY_SECONDS = 10.0


class FailureLog:
    """Counts failures of one operation in this process and logs them at ERROR.

    `failing` and `recovered` are format strings; they may use {error}, {count} (the
    failures since the process started, exact), {pid} and the keyword `fields`.
    `recovered_level` is the level of the line saying the failures stopped.
    """

    def __init__(
        self,
        logger: logging.Logger,
        failing: str,
        recovered: str,
        recovered_level: int = logging.ERROR,
        every: float = LOG_EVERY_SECONDS,
        **fields,
    ):
        self.logger, self.failing_text, self.recovered_text = logger, failing, recovered
        self.recovered_level, self.every, self.fields = recovered_level, every, fields
        self.count = 0
        self.failing = False
        self._logged = 0.0
        self._lock = threading.Lock()

    def failure(self, error: BaseException) -> None:
        """One more failure; logged if it starts a run or the last line is old enough."""
        with self._lock:
            self.count += 1
            now = time.monotonic()
            due = not self.failing or now - self._logged >= self.every
            self.failing = True
            if due:
                self._logged = now
                self.logger.error(self._text(self.failing_text, error))

    def success(self) -> None:
        """The operation worked: ends a run of failures (logged once)."""
        if not self.failing:  # the common case, without taking the lock
            return
        with self._lock:
            if self.failing:
                self.failing = False
                self.logger.log(self.recovered_level, self._text(self.recovered_text, None))

    def _text(self, template: str, error) -> str:
        return template.format(error=error, count=self.count, pid=os.getpid(), **self.fields)

    def reset(self) -> None:
        """Start from zero (a forked child: its parent's failures are not its own)."""
        with self._lock:
            self.count, self.failing, self._logged = 0, False, 0.0
