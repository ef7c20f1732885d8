"""WSGI entry point: tracking's click and open endpoints, then Django for the rest.

It refuses to start when static files with hashed names were not collected
(clickmap/static_files.py): a server that answers 404 for its own CSS is worse than one
that does not start and says why."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickmap.settings")
django_application = get_wsgi_application()

from clickmap.static_files import require_collected  # noqa: E402  (needs settings)
from tracking.hotpath import tracking_wsgi  # noqa: E402

require_collected()
application = tracking_wsgi(django_application)
