"""An exact count of repeated failures, logged without flooding the log.

A full disk or a stopped database fails every click until someone acts; one log line
per click would bury the cause under thousands of copies. So the first failure of a
run is logged at once; while failures go on, at most one line per LOG_EVERY_SECONDS
reports those since (a timer writes it even when no failure follows); one line says
when they stop, and one at exit reports any not yet reported. Every line carries the
exact count so far, so the last line of a process is its total.
"""

import atexit
import logging
import os
import threading
import time

LOG_EVERY_SECONDS = 10.0


class FailureLog:
    """Counts failures of one operation in this process and logs them at ERROR.

    `failing` and `recovered` are format strings; they may use {error} (the latest),
    {count} (the failures since the process started, exact), {pid} and the keyword
    `fields`. `recovered_level` is the level of the line saying the failures stopped.
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
        self._lock = threading.Lock()
        self._at_exit = False
        self.reset()

    def failure(self, error: BaseException) -> None:
        """One more failure: logged now if it starts a run or the last line is old
        enough, else by a timer once it is."""
        with self._lock:
            self.count += 1
            self._error = error
            now = time.monotonic()
            if not self.failing or now - self._logged >= self.every:
                self._report_locked(self.failing_text)
            elif self._timer is None:
                self._timer = threading.Timer(self.every - (now - self._logged), self._due)
                self._timer.daemon = True
                self._timer.start()
            self.failing = True
            if not self._at_exit:
                self._at_exit = True
                atexit.register(self.report_pending)

    def success(self) -> None:
        """The operation worked: ends a run of failures (logged once)."""
        if not self.failing:  # the common case, without taking the lock
            return
        with self._lock:
            if self.failing:
                self.failing = False
                self._report_locked(self.recovered_text, self.recovered_level)

    def report_pending(self) -> None:
        """Log the failures not reported yet, if any (at exit, and by the timer)."""
        with self._lock:
            if self.count > self._reported:
                self._report_locked(self.failing_text)

    def reset(self) -> None:
        """Start from zero (a forked child: its parent's failures are not its own, and
        its parent's timer thread is not running here)."""
        with self._lock:
            self.count = self._reported = 0
            self.failing, self._logged, self._error, self._timer = False, 0.0, None, None

    def _due(self) -> None:
        with self._lock:
            if self._timer is threading.current_thread():
                self._timer = None
        self.report_pending()

    def _report_locked(self, template: str, level: int = logging.ERROR) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._logged, self._reported = time.monotonic(), self.count
        text = template.format(error=self._error, count=self.count, pid=os.getpid(), **self.fields)
        self.logger.log(level, text)
