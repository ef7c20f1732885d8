"""The click and open endpoints as plain WSGI: no session, no auth, no ORM, no template.

`/c/<token>` verifies the token (it carries the destination), appends one event to
the local spool and answers 302. `/o/<token>` does the same and answers a 1×1 GIF.
Anything that is not a valid token gets the same neutral 404 page and records
nothing. `tracking_wsgi(django_app)` serves these two paths itself and hands every
other request to Django, so the dashboard's middleware never slows a recipient.

The answer never depends on the disk or the database: a spool that refuses the event
(full, read-only) loses that one event, counted and logged by the spool, and the
recipient still gets the redirect. Only GET and HEAD are recorded (HEAD, as a machine
request); a link checker's OPTIONS or POST gets the answer and records nothing. One
process records the same token requested from the same address with the same method
once per DEDUP_SECONDS: a client hammering one link writes one event a second, not
one per request. On the embedded default (TRACKING_INGEST_INLINE) the events are
stored once the answer is sent; if that fails (the database is down) they stay in
the spool for the next ingestion.
"""

import base64
import ipaddress
import logging
import re
import threading
import time
from collections import OrderedDict
from functools import lru_cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from campaigns.client_address import proxied_client
from tracking.classify import MAX_USER_AGENT_LENGTH
from tracking.failures import FailureLog
from tracking.spool import Spool
from tracking.telemetry import EVENTS_LOST, EVENTS_SPOOLED, HTTP_LATENCY, HTTP_REQUESTS, KIND
from tracking.tokens import ClickToken, OpenToken, verify_token

log = logging.getLogger(__name__)

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
RECORDED_METHODS = frozenset({"GET", "HEAD"})
DEDUP_SECONDS = 1.0
# At most this many requests are remembered (the oldest go first): memory stays bounded,
# and a flood of distinct clicks is recorded in full (a repeat among them may be
# recorded twice, never a click lost).
DEDUP_KEYS = 16384


@lru_cache(maxsize=1)
def spool() -> Spool:
    return Spool(settings.TRACKING_SPOOL_DIR, fsync=settings.TRACKING_SPOOL_FSYNC)


@receiver(setting_changed)
def _new_spool(setting, **kwargs):
    if setting in ("TRACKING_SPOOL_DIR", "TRACKING_SPOOL_FSYNC"):
        spool().close()
        spool.cache_clear()


class RecentRequests:
    """Which requests this process saw in the last `seconds` (a per-process LRU).

    `first(key)` is True when `key` was not seen in the last `seconds`, and then
    remembers it from now; so a key requested continuously is let through once per
    `seconds`. Keys are kept in the order they were let through, which is also their
    age order: expired ones are dropped from the front, in O(1) per request.
    """

    def __init__(self, seconds: float = DEDUP_SECONDS, size: int = DEDUP_KEYS):
        self.seconds, self.size = seconds, size
        self._seen: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def first(self, key, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen < self.seconds:
                return False
            self._seen[key] = now
            self._seen.move_to_end(key)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
            while self._seen:
                oldest = next(iter(self._seen.values()))
                if now - oldest < self.seconds:
                    break
                self._seen.popitem(last=False)
            return True


_recent_clicks = RecentRequests()


# Dotted IPv4 as ipaddress.ip_address accepts it: four decimal octets, no leading zeros.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


@lru_cache(maxsize=4096)  # recipients click several links from one address
def truncate_ip(address: str) -> str:
    """The client's network, not its address: IPv4 /24, IPv6 /48; "" for anything
    that is not an address."""
    address = address.strip()
    if _IPV4.fullmatch(address):  # nearly every client: no ipaddress objects (~15 µs)
        return address[: address.rindex(".")] + ".0"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def _client_ip(environ) -> str:
    if getattr(settings, "TRACKING_TRUST_X_FORWARDED_FOR", False):
        # The entry our proxy appended; the ones before it are the client's to forge.
        forwarded = proxied_client(environ.get("HTTP_X_FORWARDED_FOR", ""))
        if forwarded:
            return forwarded
    return environ.get("REMOTE_ADDR", "")


def _event(environ, kind: str, delivery_id: int, address: str) -> dict:
    prefetch = {h[5:].lower(): environ[h] for h in _PREFETCH_HEADERS if h in environ}
    record = {
        "k": kind,
        "t": time.time(),
        "d": delivery_id,
        "ua": environ.get("HTTP_USER_AGENT", "")[:MAX_USER_AGENT_LENGTH],
        "ip": truncate_ip(address),
        "m": environ.get("REQUEST_METHOD", "GET"),
    }
    if prefetch:
        record["hd"] = prefetch
    return record


_SPOOLED = {kind: EVENTS_SPOOLED.labels(name) for kind, name in KIND.items()}
_LOST = {kind: EVENTS_LOST.labels(name) for kind, name in KIND.items()}


def _record(record: dict) -> bool:
    """Spool one event; True when inline ingestion should follow the answer."""
    try:
        # A refused event is counted and logged by the spool.
        written = spool().append(record) is not None
    except Exception:  # never the recipient's problem: the answer goes out regardless
        log.exception("tracking: an event could not be recorded")
        written = False
    (_SPOOLED if written else _LOST)[record["k"]].inc()
    return written and settings.TRACKING_INGEST_INLINE


class _ThenIngest(list):
    """A response body whose close() (the server's, once the answer is sent) stores
    the spooled events: the embedded default's inline ingestion, after the answer."""

    def close(self):
        ingest_inline()


_inline_failures = FailureLog(
    log,
    "tracking: inline ingestion failed ({error!r}); the events stay in the spool for the "
    "next ingestion. Failed inline ingestions in process {pid}: {count}",
    "tracking: inline ingestion works again. Failed inline ingestions in process {pid}: {count}",
    recovered_level=logging.WARNING,
)


def ingest_inline() -> None:
    """Store the spool now (embedded default). Never raises: when it fails (the
    database is unreachable) the events stay in the spool for the next ingestion,
    and the failure is logged at ERROR (rate-limited, counted exactly)."""
    from django.db import close_old_connections, connection

    from tracking.ingest import ingest_spool

    try:
        spool().close()
        ingest_spool()
    except Exception as error:
        _inline_failures.failure(error)
        # Outside Django's request cycle nothing else drops a broken connection (inside
        # a caller's transaction, the caller's to handle).
        if not connection.in_atomic_block:
            close_old_connections()
    else:
        _inline_failures.success()


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
    ingest = False
    method = environ.get("REQUEST_METHOD", "GET")
    if method in RECORDED_METHODS:
        address = _client_ip(environ)
        record = _event(environ, "c", token.delivery_id, address)
        # A hash stands for the key: a few bytes whatever the token's length.
        if _recent_clicks.first(hash((token_text, address, method, "hd" in record))):
            record["l"] = token.link_id
            record["u"] = token.url
            if token.honeypot:
                record["h"] = 1
            ingest = _record(record)
    start_response(
        "302 Found",
        [("Location", token.url), ("Content-Length", "0"), ("Referrer-Policy", "no-referrer")]
        + NO_CACHE,
    )
    return _ThenIngest([b""]) if ingest else [b""]


def open_pixel(environ, start_response, token_text: str):
    token = verify_token(token_text)
    if not isinstance(token, OpenToken):
        return _not_found(start_response)
    ingest = False
    if environ.get("REQUEST_METHOD", "GET") in RECORDED_METHODS:
        ingest = _record(_event(environ, "o", token.delivery_id, _client_ip(environ)))
    start_response(
        "200 OK", [("Content-Type", "image/gif"), ("Content-Length", str(len(GIF)))] + NO_CACHE
    )
    return _ThenIngest([GIF]) if ingest else [GIF]


ROUTES = {"/c/": click, "/o/": open_pixel}
# Route groups of the request metrics (tracking/telemetry.py), children bound once.
_GROUPS = {"/c/": "redirect", "/o/": "pixel"}
_LATENCY = {prefix: HTTP_LATENCY.labels(group) for prefix, group in _GROUPS.items()}
_REQUESTS = {
    (prefix, status): HTTP_REQUESTS.labels(group, status)
    for prefix, group in _GROUPS.items()
    for status in ("200", "302", "404")
}


def tracking_wsgi(django_app):
    """WSGI app: `/c/<token>` and `/o/<token>` here, everything else to `django_app`."""

    def application(environ, start_response):
        path = environ.get("PATH_INFO", "")
        prefix = path[:3]
        handler = ROUTES.get(prefix)
        # Every method gets its answer here (a link checker's OPTIONS too); only GET
        # and HEAD are recorded.
        if handler is not None:
            started = time.perf_counter()
            token = path[3:]
            if "/" in token:
                answer = _not_found(start_response)
                status = "404"
            else:
                statuses = []

                def starting(status_line, headers, *exc_info):
                    statuses.append(status_line[:3])
                    return start_response(status_line, headers, *exc_info)

                answer = handler(environ, starting, token)
                status = statuses[0] if statuses else "500"
            counter = _REQUESTS.get((prefix, status))
            if counter is None:  # never for these handlers' answers; bounded anyway
                counter = HTTP_REQUESTS.labels(_GROUPS[prefix], status)
            counter.inc()
            _LATENCY[prefix].observe(time.perf_counter() - started)
            return answer
        return django_app(environ, start_response)

    return application
