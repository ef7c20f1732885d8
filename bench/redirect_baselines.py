"""Baseline WSGI apps for bench_redirect.py, served by the same gunicorn as the real one.

- ``bare_django_app()``: the project's Django (clickmap.settings, the same middleware
  stack) with ``/c/<token>`` routed first to a view that only answers the 302. What a
  redirect costs when it goes through Django and does nothing else.
- ``minimal_wsgi_app()``: a WSGI callable answering the same 302 with no framework.
  What the server itself costs.

Both answer every ``/c/<token>`` with the same Location and headers as the real
endpoint, whatever the token: they are lower bounds of work, not checks.
"""

import os

from django.http import HttpResponseRedirect

# The destination every benchmark token carries (bench_redirect.py signs it).
DESTINATION = "https://shop.example/collections/new?utm_source=newsletter&utm_medium=email"
HEADERS = [
    ("Location", DESTINATION),
    ("Content-Length", "0"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0"),
    ("Pragma", "no-cache"),
    ("Expires", "0"),
]


def bare_redirect(request, token):
    response = HttpResponseRedirect(DESTINATION)
    for name, value in HEADERS[2:]:
        response[name] = value
    return response


def bare_django_app():
    """Django's WSGI handler for clickmap.settings with this module as ROOT_URLCONF:
    the bare view first, then the project's own URLs, so resolution sees the real table."""
    global urlpatterns
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickmap.settings")
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.urls import include, path

    # Set before setup so the handler and its resolver cache only ever see this one.
    settings.ROOT_URLCONF = __name__
    application = get_wsgi_application()
    # Built after setup: clickmap.urls imports models. Django reads it at the first request.
    urlpatterns = [path("c/<path:token>", bare_redirect), path("", include("clickmap.urls"))]
    return application


def minimal_wsgi_app():
    """A framework-free WSGI app answering the same 302."""

    def application(environ, start_response):
        start_response("302 Found", HEADERS)
        return [b""]

    return application
