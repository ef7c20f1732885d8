"""Clickmap settings: one module, everything read from the environment.

With nothing set, Clickmap runs on the embedded default: a PostgreSQL server it starts
itself under var/postgres (clickmap/embedded_db), tasks inline, local-memory cache. See
README.md for the variables.
"""

from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

from clickmap.config import (
    database_config,
    email_config,
    embedded_database_config,
    persistent_secret_key,
    prometheus_multiprocess,
    task_and_cache_config,
)

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

# Unset: a random key generated once and kept in var/secret_key, so a fresh clone runs
# (and `manage.py inventory` works) with nothing configured. Set it in production.
SECRET_KEY = env.str("SECRET_KEY", default="") or persistent_secret_key(BASE_DIR / "var")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Public origin that tracking links in sent emails point to.
TRACKING_BASE_URL = env.str("TRACKING_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
# Secrets that sign tracking tokens: the first signs, all verify (rotate by prepending).
# Empty: one key derived from SECRET_KEY.
TRACKING_KEYS = env.list("TRACKING_KEYS", default=[])
# Where the click/open endpoints append events before they reach the database.
TRACKING_SPOOL_DIR = env.path("TRACKING_SPOOL_DIR", default=BASE_DIR / "var" / "spool")
# Uploaded customer files wait here for their import (web and worker hosts share it).
CUSTOMER_IMPORT_DIR = env.path("CUSTOMER_IMPORT_DIR", default=BASE_DIR / "var" / "imports")
# This host's spool, by name: each tracker host with a spool of its own names it
# (docs/scaling.md), so the click map's freshness waits for every host's ingestion.
TRACKING_SPOOL_NAME = env.str("TRACKING_SPOOL_NAME", default="default")
# Store events as they arrive instead of by the worker: the embedded default has none.
TRACKING_INGEST_INLINE = env.bool("TRACKING_INGEST_INLINE", default=not env.str("REDIS_URL", ""))
TRACKING_SPOOL_FSYNC = env.bool("TRACKING_SPOOL_FSYNC", default=False)
# Behind a proxy the client's address is in X-Forwarded-For (its first entry).
TRACKING_TRUST_X_FORWARDED_FOR = env.bool("TRACKING_TRUST_X_FORWARDED_FOR", default=False)
# Turns links into tracking URLs at send time (campaigns does not import tracking).
LINK_TRACKER = "tracking.links.SignedTracker"
# Hosts (host or host:port) the image fetcher may reach although they resolve to a
# loopback or private address: for tests. Empty, every such address is refused.
IMAGE_FETCH_ALLOWED_HOSTS = env.list("IMAGE_FETCH_ALLOWED_HOSTS", default=[])
EMAIL_MESSAGE_ID_DOMAIN = env.str("EMAIL_MESSAGE_ID_DOMAIN", default="clickmap.local")
# What one personalisation render (a delivery, a preview, the save-time check) may spend;
# over any of these that delivery or preview fails, naming the limit.
PERSONALISE_MAX_LOOP_ITERATIONS = env.int("PERSONALISE_MAX_LOOP_ITERATIONS", default=100_000)
PERSONALISE_MAX_OUTPUT_CHARS = env.int("PERSONALISE_MAX_OUTPUT_CHARS", default=2_000_000)
PERSONALISE_MAX_DEPTH = env.int("PERSONALISE_MAX_DEPTH", default=50)
PERSONALISE_MAX_SECONDS = env.float("PERSONALISE_MAX_SECONDS", default=2.0)

# What /healthz checks (clickmap/pipeline_health.py): "web", the database and the cache;
# "tracker", the spool alone (it never touches the database).
SERVICE_ROLE = env.str("SERVICE_ROLE", default="web")
if SERVICE_ROLE not in ("web", "tracker"):
    raise ImproperlyConfigured(f"SERVICE_ROLE must be web or tracker, not {SERVICE_ROLE!r}")
# Bearer token of /metrics (Prometheus); unset, the endpoint answers 404.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Every process (gunicorns, workers) counts into its own file here; /metrics adds them
# up. It must be one directory for all of them (docker-compose.yml: a shared volume).
PROMETHEUS_MULTIPROC_DIR = prometheus_multiprocess(
    env.path("PROMETHEUS_MULTIPROC_DIR", default=BASE_DIR / "var" / "metrics")
)
# /healthz/pipeline: past any of these the pipeline is unhealthy (and the worker logs a
# WARNING, once, when a backlog or lag crosses its threshold).
HEALTH_SPOOL_AGE_SECONDS = env.float("HEALTH_SPOOL_AGE_SECONDS", default=60.0)
HEALTH_CHANGE_BACKLOG = env.int("HEALTH_CHANGE_BACKLOG", default=500_000)
HEALTH_CHANGE_AGE_SECONDS = env.float("HEALTH_CHANGE_AGE_SECONDS", default=60.0)
HEALTH_AGGREGATE_AGE_SECONDS = env.float("HEALTH_AGGREGATE_AGE_SECONDS", default=60.0)
HEALTH_HEARTBEAT_AGE_SECONDS = env.float("HEALTH_HEARTBEAT_AGE_SECONDS", default=30.0)
# How often each Celery worker writes its heartbeat.
HEARTBEAT_SECONDS = env.float("HEARTBEAT_SECONDS", default=5.0)
# How often a running send logs its progress.
SEND_PROGRESS_SECONDS = env.float("SEND_PROGRESS_SECONDS", default=5.0)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "axes",
    "csp",
    "campaigns",
    "tracking",
    "clickmap",
]

MIDDLEWARE = [
    # First: times every request; then health and metrics, answered before host
    # validation and the HTTPS redirect (probes and scrapers use internal names).
    "clickmap.telemetry.RequestMetricsMiddleware",
    "clickmap.ops_views.OpsEndpointsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "campaigns.tenancy.AdminScopesMiddleware",
    # Last, as django-axes asks: turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "clickmap.urls"
WSGI_APPLICATION = "clickmap.wsgi.application"
ASGI_APPLICATION = "clickmap.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "campaigns.tenancy.workspace_context",
            ],
        },
    },
]

# Unset: the embedded PostgreSQL server under var/, started by the first connection.
DATABASE_URL = env.str("DATABASE_URL", default="")
DATABASES = {
    "default": database_config(DATABASE_URL)
    if DATABASE_URL
    else embedded_database_config(BASE_DIR / "var" / "postgres")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Templates up to several MB are pasted or uploaded; the inventory module enforces its own cap.
DATA_UPLOAD_MAX_MEMORY_SIZE = 12 * 1024 * 1024

REDIS_URL = env.str("REDIS_URL", default="")
_services = task_and_cache_config(REDIS_URL)
CACHES = _services.pop("CACHES")
globals().update(_services)
CELERY_TASK_DEFAULT_QUEUE = "clickmap"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# Workers and beat log through LOGGING below (clickmap/celery_signals.py), one format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Each kind of work has its queue and (docker-compose.yml) its worker, so a send, however
# slow, never holds the worker that ingests and aggregates another workspace's clicks.
CELERY_TASK_ROUTES = {
    "campaigns.send_campaign": {"queue": "send"},
    # Starting a due send takes milliseconds; on the pipeline queue no send can delay it.
    "campaigns.start_due_sends": {"queue": "pipeline"},
    "tracking.ingest_events": {"queue": "pipeline"},
    "tracking.ensure_partitions": {"queue": "pipeline"},
    "clickmap.aggregate": {"queue": "pipeline"},
    "clickmap.pipeline": {"queue": "pipeline"},
    "clickmap.render_preview": {"queue": "previews"},
}
# A send task stops at its soft limit, puts back what it had not handed to SMTP and queues
# its continuation behind the sends queued meanwhile; the hard limit ends a stuck one.
SEND_SOFT_TIME_LIMIT = env.int("SEND_SOFT_TIME_LIMIT", default=300)
SEND_TIME_LIMIT = env.int("SEND_TIME_LIMIT", default=SEND_SOFT_TIME_LIMIT + 60)
# Aggregator runs that overlap split the change log into this many shards (by customer),
# one run each (clickmap.rollups.aggregate_free_shards): the worker's concurrency.
AGGREGATE_SHARDS = env.int("AGGREGATE_SHARDS", default=2)
if AGGREGATE_SHARDS < 1:  # no shard: no run would ever apply the change log
    raise ImproperlyConfigured(f"AGGREGATE_SHARDS must be 1 or more, not {AGGREGATE_SHARDS}")
# The pipeline (clickmap/pipeline.py): each run ingests the spool and aggregates the
# change log in turns, for at most PIPELINE_SLICE_SECONDS, then queues its continuation
# when work is left. At most PIPELINE_RUNS runs at once (the pipeline worker's
# concurrency); PIPELINE_INGEST=0 on workers that do not share a spool with a tracker
# (docs/scaling.md: each tracker host then runs `manage.py ingest_events --follow`).
PIPELINE_SLICE_SECONDS = env.float("PIPELINE_SLICE_SECONDS", default=10.0)
PIPELINE_RUNS = env.int("PIPELINE_RUNS", default=AGGREGATE_SHARDS)
PIPELINE_INGEST = env.bool("PIPELINE_INGEST", default=True)
PIPELINE_INGEST_SECONDS = env.float("PIPELINE_INGEST_SECONDS", default=2.0)  # per turn
PIPELINE_BATCH_SIZE = env.int("PIPELINE_BATCH_SIZE", default=20_000)
CELERY_BEAT_SCHEDULE = {
    # A tick starts a run when a slot is free. One still queued after a whole slice
    # waited because every slot ran the pipeline, which loops while there is work and
    # continues itself (never expiring): dropping the tick loses nothing.
    "pipeline": {
        "task": "clickmap.pipeline",
        "schedule": 1.0,
        "options": {"expires": PIPELINE_SLICE_SECONDS},
    },
    "ensure-event-partitions": {"task": "tracking.ensure_partitions", "schedule": 86400.0},
    # Scheduled sends start within this many seconds of their time (campaigns/scheduling.py).
    "start-due-sends": {
        "task": "campaigns.start_due_sends",
        "schedule": 5.0,
        "options": {"expires": 5.0},
    },
}

globals().update(email_config(env))
# An SMTP server that stops answering fails the message after this many seconds, instead
# of holding a send worker until its hard time limit.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=60)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Clickmap <clickmap@localhost>")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes checks every login (the login page and the admin's) before Django's own backend.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Login throttling: LOGIN_FAILURE_LIMIT failed logins lock for LOGIN_LOCKOUT_MINUTES (each
# further try restarts the wait). Counted per username, so guessing one account's password
# from many addresses stops, and separately per client address, so one address cannot try
# a common password on many accounts. Either count reaching the limit locks. A success or
# a password reset clears that account's failures only (campaigns.login_throttle): a
# sprayer logging in to an account of its own does not wipe its address's count.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = False
# Successful logins are not logged to the database (that table would only grow).
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False  # no banner on every manage.py command; lockouts are still logged
AXES_CLIENT_IP_CALLABLE = "campaigns.login_throttle.client_ip"
AXES_LOCKOUT_CALLABLE = "campaigns.login_throttle.lockout_response"
# An invitation link works once, for the invited address, until it expires.
INVITATION_VALID_DAYS = env.int("INVITATION_VALID_DAYS", default=7)
PASSWORD_RESET_TIMEOUT = 60 * 60 * env.int("PASSWORD_RESET_VALID_HOURS", default=24)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Where `collectstatic` writes and WhiteNoise serves from (hashed names).
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "var" / "staticfiles")
STATIC_MANIFEST = env.bool("STATIC_MANIFEST", default=not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Hashed names need `collectstatic` first (the Docker image runs it); the WSGI
        # entry point refuses to start without it (clickmap/static_files.py).
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Without hashed names WhiteNoise serves the source folders: nothing to collect.
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "var" / "media")
MEDIA_URL = "media/"

# HTTPS: on by default outside DEBUG. Turn off only when nothing in front speaks TLS.
HTTPS_ONLY = env.bool("HTTPS_ONLY", default=not DEBUG)
SECURE_SSL_REDIRECT = HTTPS_ONLY
SESSION_COOKIE_SECURE = HTTPS_ONLY
CSRF_COOKIE_SECURE = HTTPS_ONLY
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS_ONLY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and appends X-Forwarded-For).
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The tracking endpoints are hit over whatever scheme the email used; never bounce them.
SECURE_REDIRECT_EXEMPT = [r"^c/", r"^o/", r"^u/", r"^healthz$"]
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# No inline script or event handler anywhere: scripts are static files (htmx and
# static/js/), and htmx is told not to eval (templates/base.html's htmx-config).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        # style="" attributes only, never <style> elements: the click map positions each
        # link's overlay box with one, computed per link on the server.
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],  # previews are served by the app
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}
# Powerful browser features the dashboard never uses: off for it and anything it embeds.
PERMISSIONS_POLICY = {
    feature: []
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "geolocation",
        "gyroscope",
        "hid",
        "idle-detection",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "publickey-credentials-get",
        "screen-wake-lock",
        "serial",
        "usb",
        "browsing-topics",
    )
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # One line per record (a traceback too), with the level, the logger and the record's
    # fields as key=value (LOG_FORMAT=json: one JSON object); clickmap/log_format.py.
    "formatters": {
        "line": {
            "()": "clickmap.log_format.LineFormatter",
            "output": env.str("LOG_FORMAT", default="text"),
        }
    },
    # Beat's ticks and the routine pipeline tasks' received/succeeded lines at DEBUG.
    "filters": {"routine": {"()": "clickmap.log_format.RoutineAtDebug"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "line",
            "filters": ["routine"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "axes": {"level": "WARNING"},  # failed logins and lockouts; not every success
    },
}
