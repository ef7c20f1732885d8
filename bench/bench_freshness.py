"""Fresh maps under a click storm: docker-compose.yml's topology on this machine, no Docker.

Setup: gunicorn tracker (4 sync workers) and web (3), a Celery worker on the pipeline
and default queues with the compose concurrency (2), beat, PostgreSQL (the system one,
BENCH_PG_ADMIN_URL, database clickmap_freshness or BENCH_DB_NAME, recreated) and a
Redis of the bench's own on a free port. The spool is shared by tracker and worker, as
compose's volume is.

Load: real signed click URLs (one sent campaign per phase, 3 links × CUSTOMERS
deliveries), each request from an address of its own: 300/s for 60 s, 1,000/s for 60 s,
then as fast as the tracker answers 32 keep-alive connections for 30 s (BENCH_PHASES
scales the durations, e.g. 0.25 for a quick look). Requests are paced open-loop: a
slow answer does not lower the offered rate.

Visible lag: the bench asks `clickmap.metrics.link_counts` for the phase's campaign
every POLL_SECONDS, from its own process (the dashboard's query). The k-th click
answered with its 302 counts as visible at the first poll counting k clicks or more;
its lag is that poll's time minus its 302's. Clicks are applied in batches, not in
strict order, so this reads the count the way a user watching the map does.

Prints per phase, in the house format (baseline: the issue's figure measured before
this pipeline, where there is one, else the same figure of the 300/s phase):
  bench: freshness_<phase>_lag_p50_s / _lag_p99_s / _lag_max_s
  bench: freshness_<phase>_catchup_s   (last 302 until every answered click counts)
  bench: freshness_<phase>_still_max_s (longest time the count stood still while
                                       answered clicks waited to be counted)
  bench: freshness_<phase>_redirect_p99_ms and freshness_<phase>_rate (answered req/s)
and bench: freshness_exact (clicks counted by the map at the end against the stored
ClickEvent rows, recounted per link in plain Python, and against the 302s answered).
Goals: at 1,000/s p99 lag < 5 s; at full speed the count never stands still > 5 s and
catches up < 10 s after the load stops. Exits non-zero when a stored click is not
counted (or an answered one not stored); a missed speed goal is only printed.
"""

import contextlib
import http.client
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_redirect import (  # noqa: E402
    USER_AGENT,
    Redis,
    client_address,
    free_port,
    house_line,
    log,
    service_env,
    wait_for,
)

PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
DB_NAME = os.environ.get("BENCH_DB_NAME", "clickmap_freshness")
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SCALE = float(os.environ.get("BENCH_PHASES", "1"))
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "10000"))
CONNECTIONS = 32
POLL_SECONDS = 0.1
CATCH_UP_TIMEOUT = 300.0
LOG_LEVEL = os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING")  # INFO: every run's report
DESTINATION = "https://shop.example/storm"
# (name, clicks per second or None for as fast as it goes, seconds, goals)
PHASES = [
    ("300", 300, 60),
    ("1000", 1000, 60),
    ("full", None, 30),
]
# What issue 19 measured before this pipeline (300/s, 1.4k/s, 2.7k/s): lag max, still.
BEFORE = {"300": {"lag_max_s": 5.0}, "full": {"lag_max_s": 26.0, "still_max_s": 19.0}}
GOALS = {
    ("1000", "lag_p99_s"): 5.0,
    ("full", "still_max_s"): 5.0,
    ("full", "catchup_s"): 10.0,
}


class Process:
    """A service of the topology: its output in `log_path`, ended by its pid."""

    RUNNING: list["Process"] = []

    def __init__(self, name: str, command: list[str], env: dict, work: Path):
        self.name = name
        self.log_path = work / f"{name}.log"
        with open(self.log_path, "wb") as output:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        Process.RUNNING.append(self)

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            Process.RUNNING.remove(self)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def gunicorn(name: str, workers: int, env: dict, work: Path) -> tuple[Process, int]:
    port = free_port()
    command = [GUNICORN, "clickmap.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(workers), "--worker-class", "sync", "--log-level", "warning"]
    server = Process(name, command, env, work)

    def answers() -> bool:
        server.check()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/c/not-a-token")
            status = conn.getresponse().status
            conn.close()
        except OSError:
            return False
        return status == 404

    wait_for(answers, 60, f"gunicorn {name}")
    return server, port


def recreate_database(env: dict) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )


# --- fixtures ----------------------------------------------------------------------


def phase_campaigns(names: list[str]) -> dict:
    """One sent campaign per phase: name -> (workspace, campaign, [(path, location)])."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from django_scopes import scope

    from campaigns.models import Campaign, Customer, Delivery, EmailNode, Variant
    from campaigns.sending import plan_deliveries
    from campaigns.services import template_create, workspace_create
    from tracking.links import SignedTracker

    owner = get_user_model().objects.create_user(username="bench", password=None)
    workspace = workspace_create(name="Storm", owner=owner)
    Customer.objects.bulk_create(
        (
            Customer(workspace=workspace, external_id=f"c{i}", email=f"c{i}@example.test")
            for i in range(CUSTOMERS)
        ),
        batch_size=5000,
    )
    html = "".join(f'<p><a href="{DESTINATION}?l={i}">Link {i}</a></p>' for i in range(3))
    tracker = SignedTracker("http://bench")
    found = {}
    for name in names:
        with scope(workspace=workspace):
            campaign = Campaign.objects.create(workspace=workspace, name=f"Storm {name}")
            node = EmailNode.objects.create(campaign=campaign, name="Email", position=1)
            version = template_create(workspace=workspace, name=f"Storm {name}", html=html)
            Variant.objects.create(node=node, subject="Hi", template_version=version)
            plan_deliveries(node)
            # Sent an hour ago, so ingestion classifies the clicks as it would real ones.
            Delivery.objects.filter(node=node).update(
                status=Delivery.Status.SENT, sent_at=timezone.now() - timedelta(hours=1)
            )
            deliveries = list(Delivery.objects.filter(node=node).values_list("pk", flat=True))
            links = list(version.links.values_list("pk", "href"))
        # Link-major order: consecutive clicks hit different recipients, as a storm does.
        clicks = [
            (tracker.click_url(d, link, href).removeprefix("http://bench"), href)
            for link, href in links
            for d in deliveries
        ]
        found[name] = (workspace, campaign, clicks)
    return found


def counted(workspace, campaign) -> int:
    """Every click the map counts for the campaign (all clicks, every link)."""
    from django_scopes import scope

    from clickmap import metrics

    with scope(workspace=workspace):
        counts = metrics.link_counts(metrics.Scope(workspace=workspace, campaign_id=campaign.pk))
    return sum(total for total, _ in counts.values())


# --- load and watching -------------------------------------------------------------


class Load:
    """Clicks at `rate` per second (None: as fast as answered) for `seconds`, paced
    open-loop over CONNECTIONS keep-alive connections; keeps each 302's time."""

    def __init__(self, port: int, clicks: list, rate: float | None, seconds: float, first: int):
        self.port, self.clicks, self.rate, self.seconds = port, clicks, rate, seconds
        self.first = first  # client addresses continue across phases: every one is new
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.answered: list[float] = []  # monotonic time of each checked 302
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self) -> "Load":
        self.started = time.monotonic()
        self.until = self.started + self.seconds
        threads = [threading.Thread(target=self._client) for _ in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.answered.sort()
        return self

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"User-Agent": USER_AGENT}
        answered, latencies, errors = [], [], []
        while True:
            i = next(self._next)
            if self.rate:
                due = self.started + i / self.rate
                if due >= self.until:
                    break
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
            elif time.monotonic() >= self.until:
                break
            path, location = self.clicks[i % len(self.clicks)]
            headers["X-Forwarded-For"] = client_address(self.first + i)
            sent = time.monotonic()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as error:
                errors.append(f"request {i}: {error!r}")  # never retried
                conn.close()
                continue
            done = time.monotonic()
            if response.status == 302 and response.getheader("Location") == location:
                answered.append(done)
                latencies.append(done - sent)
            else:
                errors.append(f"request {i}: {response.status}")
        conn.close()
        with self._lock:
            self.answered += answered
            self.latencies += latencies
            self.errors += errors

    @property
    def requests(self) -> int:
        return len(self.answered) + len(self.errors)


class Watcher(threading.Thread):
    """Polls the map's count of one campaign every POLL_SECONDS: [(time, count)]."""

    def __init__(self, workspace, campaign):
        super().__init__(daemon=True)
        self.workspace, self.campaign = workspace, campaign
        self.polls: list[tuple[float, int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        from django.db import connection

        try:
            while not self.stopping.is_set():
                asked = time.monotonic()
                self.polls.append((asked, counted(self.workspace, self.campaign)))
                self.stopping.wait(max(0.0, POLL_SECONDS - (time.monotonic() - asked)))
        finally:
            connection.close()

    def latest(self) -> int:
        return self.polls[-1][1] if self.polls else 0


def lags(answered: list[float], polls: list[tuple[float, int]]) -> list[float]:
    """Each answered click's lag: the first poll counting it, minus its 302's time."""
    result, j = [], 0
    for k, at in enumerate(answered, start=1):
        while j < len(polls) and polls[j][1] < k:
            j += 1
        if j == len(polls):
            break  # never counted: the exactness check reports it
        result.append(max(0.0, polls[j][0] - at))
    return result


def longest_still(answered: list[float], polls: list[tuple[float, int]]) -> float:
    """The longest time the count did not move while an answered click waited to be
    counted: within each stretch of one count, from the stretch's start or the 302 of
    the first click it does not count, whichever is later, to the count's next move."""
    if not polls:
        return 0.0
    longest = 0.0
    start, value = polls[0]
    for at, count in [*polls[1:], (polls[-1][0], None)]:  # None closes the last stretch
        if count == value:
            continue
        if value < len(answered):  # clicks in 302 order: answered[value] is the first not counted
            waiting = max(start, answered[value])
            longest = max(longest, at - waiting)
        start, value = at, count
    return longest


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


# --- the benchmark -----------------------------------------------------------------


def settle(fixtures: dict) -> None:
    """Wait until the pipeline is idle and the map up to date: the fixtures' customers
    and deliveries (the segments' membership log) are applied before any click."""
    from clickmap.freshness import of_numbers
    from clickmap.models import MembershipChange

    def idle() -> bool:
        for process in Process.RUNNING:
            process.check()
        return not MembershipChange.objects.exists() and of_numbers().up_to_date

    wait_for(idle, 600, "the pipeline to settle")


def run_phase(name, rate, seconds, port, fixtures, first) -> tuple[dict, Load]:
    workspace, campaign, clicks = fixtures
    watcher = Watcher(workspace, campaign)
    watcher.start()
    log(f"phase {name}: {rate or 'full speed'} clicks/s for {seconds:g} s")
    load = Load(port, clicks, rate, seconds, first).run()
    ended = time.monotonic()
    total = len(load.answered)
    deadline = ended + CATCH_UP_TIMEOUT
    while watcher.latest() < total and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS / 2)
    time.sleep(2 * POLL_SECONDS)
    watcher.stopping.set()
    watcher.join()
    caught = next((at for at, count in watcher.polls if count >= total), None)
    phase_lags = lags(load.answered, watcher.polls)
    from clickmap.freshness import of_numbers

    log(
        f"phase {name}: {total} answered ({len(load.errors)} errors) in "
        f"{ended - load.started:.1f} s; map now: {of_numbers().text}"
    )
    figures = {
        "rate": total / (ended - load.started),
        "lag_p50_s": quantile(phase_lags, 0.50),
        "lag_p99_s": quantile(phase_lags, 0.99),
        "lag_max_s": max(phase_lags, default=float("nan")),
        "catchup_s": (caught - ended) if caught is not None else CATCH_UP_TIMEOUT,
        "still_max_s": longest_still(load.answered, watcher.polls),
        "redirect_p99_ms": quantile(load.latencies, 0.99) * 1e3,
    }
    return figures, load


def print_figures(name: str, figures: dict, light: dict) -> None:
    """The house lines of a phase. Baseline: the issue's figure from before this
    pipeline where there is one, else the same figure at 300/s in this run (the light
    load the heavier phases are held against)."""
    for key, value in figures.items():
        goal = GOALS.get((name, key))
        baseline = BEFORE.get(name, {}).get(key, light.get(key, value))
        goal_text = f"<{goal:g}" if goal else "info"
        digits = 0 if key == "rate" else 2
        print(house_line(f"freshness_{name}_{key}", value, baseline, goal_text, digits), flush=True)


def exactness(fixtures: dict, answered: dict) -> bool:
    """Every stored click counted by the map, per link, and every 302 stored."""
    from django_scopes import scope, scopes_disabled

    from clickmap import metrics
    from tracking.models import ClickEvent

    ok, stored_all, counted_all, answered_all = True, 0, 0, 0
    for name, (workspace, campaign, _) in fixtures.items():
        with scopes_disabled():
            stored = Counter(
                ClickEvent.objects.filter(delivery__node__campaign=campaign).values_list(
                    "link_id", flat=True
                )
            )
        with scope(workspace=workspace):
            scope_ = metrics.Scope(workspace=workspace, campaign_id=campaign.pk)
            counts = metrics.link_counts(scope_)
        shown = Counter({link: total for link, (total, _) in counts.items() if total})
        if shown != stored or sum(stored.values()) != answered[name]:
            log(f"phase {name}: stored {dict(stored)}, shown {dict(shown)}, 302s {answered[name]}")
            ok = False
        stored_all += sum(stored.values())
        counted_all += sum(shown.values())
        answered_all += answered[name]
    print(house_line("freshness_exact", counted_all, stored_all, "==1.0", 0), flush=True)
    log(f"302s answered: {answered_all}, stored: {stored_all}, counted: {counted_all}")
    return ok


def main() -> int:
    started = time.perf_counter()
    redis = Redis(None)
    work = Path(tempfile.mkdtemp(prefix="clickmap-bench-freshness-"))
    env = service_env("freshness", DB_NAME, redis.url, work)
    os.environ.update(env)
    ok = True
    try:
        log(f"load average before: {os.getloadavg()}")
        redis.start()
        recreate_database(env)
        import django

        django.setup()
        fixtures = phase_campaigns([name for name, _, _ in PHASES])
        _, port = gunicorn("tracker", 4, env, work)
        gunicorn("web", 3, env, work)
        celery = [PYTHON, "-m", "celery", "-A", "clickmap"]
        Process(
            "worker",
            [*celery, "worker", "-Q", "pipeline,clickmap", "--concurrency=2", "-l", LOG_LEVEL],
            env,
            work,
        )
        Process(
            "beat",
            [*celery, "beat", "-l", "WARNING", "--schedule", str(work / "celerybeat-schedule")],
            env,
            work,
        )
        settle(fixtures)
        answered, first, light = {}, 0, {}
        for name, rate, seconds in PHASES:
            for process in Process.RUNNING:
                process.check()
            figures, load = run_phase(name, rate, seconds * SCALE, port, fixtures[name], first)
            first += load.requests
            answered[name] = len(load.answered)
            ok &= not load.errors
            light = light or figures
            print_figures(name, figures, light)
        ok &= exactness(fixtures, answered)
        log(f"load average after: {os.getloadavg()}")
    finally:
        for process in list(Process.RUNNING):
            process.stop()
        redis.stop_own()
        if os.environ.get("BENCH_KEEP"):
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        log(f"total {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
