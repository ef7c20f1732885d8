"""The embedded default on a fresh clone: with DATABASE_URL unset and no PostgreSQL service
reachable, the app starts its own PostgreSQL under var/ (a Unix socket, no TCP port) when
a command first needs the database, migrates, seeds the demo and serves it under
runserver's autoreloader, and comes back after a crash of both the web server and
PostgreSQL with its data."""

import http.cookiejar
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import psycopg
import pytest
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def fresh_clone(target: Path) -> Path:
    """The repository's tracked files (what a clone has: no var/, no .venv) at `target`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def environment() -> dict:
    """This machine's environment with no database configured and libpq pointed nowhere:
    anything but the embedded server fails."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "TEST_", "PG", "REDIS_URL", "DJANGO_"))
    }
    env.update(
        DEBUG="1",
        PGHOST="/nonexistent",
        PGPORT="1",
        PGDATABASE="nowhere",
        DEMO_PASSWORD="fresh-clone-demo",
    )
    return env


def manage(clone: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=clone,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def postmasters(data_dir: Path) -> list[psutil.Process]:
    """The PostgreSQL server processes (postmasters) whose data directory is `data_dir`."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "ppid"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(process)
    return [p for p in found if p.info["ppid"] not in {q.pid for q in found}]


class Site:
    """runserver (with its autoreloader) in a process group of its own."""

    def __init__(self, clone: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}"],
            cwd=clone,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str, data: dict | None = None, timeout: float = 60):
        """The page at `path` (a form POST with `data`), waiting for the server to listen."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                body = urllib.parse.urlencode(data).encode() if data else None
                request = urllib.request.Request(self.url + path, data=body)  # noqa: S310
                if data:
                    request.add_header("Referer", self.url + path)
                with self.opener.open(request, timeout=10) as response:
                    return response.status, response.read().decode()
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None:
                    raise AssertionError(self.process.stderr.read().decode()) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def clone():
    # Not under pytest's tmp_path: each pytest session makes its parent private again
    # (mode 700), and run as root the server is another user, who must reach var/.
    where = Path(tempfile.mkdtemp(prefix="clickmap-clone-"))
    clone = fresh_clone(where / "clickmap")
    yield clone
    subprocess.run(
        [sys.executable, "manage.py", "embedded_db", "stop"],
        cwd=clone,
        env=environment(),
        capture_output=True,
        timeout=60,
    )
    shutil.rmtree(where)


def test_a_fresh_clone_serves_the_demo_on_its_own_postgresql_and_survives_a_crash(clone):
    data_dir = clone / "var" / "postgres"
    email = clone / "var" / "email.html"
    email.parent.mkdir(exist_ok=True)
    email.write_text('<p><a href="https://shop.example/">Shop</a></p>')
    assert "shop.example" in manage(clone, "inventory", str(email), "--json")
    assert not data_dir.exists()  # a command that needs no database starts no server
    manage(clone, "migrate", "--noinput")
    manage(clone, "seed_demo", "--customers", "120", "--no-previews")

    site = Site(clone)
    try:
        status, page = site.get("/login/")
        assert status == 200 and "csrfmiddlewaretoken" in page
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        status, page = site.get(
            "/login/",
            {"username": "demo", "password": "fresh-clone-demo", "csrfmiddlewaretoken": token},
        )
        assert status == 200 and "Black Friday" in page  # the demo, logged in
        # One server for the reloader's process and the one it serves from.
        servers = postmasters(data_dir)
        assert len(servers) == 1
        # A Unix socket in var/postgres and no TCP port.
        assert not servers[0].net_connections(kind="inet")
        socket_dir = (data_dir / "postmaster.pid").read_text().splitlines()[4]
        assert (Path(socket_dir) / ".s.PGSQL.5432").is_socket(), sorted(os.listdir(socket_dir))
        with psycopg.connect(host=socket_dir, user="postgres", dbname="clickmap") as db:
            assert db.execute("SHOW listen_addresses").fetchone() == ("",)
            assert db.execute("SHOW server_version_num").fetchone()[0].startswith("18")

        # A crash: the web server and PostgreSQL killed outright, and PostgreSQL's process
        # id taken by another process since (as after a reboot).
        site.kill()
        servers[0].kill()
        servers[0].wait(30)
        stranger = subprocess.Popen(["sleep", "600"])
        pid_file = data_dir / "postmaster.pid"
        lines = pid_file.read_text().splitlines()
        pid_file.write_text("\n".join([str(stranger.pid), *lines[1:]]) + "\n")
        try:
            site = Site(clone)
            status, page = site.get("/login/")
            assert status == 200
            assert len(postmasters(data_dir)) == 1
        finally:
            stranger.kill()
        # The data survived: every migration is still applied, the demo is still there.
        manage(clone, "migrate", "--check")
        assert "Black Friday" in manage(
            clone,
            "shell",
            "-c",
            "from django_scopes import scopes_disabled\n"
            "from campaigns.models import Campaign\n"
            "with scopes_disabled(): print(list(Campaign.objects.values_list('name', flat=True)))",
        )
    finally:
        site.kill()


def test_docker_compose_runs_the_embedded_servers_major_version():
    from clickmap import embedded_db

    version = subprocess.run(
        [str(embedded_db.BIN_DIR / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    major = re.search(r"PostgreSQL\) (\d+)\.", version)[1]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["postgres"]["image"] == f"postgres:{major}"
