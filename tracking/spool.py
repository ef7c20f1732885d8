"""A local append-only spool for tracking events: the hot path's only write.

Each process appends JSON lines to its own file with one write(2) per event, so an
event is on disk (in the kernel's page cache) before the redirect is answered and
survives the process, a Celery worker or Redis restarting. The database can be down
or slow: nothing on the hot path waits for it.

Files: a writer creates ``<name>.tmp``, takes an exclusive flock on it and only then
renames it to ``<name>.jsonl``, so every visible spool file is locked while its
writer may still append. A writer closes its file (dropping the lock) after
ROTATE_SECONDS, from a timer thread, so an idle process does not hold events back.
The ingester takes only files it can lock, which are therefore complete.

Failures (a full disk, a read-only or vanished directory): a write that the kernel
takes only in part is completed; one that fails has its written part cut off again,
so every file holds whole lines only and the next event starts on a line boundary
(when even the cut fails, the file is given up and the next event goes to a new
one). The event is then lost, never half-written: `append` returns None, and the
process counts it exactly and logs it at ERROR (tracking.failures: at most one line
per ten seconds while writes keep failing, one when they succeed again, one at exit).
The reader treats any line that is not a whole event, a last line without its
newline included, as lost: it is skipped up to the next newline, kept aside and
reported.
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tracking.failures import FailureLog

log = logging.getLogger(__name__)

ROTATE_SECONDS = 1.0
# What the health probe writes: more than any event line (a 4 KiB URL, a 1 KiB user agent).
PROBE_BYTES = 8192
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Spool:
    """Appends event records to the spool directory (one instance per process).

    `failures.count` is the number of events this process could not write since it
    started (exact; the log lines that report it are rate-limited).
    """

    def __init__(self, directory: Path, rotate_seconds: float = ROTATE_SECONDS, fsync=False):
        self.directory = Path(directory)
        self.rotate_seconds = rotate_seconds
        self.fsync = fsync
        self.failures = FailureLog(
            log,
            "tracking spool {directory}: cannot write an event ({error}); it is lost. "
            "Events lost by process {pid} since it started: {count}",
            "tracking spool {directory}: writes succeed again. "
            "Events lost by process {pid} since it started: {count}",
            directory=self.directory,
        )
        self._lock = threading.Lock()
        self._fd = None
        self._opened = 0.0
        self._pid = None
        self._seq = 0
        self._timer = None

    def append(self, record: dict) -> str | None:
        """Write one event as one whole line; returns its id, or None when the disk
        refused it (then nothing of it is in the spool, and the failure is counted and
        logged). Never raises OSError."""
        event_id = os.urandom(16).hex()  # a random 128-bit id, as uuid4 but cheaper
        record["id"] = event_id
        line = (_encode(record) + "\n").encode()
        with self._lock:
            try:
                self._write_line(self._current_fd(), line)
            except OSError as error:
                self.failures.failure(error)
                return None
        self.failures.success()
        return event_id

    def close(self) -> None:
        """Close the current file so the ingester can take it."""
        with self._lock:
            self._close_locked()

    def _write_line(self, fd: int, line: bytes) -> None:
        """All of `line`, or none of it: a short write is completed; on an error the
        part already written is cut off (or, if that fails too, the file abandoned)."""
        written = 0
        try:
            while written < len(line):
                count = os.write(fd, line[written:] if written else line)
                if count <= 0:  # never for a regular file; refuse to spin on it
                    raise OSError(errno.EIO, "write(2) wrote nothing")
                written += count
            if self.fsync:
                os.fsync(fd)
        except OSError:
            if written:
                self._cut(fd, written)
            raise

    def _cut(self, fd: int, written: int) -> None:
        # This process alone appends to its file, so the line's bytes are the last ones.
        try:
            os.ftruncate(fd, os.fstat(fd).st_size - written)
        except OSError:
            # The file may end mid-line: leave it to the ingester (which reports the
            # fragment) and start the next event in a new file, on a line boundary.
            self._close_locked()

    def _current_fd(self) -> int:
        pid = os.getpid()
        if self._pid != pid:  # forked (gunicorn): the parent's file and lock are not ours
            if self._fd is not None:
                os.close(self._fd)  # our copy only; the parent keeps its own
            self._fd, self._pid, self._timer = None, pid, None
            self.failures.reset()
        if self._fd is not None and time.monotonic() - self._opened > self.rotate_seconds:
            self._close_locked()
        if self._fd is None:
            self._open_locked()
        return self._fd

    def _open_locked(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"{int(time.time() * 1000):015d}-{socket.gethostname()}-{os.getpid()}-{self._seq}"
        temp = self.directory / f"{name}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(temp, self.directory / f"{name}.jsonl")
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise
        self._fd, self._opened = fd, time.monotonic()
        if self._timer is None:
            self._timer = threading.Thread(target=self._rotate_idle, daemon=True)
            self._timer.start()

    def _close_locked(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the flock

    def _rotate_idle(self) -> None:
        while True:
            time.sleep(self.rotate_seconds / 2)
            with self._lock:
                if self._pid != os.getpid():
                    return
                if self._fd is not None and time.monotonic() - self._opened > self.rotate_seconds:
                    self._close_locked()


def write_problem(directory: Path) -> str | None:
    """Why an event could not be spooled in `directory` now, or None when it could.

    Creates the directory if needed, writes PROBE_BYTES (more than any event line) to
    a probe file beside the spool files and removes it: a read-only, full or missing
    disk answers with its error. Asks the file system, not this process's history, so
    every worker answers alike; for the health check, not the hot path.
    """
    directory = Path(directory)
    probe = directory / f".probe-{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            data = memoryview(b"\n" * PROBE_BYTES)
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
    except OSError as error:
        return error.strerror or str(error)  # no path: the health check is public
    finally:
        with contextlib.suppress(OSError):  # read-only: there is no probe file to remove
            probe.unlink(missing_ok=True)
    return None


def claim_files(directory: Path):
    """Yield (path, fd) for each complete spool file, locked exclusively for the caller.
    The caller reads it, stores its events, then calls `release(path, fd, …)`."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # another ingester took it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # its writer may still append
        if not path.exists():  # another ingester finished it between glob and lock
            os.close(fd)
            continue
        yield path, fd


def file_times(directory: Path, *, open_files: bool = True) -> list[float]:
    """When each spool file in `directory` was opened (Unix time, from its name): the
    complete files, and with `open_files` those a writer still holds. Every event of a
    file was spooled at or after its time."""
    suffixes = (".jsonl", ".tmp") if open_files else (".jsonl",)
    times = []
    for path in Path(directory).glob("*[0-9]-*"):
        if path.suffix in suffixes:
            with contextlib.suppress(ValueError):  # not a spool file
                times.append(int(path.name.split("-", 1)[0]) / 1000)
    return times


def oldest_file_time(directory: Path) -> float | None:
    """When the oldest spool file in `directory`, open or complete, was opened, or None
    when there is none."""
    return min(file_times(directory), default=None)


@dataclass
class SpoolFile:
    """What one spool file held: its whole events, and every byte that was not one."""

    records: list[dict] = field(default_factory=list)
    bad: list[bytes] = field(default_factory=list)  # lines skipped, without their newline
    bad_bytes: int = 0  # bytes skipped, newlines included
    incomplete_tail: bool = False  # the last line had no newline: a write cut short

    def loss(self, name: str) -> str | None:
        """One sentence saying what was skipped in file `name`, or None."""
        if not self.bad:
            return None
        tail = "; the last one had no newline (a write cut short)" if self.incomplete_tail else ""
        return f"{name}: skipped {len(self.bad)} line(s), {self.bad_bytes} bytes{tail}"


def read_records(fd: int) -> SpoolFile:
    """Parse a claimed file line by line. A line that is not a whole event record (bad
    JSON, not an object, no id, or a last line without its newline, which no writer
    leaves) is skipped: reading resumes after the next newline."""
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    data = b"".join(chunks)
    result = SpoolFile()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, as whole files do
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError("not an event record")
            result.records.append(record)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            result.bad.append(line)
            result.bad_bytes += len(line) + 1
    if tail:
        result.bad.append(tail)
        result.bad_bytes += len(tail)
        result.incomplete_tail = True
    return result


def release(path: Path, fd: int, bad: list[bytes]) -> None:
    """Done with a claimed file: keep skipped lines aside for a human, then delete it."""
    if bad:
        quarantine = path.parent / "bad"
        quarantine.mkdir(exist_ok=True)
        (quarantine / path.name).write_bytes(b"\n".join(bad) + b"\n")
    path.unlink(missing_ok=True)
    os.close(fd)
