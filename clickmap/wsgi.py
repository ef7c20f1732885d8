"""WSGI entry point: tracking's click and open endpoints, then Django for the rest."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickmap.settings")
django_application = get_wsgi_application()

from tracking.hotpath import tracking_wsgi  # noqa: E402  (needs settings configured)

application = tracking_wsgi(django_application)
