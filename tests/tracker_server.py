"""A real gunicorn serving clickmap.wsgi (tracking's hot path in front of Django), as the
tracker service runs it, for tests of the production path; and real mounts for its
spool (tmpfs, read-only) so the disk can really fail."""

import contextlib
import http.client
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import database_url, free_port

ROOT = Path(__file__).resolve().parents[1]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def database_url_of_this_run() -> str:
    """The URL of the database this test run uses (pytest-django's test database)."""
    return database_url()


class Tracker:
    """gunicorn on a free port with `env` on top of this process's environment and
    `args` on its command line; its output (gunicorn's and the app's log) goes to
    `log_path`."""

    def __init__(
        self, tmp_path: Path, spool_dir: Path, env: dict, workers: int = 2, args: tuple = ()
    ):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"gunicorn-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                GUNICORN,
                "--workers",
                str(workers),
                "--worker-class",
                "sync",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--error-logfile",
                "-",
                *args,
                "clickmap.wsgi:application",
            ],
            cwd=ROOT,
            env=os.environ
            | {
                "DATABASE_URL": database_url_of_this_run(),
                "TRACKING_SPOOL_DIR": str(spool_dir),
                "TRACKING_INGEST_INLINE": "0",
                "SERVICE_ROLE": "tracker",  # /healthz checks the spool, as the tracker's
                "LOG_LEVEL": "INFO",
                "PYTHONWARNINGS": "ignore:No directory at",  # WhiteNoise, STATIC_ROOT
            }
            | env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not start:\n{self.log()}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            return self.request("GET", "/c/not-a-token")[0] == 404  # records nothing
        except OSError:
            return False

    def request(self, method: str, path: str, headers=None) -> tuple[int, dict, bytes]:
        """(status, headers, body) of one request on a new connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop gracefully: the workers close their spool files, so all are complete."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def spool_losses(log_text: str) -> int:
    """Events the tracker's processes reported lost by the spool, from their ERROR lines:
    each line carries its process's running count, so the last one per process."""
    last = Counter()
    for pid, count in re.findall(
        r"ERROR.*tracking spool .*?Events lost by process (\d+) since it started: (\d+)",
        log_text,
    ):
        last[pid] = max(last[pid], int(count))
    return sum(last.values())


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A fresh tmpfs of `size` mounted at `path`, unmounted however the test ends."""
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


@contextlib.contextmanager
def bind_mount(source: Path, target: Path):
    """`source` bind-mounted at `target`, unmounted however the test ends."""
    require_root()
    for path in (source, target):
        path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "--lazy", str(target)], check=True)


def remount(path: Path, mode: str) -> None:
    """Remount the mount at `path` "ro" or "rw" (a bind mount stays a bind mount)."""
    subprocess.run(["mount", "-o", f"remount,bind,{mode}", str(path)], check=True)
