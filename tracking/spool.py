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
"""

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

ROTATE_SECONDS = 1.0
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Spool:
    """Appends event records to the spool directory (one instance per process)."""

    def __init__(self, directory: Path, rotate_seconds: float = ROTATE_SECONDS, fsync=False):
        self.directory = Path(directory)
        self.rotate_seconds = rotate_seconds
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd = None
        self._opened = 0.0
        self._pid = None
        self._seq = 0
        self._timer = None

    def append(self, record: dict) -> str:
        """Write one event; returns its id. Raises OSError if the disk refuses it."""
        event_id = os.urandom(16).hex()  # a random 128-bit id, as uuid4 but cheaper
        record["id"] = event_id
        line = (_encode(record) + "\n").encode()
        with self._lock:
            fd = self._current_fd()
            os.write(fd, line)
            if self.fsync:
                os.fsync(fd)
        return event_id

    def close(self) -> None:
        """Close the current file so the ingester can take it."""
        with self._lock:
            self._close_locked()

    def _current_fd(self) -> int:
        pid = os.getpid()
        if self._pid != pid:  # forked (gunicorn): the parent's file and lock are not ours
            if self._fd is not None:
                os.close(self._fd)  # our copy only; the parent keeps its own
            self._fd, self._pid, self._timer = None, pid, None
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
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(temp, self.directory / f"{name}.jsonl")
        self._fd, self._opened = fd, time.monotonic()
        if self._timer is None:
            self._timer = threading.Thread(target=self._rotate_idle, daemon=True)
            self._timer.start()

    def _close_locked(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def _rotate_idle(self) -> None:
        while True:
            time.sleep(self.rotate_seconds / 2)
            with self._lock:
                if self._pid != os.getpid():
                    return
                if self._fd is not None and time.monotonic() - self._opened > self.rotate_seconds:
                    self._close_locked()


def claim_files(directory: Path):
    """Yield (path, fd) for each complete spool file, locked exclusively for the caller.
    The caller reads it, stores its events, then calls `release(path, fd)`."""
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


def read_records(fd: int) -> tuple[list[dict], list[bytes]]:
    """Parsed records of a claimed file, and the lines that did not parse."""
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    records, bad = [], []
    for line in b"".join(chunks).splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError("not an event record")
            records.append(record)
        except ValueError:
            bad.append(line)
    return records, bad


def release(path: Path, fd: int, bad: list[bytes]) -> None:
    """Done with a claimed file: keep unparsable lines aside for a human, then delete it."""
    if bad:
        quarantine = path.parent / "bad"
        quarantine.mkdir(exist_ok=True)
        (quarantine / path.name).write_bytes(b"\n".join(bad) + b"\n")
    path.unlink(missing_ok=True)
    os.close(fd)
