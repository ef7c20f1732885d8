"""pytest plugin, loaded before Django settings: point Clickmap at the test services.

Tests run against real PostgreSQL and Redis. PostgreSQL is TEST_DATABASE_URL's when it is
set, else the embedded server under var/ (clickmap/embedded_db: the one `make run` uses,
with a database of the tests' own), so a fresh machine needs no PostgreSQL service. Redis
is TEST_REDIS_URL's. When either cannot be reached the run stops at once and says how to
start it.
"""

import os
import tempfile

import pytest

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)

if TEST_DATABASE_URL:
    os.environ["DATABASE_URL"] = TEST_DATABASE_URL
else:  # the embedded server (settings.py), whatever a shell's DATABASE_URL says
    os.environ.pop("DATABASE_URL", None)
os.environ["REDIS_URL"] = TEST_REDIS_URL
os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "x" * 48)
os.environ["HTTPS_ONLY"] = "0"  # the test server and client speak plain HTTP
os.environ.setdefault("DEBUG", "0")
os.environ["STATIC_MANIFEST"] = "0"  # no collectstatic before tests
# Playwright's sync API keeps an event loop in the test thread; the ORM calls the tests
# make beside it are still plain synchronous calls.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
# Prometheus counts (clickmap/telemetry.py) of this run's processes only: the tests, and
# the gunicorns and Celery workers they start, which inherit it.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="clickmap-metrics-")


def _postgres_problem() -> str | None:
    import environ
    import psycopg

    if not TEST_DATABASE_URL:
        return _embedded_problem()

    config = environ.Env.db_url_config(TEST_DATABASE_URL)
    if config["ENGINE"] != "django.db.backends.postgresql":
        return f"TEST_DATABASE_URL must be a PostgreSQL URL, got {TEST_DATABASE_URL!r}."
    try:
        psycopg.connect(
            dbname="postgres",
            user=config["USER"] or None,
            password=config["PASSWORD"] or None,
            host=config["HOST"] or None,
            port=config["PORT"] or None,
            connect_timeout=5,
        ).close()
    except psycopg.OperationalError as error:
        return (
            f"PostgreSQL is not reachable at {TEST_DATABASE_URL} ({error}).\n"
            "  Start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
            "  or set TEST_DATABASE_URL."
        )
    return None


def _embedded_problem() -> str | None:
    from pathlib import Path

    from clickmap import embedded_db

    data_dir = Path(__file__).resolve().parents[1] / "var" / "postgres"
    try:
        embedded_db.start(data_dir)
    except Exception as error:  # any failure to start is reported the same way
        return (
            f"The embedded PostgreSQL under {data_dir} did not start ({error}).\n"
            "  Its log is var/postgres/log; or set TEST_DATABASE_URL to a PostgreSQL server."
        )
    return None


def _redis_problem() -> str | None:
    import redis

    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=5).ping()
    except redis.RedisError as error:
        return (
            f"Redis is not reachable at {TEST_REDIS_URL} ({error}).\n"
            '  Start it: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ""'
            " --appendonly no\n  or set TEST_REDIS_URL."
        )
    return None


def pytest_configure(config):
    problems = [p for p in (_postgres_problem(), _redis_problem()) if p]
    if problems:
        pytest.exit("The test services are missing:\n" + "\n".join(problems), returncode=3)
