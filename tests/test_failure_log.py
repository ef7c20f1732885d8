"""Repeated failures are counted exactly and logged at ERROR without flooding the log:
the first at once, the rest in one line at most every `every` seconds (a timer writes
it when no failure follows), one line when they stop and one at exit for any not yet
reported. The last line of a process always carries its total."""

import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tracking.failures import FailureLog


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


def failure_log(every: float) -> tuple[FailureLog, Lines]:
    logger = logging.getLogger(f"tests.failure_log.{every}.{time.monotonic_ns()}")
    logger.propagate = False
    lines = Lines()
    logger.addHandler(lines)
    failures = FailureLog(
        logger,
        "failed ({error}): {count} so far in {what}",
        "works again: {count}",
        every=every,
        what="t",
    )
    return failures, lines


def wait_for(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_storm_of_failures_is_one_line_then_one_per_period_with_the_exact_count():
    failures, lines = failure_log(every=0.5)
    for _ in range(1000):
        failures.failure(OSError(28, "No space left on device"))
    assert failures.count == 1000
    assert lines.lines == [("ERROR", "failed ([Errno 28] No space left on device): 1 so far in t")]

    # No failure follows: the timer reports the rest once the period is over.
    wait_for(lambda: len(lines.lines) == 2)
    assert lines.lines[1] == (
        "ERROR",
        "failed ([Errno 28] No space left on device): 1000 so far in t",
    )

    failures.failure(OSError(28, "No space left on device"))
    failures.success()
    failures.success()
    assert lines.lines[2:] == [("ERROR", "works again: 1001")]
    time.sleep(0.6)  # the timer of the 1001st failure was cancelled by the recovery line
    assert len(lines.lines) == 3


def test_a_new_run_of_failures_is_logged_at_once():
    failures, lines = failure_log(every=3600)
    failures.failure(ValueError("a"))
    failures.success()
    failures.failure(ValueError("b"))
    assert [text for _, text in lines.lines] == [
        "failed (a): 1 so far in t",
        "works again: 1",
        "failed (b): 2 so far in t",
    ]


def test_failures_not_reported_yet_are_logged_when_the_process_exits():
    program = textwrap.dedent(
        """
        import logging
        from tracking.failures import FailureLog
        logging.basicConfig(format="%(levelname)s %(message)s")
        failures = FailureLog(logging.getLogger("x"), "lost {count}", "back {count}")
        for _ in range(7):
            failures.failure(OSError("disk"))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stderr.splitlines() == ["ERROR lost 1", "ERROR lost 7"]
