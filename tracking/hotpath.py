"""The click and open endpoints as plain WSGI: no session, no auth, no ORM, no template.

`/c/<token>` verifies the token (it carries the destination), appends one event to
the local spool and answers 302. `/o/<token>` does the same and answers a 1×1 GIF.
Anything that is not a valid token gets the same neutral 404 page and records
nothing. `tracking_wsgi(django_app)` serves these two paths itself and hands every
other request to Django, so the dashboard's middleware never slows a recipient.
"""

import base64
import ipaddress
import time
from functools import lru_cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from tracking.spool import Spool
from tracking.tokens import ClickToken, OpenToken, verify_token

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NOT_FOUND = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Link not found</title>"
    b"<body style='font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto'>"
    b"<h1>Link not found</h1><p>This link is not valid. If you copied it from an email, "
    b"check that the whole address was copied.</p></body></html>"
)
NO_CACHE = [
    ("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0"),
    ("Pragma", "no-cache"),
    ("Expires", "0"),
]
_PREFETCH_HEADERS = ("HTTP_PURPOSE", "HTTP_SEC_PURPOSE", "HTTP_X_PURPOSE", "HTTP_X_MOZ")


@lru_cache(maxsize=1)
def spool() -> Spool:
    return Spool(settings.TRACKING_SPOOL_DIR, fsync=settings.TRACKING_SPOOL_FSYNC)


@receiver(setting_changed)
def _new_spool(setting, **kwargs):
    if setting in ("TRACKING_SPOOL_DIR", "TRACKING_SPOOL_FSYNC"):
        spool().close()
        spool.cache_clear()


@lru_cache(maxsize=4096)  # recipients click several links from one address
def truncate_ip(address: str) -> str:
    """The client's network, not its address: IPv4 /24, IPv6 /48."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return ""
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def _client_ip(environ) -> str:
    if getattr(settings, "TRACKING_TRUST_X_FORWARDED_FOR", False):
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0]
    return environ.get("REMOTE_ADDR", "")


def _event(environ, kind: str, delivery_id: int) -> dict:
    prefetch = {h[5:].lower(): environ[h] for h in _PREFETCH_HEADERS if h in environ}
    record = {
        "k": kind,
        "t": time.time(),
        "d": delivery_id,
        "ua": environ.get("HTTP_USER_AGENT", "")[:1000],
        "ip": truncate_ip(_client_ip(environ)),
        "m": environ.get("REQUEST_METHOD", "GET"),
    }
    if prefetch:
        record["hd"] = prefetch
    return record


def _record(record: dict) -> None:
    spool().append(record)
    if settings.TRACKING_INGEST_INLINE:
        # Embedded default (no worker): store at once so the dashboard shows it.
        from tracking.ingest import ingest_spool

        spool().close()
        ingest_spool()


def _not_found(start_response):
    start_response(
        "404 Not Found",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(NOT_FOUND)))]
        + NO_CACHE,
    )
    return [NOT_FOUND]


def click(environ, start_response, token_text: str):
    token = verify_token(token_text)
    if not isinstance(token, ClickToken):
        return _not_found(start_response)
    record = _event(environ, "c", token.delivery_id)
    record["l"] = token.link_id
    record["u"] = token.url
    if token.honeypot:
        record["h"] = 1
    _record(record)
    start_response(
        "302 Found",
        [("Location", token.url), ("Content-Length", "0"), ("Referrer-Policy", "no-referrer")]
        + NO_CACHE,
    )
    return [b""]


def open_pixel(environ, start_response, token_text: str):
    token = verify_token(token_text)
    if not isinstance(token, OpenToken):
        return _not_found(start_response)
    _record(_event(environ, "o", token.delivery_id))
    start_response(
        "200 OK", [("Content-Type", "image/gif"), ("Content-Length", str(len(GIF)))] + NO_CACHE
    )
    return [GIF]


ROUTES = {"/c/": click, "/o/": open_pixel}


def tracking_wsgi(django_app):
    """WSGI app: `/c/<token>` and `/o/<token>` here, everything else to `django_app`."""

    def application(environ, start_response):
        path = environ.get("PATH_INFO", "")
        handler = ROUTES.get(path[:3])
        # Every method: a link checker's OPTIONS or POST is recorded, as unreliable.
        if handler is not None:
            token = path[3:]
            if "/" in token:
                return _not_found(start_response)
            return handler(environ, start_response, token)
        return django_app(environ, start_response)

    return application
