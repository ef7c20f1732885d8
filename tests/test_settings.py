"""Settings from the environment: database and Redis URLs, eager tasks, deploy checks."""

import os
import subprocess
import sys
from pathlib import Path

import environ
import pytest
from django.core.exceptions import ImproperlyConfigured

from clickmap.config import (
    database_config,
    email_config,
    persistent_secret_key,
    task_and_cache_config,
)

ROOT = Path(__file__).resolve().parents[1]


def test_postgres_url_becomes_a_persistent_postgresql_connection():
    config = database_config("postgres://app:s3cret@db.internal:6543/clickmap")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"]) == ("clickmap", "app", "s3cret")
    assert (config["HOST"], config["PORT"]) == ("db.internal", 6543)
    assert config["CONN_MAX_AGE"] == 60 and config["CONN_HEALTH_CHECKS"] is True


def test_a_database_url_that_is_not_postgresql_is_refused_with_the_way_out():
    with pytest.raises(ImproperlyConfigured, match="must be a PostgreSQL URL.*unset it"):
        database_config("sqlite:////srv/clickmap/var/db.sqlite3")
    result = run_manage("check", DEBUG="1", DATABASE_URL="mysql://app@db/clickmap")
    assert result.returncode != 0
    assert "DATABASE_URL must be a PostgreSQL URL" in result.stderr


def test_without_redis_tasks_run_inline_and_cache_is_local():
    config = task_and_cache_config("")
    assert config["CELERY_TASK_ALWAYS_EAGER"] is True
    assert config["CACHES"]["default"]["BACKEND"].endswith("LocMemCache")


def test_with_redis_it_is_broker_backend_and_cache():
    config = task_and_cache_config("redis://cache:6379/2")
    assert config["CELERY_TASK_ALWAYS_EAGER"] is False
    assert config["CELERY_BROKER_URL"] == config["CELERY_RESULT_BACKEND"] == "redis://cache:6379/2"
    assert config["CACHES"]["default"]["BACKEND"].endswith("RedisCache")
    assert config["CACHES"]["default"]["LOCATION"] == "redis://cache:6379/2"


def test_email_url_and_host_settings(monkeypatch):
    env = environ.Env()
    monkeypatch.setenv("EMAIL_URL", "smtp+tls://mailer:pw@smtp.example.com:587")
    config = email_config(env)
    assert config["EMAIL_HOST"] == "smtp.example.com" and config["EMAIL_PORT"] == 587
    assert config["EMAIL_USE_TLS"] is True and config["EMAIL_HOST_USER"] == "mailer"
    monkeypatch.delenv("EMAIL_URL")
    monkeypatch.setenv("EMAIL_HOST", "127.0.0.1")
    monkeypatch.setenv("EMAIL_PORT", "2525")
    config = email_config(env)
    assert (config["EMAIL_HOST"], config["EMAIL_PORT"]) == ("127.0.0.1", 2525)
    monkeypatch.delenv("EMAIL_HOST")
    assert email_config(env)["EMAIL_BACKEND"].endswith("console.EmailBackend")


def run_manage(*args, **env):
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    base.pop("SECRET_KEY", None)
    base.pop("DEBUG", None)
    base.pop("HTTPS_ONLY", None)
    base.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    base.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_embedded_default_is_the_embedded_postgresql_with_inline_tasks():
    result = run_manage(
        "shell",
        "-c",
        "from django.conf import settings as s; from clickmap import celery_app as a;"
        "d = s.DATABASES['default'];"
        "print(d['ENGINE'], d['NAME'], d['DATA_DIR'], a.conf.task_always_eager,"
        " s.CACHES['default']['BACKEND'])",
        DEBUG="1",
    )
    assert result.returncode == 0, result.stderr
    engine, name, data_dir, eager, cache = result.stdout.splitlines()[-1].split()
    assert (engine, name) == ("clickmap.embedded_db", "clickmap")
    assert data_dir == str(ROOT / "var" / "postgres")
    assert eager == "True" and cache.endswith("LocMemCache")


def test_no_aggregator_shard_is_refused_at_start():
    result = run_manage("check", DEBUG="1", AGGREGATE_SHARDS="0")
    assert result.returncode != 0
    assert "AGGREGATE_SHARDS must be 1 or more, not 0" in result.stderr


def test_redis_url_makes_celery_use_the_real_broker():
    result = run_manage(
        "shell",
        "-c",
        "from clickmap import celery_app as a; print(a.conf.task_always_eager, a.conf.broker_url)",
        DEBUG="1",
        REDIS_URL="redis://127.0.0.1:6379/15",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["False", "redis://127.0.0.1:6379/15"]


def test_without_secret_key_one_is_generated_once_and_kept(tmp_path):
    key = persistent_secret_key(tmp_path)
    assert len(key) >= 50
    assert persistent_secret_key(tmp_path) == key
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_inventory_command_runs_with_nothing_configured(tmp_path):
    page = tmp_path / "email.html"
    page.write_text('<table><tr><td><a href="https://x.example/">Go</a></td></tr></table>')
    result = run_manage("inventory", str(page), "--json")
    assert result.returncode == 0, result.stderr
    assert '"/html/body/table[1]/tbody[1]/tr[1]/td[1]/a[1]"' in result.stdout


def test_deploy_check_is_clean_with_debug_off():
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY="k" + os.urandom(40).hex(),
        ALLOWED_HOSTS="clickmap.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_readmes_deploy_check_statement_is_what_the_command_prints():
    """README: no issues with HTTPS_ONLY on (the default with DEBUG off); with
    HTTPS_ONLY=0 exactly the warnings it names."""
    import re

    readme = (ROOT / "README.md").read_text()
    statement = readme[readme.index("`python manage.py check --deploy`") :]
    statement = statement[: statement.index("checks this sentence")]
    named = set(re.findall(r"`(security\.W\d+)`", statement))
    assert "exactly four warnings" in statement and len(named) == 4
    common = {"SECRET_KEY": "k" + os.urandom(40).hex(), "ALLOWED_HOSTS": "clickmap.example.com"}

    secure = run_manage("check", "--deploy", **common)
    assert secure.returncode == 0, secure.stderr
    assert "System check identified no issues" in secure.stdout + secure.stderr

    plain = run_manage("check", "--deploy", HTTPS_ONLY="0", **common)
    printed = plain.stdout + plain.stderr
    assert set(re.findall(r"\((security\.W\d+)\)", printed)) == named
    assert "System check identified 4 issues" in printed
