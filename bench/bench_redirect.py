"""The click redirect under gunicorn: speed against baselines, and exactly-once storage.

Speed: the real WSGI app (clickmap.wsgi: tracking's /c/<token> hot path in front of
Django) against two baselines from bench/redirect_baselines.py, a bare Django view that
only answers the same 302 through the project's middleware, and a framework-free WSGI
app answering the same 302. All three run under the same gunicorn settings, each
loaded by 32 keep-alive connections cycling through 3,000 real signed tokens. The
servers run side by side and are measured in alternating short rounds (medians kept),
so a busy shared machine slows all three alike. Load comes from wrk (installed from
Debian when missing and we are root), else from the Python generator below.

Exactness: exactly 100,000 clicks from a Python generator (32 threads, one keep-alive
connection each, every answer checked to be a 302 to the token's destination), then
gunicorn is stopped (its workers must let go of their spool files), the spool ingested
until empty and the run's ClickEvent rows counted per delivery and link: 100,000 in
all, each (delivery, link) exactly as often as it was clicked. Then again with Redis
(the servers' REDIS_URL) shut down and restarted halfway through: the hot path must
not notice.

Prints, in the house format:
  bench: redirect_vs_bare_django value=<req/s> baseline=<req/s> ratio=… goal=>=0.75
  bench: redirect_vs_minimal_wsgi value=<req/s> baseline=<req/s> ratio=… goal=info
  bench: redirect_p99_ms value=<ms> baseline=<p99 ms of bare Django> ratio=… goal=<30
  bench: redirect_exact_100k value=<rows> baseline=100000 ratio=… goal===1.0
  bench: redirect_exact_100k_redis_restart value=<rows> baseline=100000 ratio=… goal===1.0
Exits non-zero when an exactness check fails; a missed speed goal is only printed.

Every request comes from an address of its own (X-Forwarded-For, which the servers are
told to trust): the tracker records one token from one address at most once a second,
and the bench measures recorded clicks, not repeats it skips.

Uses its own PostgreSQL database (clickmap_bench, or BENCH_DB_NAME; recreated each
run), its own Redis on
a free port so other work on the machine's Redis is not disturbed (BENCH_REDIS_PORT=6379
uses and restarts that one instead, leaving it running) and a temporary spool directory.
BENCH_GUNICORN_ARGS and BENCH_SECONDS (one round) override the defaults below.
"""

import contextlib
import http.client
import itertools
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.redirect_baselines import DESTINATION  # noqa: E402

PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
# The same server settings for all three apps, as the tracker service runs: sync workers
# (gthread with 4 threads gave ~25% more req/s here but twice the p99, ~32 ms vs ~16 ms).
GUNICORN_ARGS = os.environ.get("BENCH_GUNICORN_ARGS", "--workers 2 --worker-class sync").split()
APPS = {
    "real": "clickmap.wsgi:application",
    "bare_django": "bench.redirect_baselines:bare_django_app()",
    "minimal_wsgi": "bench.redirect_baselines:minimal_wsgi_app()",
}
CONNECTIONS = 32
ROUND_SECONDS = int(os.environ.get("BENCH_SECONDS", "3"))
ROUNDS = 5
WARMUP_SECONDS = 2
EXACT_CLICKS = 100_000
CUSTOMERS = 1000  # × 3 links: 3,000 distinct tokens
DB_NAME = os.environ.get("BENCH_DB_NAME", "clickmap_bench")
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
GOAL_RATIO = 0.75
GOAL_P99_MS = 30.0


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- services ----------------------------------------------------------------------


class Redis:
    """The Redis the servers are configured with, and its restart."""

    def __init__(self, port: int | None):
        self.shared = port is not None
        self.port = port or free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
        )
        return result.stdout.strip() == "PONG"

    def start(self) -> None:
        args = ["--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        if self.shared:
            subprocess.run(["redis-server", "--daemonize", "yes", *args], check=True)
        else:
            # A foreground child: ours, ended by its pid.
            self.process = subprocess.Popen(
                ["redis-server", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        wait_for(self.ping, 10, "redis")

    def shutdown(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True
        )
        if self.process is not None:
            self.process.wait(10)
            self.process = None
        wait_for(lambda: not self.ping(), 10, "redis to stop")

    def ensure_running(self) -> None:
        if not self.ping():
            self.start()

    def stop_own(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def recreate_database(env: dict) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )


RUNNING: list["Server"] = []  # every live server, so main() can stop them on any failure


class Server:
    """One gunicorn serving `app` with its spool in `spool_dir`, ready once `probe`
    (path, expected status) answers; stop() ends it and its workers."""

    def __init__(self, name: str, app: str, env: dict, spool_dir: Path, probe: tuple[str, int]):
        self.name = name
        self.port = free_port()
        self.log_path = spool_dir.parent / f"gunicorn-{name}.log"
        self.process = subprocess.Popen(
            [
                GUNICORN,
                *GUNICORN_ARGS,
                "--bind",
                f"127.0.0.1:{self.port}",
                "--chdir",
                str(ROOT),
                "--log-level",
                "warning",
                "--error-logfile",
                str(self.log_path),
                app,
            ],
            cwd=ROOT,
            env=env | {"TRACKING_SPOOL_DIR": str(spool_dir)},
            stdin=subprocess.DEVNULL,
        )
        RUNNING.append(self)
        wait_for(lambda: self._answers(*probe), 60, f"gunicorn {name}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answers(self, path: str, expected: int) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"gunicorn {self.name} exited: {self.log_path.read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
        except OSError:
            return False
        if status != expected:
            raise RuntimeError(f"gunicorn {self.name} answered {status} to {path}")
        return True

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            RUNNING.remove(self)
        if self.process.poll() is None:
            self.process.terminate()  # graceful: workers finish their requests first
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- fixtures ----------------------------------------------------------------------


class Click(NamedTuple):
    path: str
    location: str
    delivery_id: int
    link_id: int


def campaign_clicks(name: str) -> list[Click]:
    """A new sent campaign named `name`: one Click per link of each of its deliveries."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from django_scopes import scope, scopes_disabled

    from campaigns.models import Campaign, Customer, Delivery, EmailNode, Variant, Workspace
    from campaigns.sending import plan_deliveries
    from campaigns.services import template_create, workspace_create
    from tracking.links import SignedTracker

    with scopes_disabled():
        workspace = Workspace.objects.filter(name="Bench").first()
    if workspace is None:
        owner = get_user_model().objects.create_user(username="bench", password=None)
        workspace = workspace_create(name="Bench", owner=owner)
        Customer.objects.bulk_create(
            Customer(workspace=workspace, external_id=f"c{i}", email=f"c{i}@example.test")
            for i in range(CUSTOMERS)
        )
    # Three links to one destination, so all three apps answer byte-identical 302s.
    html = "".join(f'<p><a href="{DESTINATION}">Link {i}</a></p>' for i in range(3))
    with scope(workspace=workspace):
        campaign = Campaign.objects.create(workspace=workspace, name=name)
        node = EmailNode.objects.create(campaign=campaign, name="Email", position=1)
        version = template_create(workspace=workspace, name=name, html=html)
        Variant.objects.create(node=node, subject="Hi", template_version=version)
        plan_deliveries(node)
        # Sent an hour ago, so ingestion classifies the clicks as it would real ones.
        Delivery.objects.filter(node=node).update(
            status=Delivery.Status.SENT, sent_at=timezone.now() - timedelta(hours=1)
        )
        deliveries = list(Delivery.objects.filter(node=node).values_list("pk", flat=True))
        links = list(version.links.values_list("pk", "href"))
    tracker = SignedTracker("http://bench")
    return [
        Click(
            tracker.click_url(delivery_id, link_id, href).removeprefix("http://bench"),
            href,
            delivery_id,
            link_id,
        )
        for delivery_id in deliveries
        for link_id, href in links
    ]


def stored_clicks(name: str) -> Counter:
    """(delivery_id, link_id) -> ClickEvent rows of campaign `name`."""
    from django.db.models import Count
    from django_scopes import scopes_disabled

    from tracking.models import ClickEvent

    with scopes_disabled():
        rows = (
            ClickEvent.objects.filter(delivery__node__campaign__name=name)
            .values_list("delivery_id", "link_id")
            .annotate(n=Count("id"))
            .order_by()
        )
        return Counter({(delivery, link): n for delivery, link, n in rows})


# --- load generators ---------------------------------------------------------------


class Load:
    """Exactly `total` GETs over CONNECTIONS keep-alive connections, each answer checked;
    request i clicks clicks[i % len(clicks)]."""

    def __init__(self, port: int, clicks: list[Click], total: int):
        self.port, self.clicks, self.total = port, clicks, total
        self._next = itertools.count()  # next() on a count is atomic under the GIL
        self._lock = threading.Lock()
        self.done = self.ok = 0
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.seconds = 0.0

    def run(self) -> "Load":
        threads = [threading.Thread(target=self._client) for _ in range(CONNECTIONS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.seconds = time.perf_counter() - started
        return self

    def expected(self) -> Counter:
        return Counter(
            (click.delivery_id, click.link_id)
            for click in (self.clicks[i % len(self.clicks)] for i in range(self.total))
        )

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"User-Agent": USER_AGENT, "X-Forwarded-For": ""}
        ok, latencies, errors = 0, [], []
        while (i := next(self._next)) < self.total:
            click = self.clicks[i % len(self.clicks)]
            headers["X-Forwarded-For"] = client_address(i)
            sent = time.perf_counter()
            try:
                conn.request("GET", click.path, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as error:
                # Never retried: a retry could store a click twice and hide the fault.
                errors.append(f"request {i}: {error!r}")
                conn.close()
            else:
                latencies.append(time.perf_counter() - sent)
                location = response.getheader("Location")
                if response.status == 302 and location == click.location:
                    ok += 1
                else:
                    errors.append(f"request {i}: {response.status} {location}")
            with self._lock:
                self.done += 1
        conn.close()
        with self._lock:
            self.ok += ok
            self.errors += errors
            self.latencies += latencies


def ensure_wrk() -> str | None:
    """Path to wrk; installs Debian's package when missing and we are root."""
    if found := shutil.which("wrk"):
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing wrk from Debian")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], **quiet).returncode:
            subprocess.run(["apt-get", "update", "-qq"], **quiet)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], **quiet)
    return shutil.which("wrk")


def client_address(n: int) -> str:
    """The n-th request's client address (10.0.0.0/8): each request its own."""
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


# wrk cycles through the paths so every request verifies another token, each request
# from an address of its own (10.<thread>.x.y).
WRK_SCRIPT = """
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local paths, i, n = {}, 0, 0
for line in io.lines("%s") do paths[#paths + 1] = line end
wrk.headers["User-Agent"] = "%s"
request = function()
  i = i %% #paths + 1
  n = n + 1
  wrk.headers["X-Forwarded-For"] = string.format(
    "10.%%d.%%d.%%d", id %% 256, math.floor(n / 256) %% 256, n %% 256)
  return wrk.format("GET", paths[i])
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_measure(wrk: str, script: Path, base: str, seconds: int) -> dict:
    """req/s and p50/p99 latency (ms) of one wrk run; raises on any error or non-3xx."""
    out = subprocess.run(
        [
            wrk,
            "-t",
            "2",
            "-c",
            str(CONNECTIONS),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            base,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if bad := re.search(r"(Non-2xx or 3xx responses: \d+|Socket errors: .*)", out):
        raise RuntimeError(f"wrk against {base}: {bad.group(1)}")
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()
        result[f"p{pct}"] = float(value) * _UNITS[unit]
    return result


def python_measure(port: int, clicks: list[Click], seconds: int) -> dict:
    """Without wrk: the exactness generator, for about `seconds` at ~2,000 req/s."""
    load = Load(port, clicks, seconds * 2000).run()
    if load.errors:
        raise RuntimeError(f"load against port {port}: {load.errors[:3]}")
    cuts = statistics.quantiles(load.latencies, n=100)
    return {"rps": load.done / load.seconds, "p50": cuts[49] * 1e3, "p99": cuts[98] * 1e3}


# --- the benchmark -----------------------------------------------------------------


def measure_speed(env: dict, work: Path, clicks: list[Click]) -> dict[str, dict]:
    """Median req/s, p50 and p99 (ms) of each app over ROUNDS alternating rounds."""
    wrk = ensure_wrk()
    script = work / "requests.lua"
    (work / "paths.txt").write_text("".join(f"{click.path}\n" for click in clicks))
    script.write_text(WRK_SCRIPT % (work / "paths.txt", USER_AGENT))
    log(f"load: {wrk or 'python (no wrk)'}; gunicorn {' '.join(GUNICORN_ARGS)}")

    def measure(server, seconds):
        if wrk:
            return wrk_measure(wrk, script, server.base, seconds)
        return python_measure(server.port, clicks, seconds)

    servers = {
        name: Server(name, app, env, work / f"spool-{name}", (clicks[0].path, 302))
        for name, app in APPS.items()
    }
    try:
        for server in servers.values():
            measure(server, WARMUP_SECONDS)
        rounds = {name: [] for name in servers}
        for number in range(ROUNDS):
            for name, server in servers.items():
                rounds[name].append(result := measure(server, ROUND_SECONDS))
                log(
                    f"round {number + 1} {name}: {result['rps']:.0f} req/s, "
                    f"p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms"
                )
    finally:
        for server in servers.values():
            server.stop()
    return {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in rounds.items()
    }


def exact_run(env: dict, work: Path, name: str, redis: Redis | None = None) -> tuple[int, bool]:
    """Click EXACT_CLICKS times, ingest everything; (rows stored, exactly as clicked)."""
    from tracking.ingest import ingest_spool

    clicks = campaign_clicks(name)
    spool_dir = work / f"spool-{name}"
    load = Load(0, clicks, EXACT_CLICKS)
    restarts = []
    # Probed with a bad token: that records nothing, so the count stays exact.
    server = Server(name, APPS["real"], env, spool_dir, ("/c/not-a-token", 404))
    try:
        load.port = server.port
        restarter = None
        if redis is not None:
            restarter = threading.Thread(target=restart_midway, args=(redis, load, restarts))
            restarter.start()
        load.run()
        if restarter is not None:
            restarter.join()
    finally:
        server.stop()  # its workers close their spool files: then every file is complete
    log(
        f"{name}: {load.ok} right redirects in {load.seconds:.1f} s "
        f"({load.done / load.seconds:.0f} req/s), {len(load.errors)} errors {load.errors[:3]}"
    )

    spooled = sum(path.read_bytes().count(b"\n") for path in spool_dir.glob("*.jsonl"))
    started = time.perf_counter()
    while any(spool_dir.glob("*.jsonl")):
        ingest_spool(spool_dir)
    stored = stored_clicks(name)
    missing = load.expected() - stored
    extra = stored - load.expected()
    log(
        f"{name}: spooled {spooled}, ingested in {time.perf_counter() - started:.1f} s, "
        f"stored {stored.total()}; per (delivery, link): {missing.total()} missing, "
        f"{extra.total()} extra"
    )

    exact = not missing and not extra and load.ok == EXACT_CLICKS
    if redis is not None and not (restarts and restarts[0] < EXACT_CLICKS):
        log(f"{name}: Redis did not restart while clicks were still coming")
        exact = False
    return stored.total(), exact


def restart_midway(redis: Redis, load: Load, restarts: list[int]) -> None:
    """Shut Redis down halfway through the load and start it again; records the click
    count when it was back, which must be short of the total."""
    wait_for(lambda: load.done >= load.total // 2, 600, "half the clicks")
    try:
        redis.shutdown()
        time.sleep(0.5)  # clicks keep coming while it is down
    finally:
        redis.start()
    restarts.append(load.done)
    log(f"redis down and back between clicks {load.total // 2} and {load.done}")


def house_line(name: str, value: float, baseline: float, goal: str, digits: int = 1) -> str:
    ratio = value / baseline if baseline else 0.0
    return (
        f"bench: {name} value={value:.{digits}f} baseline={baseline:.{digits}f} "
        f"ratio={ratio:.3f} goal={goal}"
    )


def service_env(bench: str, database: str, redis_url: str, work: Path) -> dict:
    """The environment of a bench's services (gunicorns, workers) and of its own
    process: production settings, its database and Redis, a spool under `work`, and
    X-Forwarded-For trusted, so each request can come from an address of its own."""
    return os.environ | {
        "DJANGO_SETTINGS_MODULE": "clickmap.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": redis_url,
        "SECRET_KEY": f"bench-{bench}-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "0",
        "HTTPS_ONLY": "0",
        "STATIC_MANIFEST": "0",
        "TRACKING_INGEST_INLINE": "0",
        "TRACKING_TRUST_X_FORWARDED_FOR": "1",
        "TRACKING_SPOOL_DIR": str(work / "spool"),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        # WhiteNoise warns in every worker that STATIC_ROOT was never collected.
        "PYTHONWARNINGS": "ignore:No directory at",
    }


def main() -> int:
    started = time.perf_counter()
    shared_port = os.environ.get("BENCH_REDIS_PORT")
    redis = Redis(int(shared_port) if shared_port else None)
    work = Path(tempfile.mkdtemp(prefix="clickmap-bench-redirect-"))
    env = service_env("redirect", DB_NAME, redis.url, work)
    os.environ.update(env)
    exact_ok = True
    try:
        redis.ensure_running()
        recreate_database(env)
        import django

        django.setup()

        speed = measure_speed(env, work, campaign_clicks("speed"))
        real, bare, minimal = speed["real"], speed["bare_django"], speed["minimal_wsgi"]
        log(
            f"p50 ms: real {real['p50']:.2f}, bare Django {bare['p50']:.2f}, "
            f"minimal WSGI {minimal['p50']:.2f}"
        )
        for line in (
            house_line("redirect_vs_bare_django", real["rps"], bare["rps"], f">={GOAL_RATIO}"),
            house_line("redirect_vs_minimal_wsgi", real["rps"], minimal["rps"], "info"),
            house_line("redirect_p99_ms", real["p99"], bare["p99"], f"<{GOAL_P99_MS:g}", 2),
        ):
            print(line, flush=True)

        for name, restart in (
            ("redirect_exact_100k", None),
            ("redirect_exact_100k_redis_restart", redis),
        ):
            stored, exact = exact_run(env, work, name, restart)
            exact_ok &= exact
            print(house_line(name, stored, EXACT_CLICKS, "==1.0", 0), flush=True)
    finally:
        for server in list(RUNNING):
            server.stop()
        if redis.shared:
            redis.ensure_running()  # the machine's Redis is left running whatever happened
        else:
            redis.stop_own()
        shutil.rmtree(work, ignore_errors=True)
        log(f"total {time.perf_counter() - started:.0f} s")
    return 0 if exact_ok else 1


if __name__ == "__main__":
    sys.exit(main())
