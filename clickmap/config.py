"""Service configuration derived from environment variables.

Kept apart from settings.py as plain functions so tests can check the parsing
without reloading Django.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured


def persistent_secret_key(directory: Path) -> str:
    """The key in `directory`/secret_key, created (mode 600) on first use."""
    path = Path(directory) / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(key)
    return key


def database_config(url: str) -> dict:
    """Django DATABASES['default'] for a DATABASE_URL (postgres://…): PostgreSQL only."""
    config = environ.Env.db_url_config(url)
    if config["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            f"DATABASE_URL must be a PostgreSQL URL (postgres://…), not {url.split(':')[0]}:…;"
            " unset it for the embedded PostgreSQL under var/."
        )
    return _persistent(config)


def embedded_database_config(data_dir: Path) -> dict:
    """Django DATABASES['default'] with DATABASE_URL unset: database "clickmap" on the
    embedded PostgreSQL server whose data is in `data_dir` (clickmap/embedded_db)."""
    return _persistent(
        {
            "ENGINE": "clickmap.embedded_db",
            "NAME": "clickmap",
            "USER": "postgres",
            "DATA_DIR": str(data_dir),
        }
    )


def _persistent(config: dict) -> dict:
    # Persistent connections: the web process serves many short requests.
    config.setdefault("CONN_MAX_AGE", 60)
    config["CONN_HEALTH_CHECKS"] = True
    return config


def task_and_cache_config(redis_url: str | None) -> dict:
    """Celery and cache settings for REDIS_URL.

    Unset: tasks run inline (eager) and the cache is process-local memory, so the
    embedded default needs no service. Set: Redis is broker, result backend and cache.
    """
    if not redis_url:
        return {
            "CELERY_TASK_ALWAYS_EAGER": True,
            "CELERY_TASK_EAGER_PROPAGATES": True,
            "CELERY_BROKER_URL": "memory://",
            "CELERY_RESULT_BACKEND": "cache+memory://",
            "CACHES": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        }
    return {
        "CELERY_TASK_ALWAYS_EAGER": False,
        "CELERY_TASK_EAGER_PROPAGATES": False,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "CACHES": {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": redis_url,
            }
        },
    }


def email_config(env: environ.Env) -> dict:
    """Email settings from EMAIL_URL (smtp://user:pass@host:port, +tls/+ssl) or EMAIL_HOST…."""
    url = env.str("EMAIL_URL", default="")
    if url:
        parsed = environ.Env.email_url_config(url)
        return {key: value for key, value in parsed.items() if value not in ("", None)}
    if env.str("EMAIL_HOST", default=""):
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": env.str("EMAIL_HOST"),
            "EMAIL_PORT": env.int("EMAIL_PORT", default=25),
            "EMAIL_HOST_USER": env.str("EMAIL_HOST_USER", default=""),
            "EMAIL_HOST_PASSWORD": env.str("EMAIL_HOST_PASSWORD", default=""),
            "EMAIL_USE_TLS": env.bool("EMAIL_USE_TLS", default=False),
            "EMAIL_USE_SSL": env.bool("EMAIL_USE_SSL", default=False),
        }
    # Nothing configured: print messages instead of losing them silently.
    return {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}


def prometheus_multiprocess(directory: Path) -> Path:
    """Make prometheus_client count in files under `directory`, one per process, named
    by host and process id: processes of several containers share the directory (their
    process ids repeat), and /metrics adds every file up. Must run before any metric is
    created (settings.py); returns the directory."""
    import socket

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from prometheus_client import values

    host = socket.gethostname().replace("_", "-")  # "_" separates the file name's parts
    values.ValueClass = values.MultiProcessValue(lambda: f"{host}-{os.getpid()}")
    return directory
