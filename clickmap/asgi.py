import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickmap.settings")
application = get_asgi_application()

from clickmap.static_files import require_collected  # noqa: E402  (needs settings)

require_collected()  # as clickmap/wsgi.py: no server without its static files
