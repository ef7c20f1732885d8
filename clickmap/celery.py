"""The Celery application. Configuration comes from Django settings (CELERY_*)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickmap.settings")

app = Celery("clickmap")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Logging, heartbeats and the pipeline runs' reports of workers and beat.
from clickmap import celery_signals  # noqa: E402, F401
