"""The guarded image fetcher: an email's remote image over HTTP(S), and nothing else.

Tenant HTML names the URLs, so every fetch is a chance of server-side request forgery.
The rules, each enforced here:

- http and https only; a URL with credentials (``user:pass@``) is refused, and no
  cookie, credential or referrer is ever sent.
- The host is resolved once, and every address it resolves to must be public
  (``address_refusal``): no loopback, private, shared (CGNAT), link-local (the cloud
  metadata address among them), multicast, reserved or unspecified address, IPv6
  included, and IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4, Teredo)
  are judged by that address.
- The connection goes to the very address that was checked: no second lookup, so a
  name that answers differently the second time (DNS rebinding) gains nothing. The
  Host header, TLS SNI and certificate check use the URL's host.
- Redirects are followed here, at most ``Limits.redirects``, each hop checked anew.
- Limits: bytes (Content-Length first, then while reading), time to connect, time
  for the whole fetch. Compressed transfer encodings are refused (no gzip bomb).
- ``settings.IMAGE_FETCH_ALLOWED_HOSTS`` names hosts (``host`` or ``host:port``) that
  skip the address check, for tests; empty by default.
"""

import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import urllib3
from django.conf import settings
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from campaigns.images import MAX_BYTES, ImageRefused, content_type_refusal

USER_AGENT = "Clickmap image fetcher (email previews)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024

# Ranges ipaddress's is_global lets through (Python 3.11) that are no public host.
_NOT_PUBLIC = [
    (ipaddress.ip_network("224.0.0.0/4"), "multicast"),
    (ipaddress.ip_network("192.0.0.0/24"), "reserved"),  # IETF protocol assignments
    (ipaddress.ip_network("192.88.99.0/24"), "reserved"),  # retired 6to4 relays
    (ipaddress.ip_network("::/96"), "reserved"),  # retired IPv4-compatible IPv6
    (ipaddress.ip_network("64:ff9b:1::/48"), "private"),  # local-use NAT64
    (ipaddress.ip_network("fec0::/10"), "private"),  # retired site-local
    (ipaddress.ip_network("ff00::/8"), "multicast"),
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_KIND_WORDS = {
    "loopback": "a loopback address",
    "private": "a private address",
    "cgnat": "a carrier-grade NAT address (RFC 6598)",
    "link-local": "a link-local address",
    "metadata": "the cloud metadata address",
    "multicast": "a multicast address",
    "unspecified": "the unspecified address",
    "reserved": "a reserved address",
    "not-public": "not a public address",
}


@dataclass(frozen=True)
class Limits:
    """What one fetch may take."""

    max_bytes: int = MAX_BYTES
    connect_seconds: float = 5.0
    total_seconds: float = 20.0
    redirects: int = 5


LIMITS = Limits()


@dataclass(frozen=True)
class Fetched:
    """An image response's body, within the limits; ``url`` is where it came from
    after redirects."""

    url: str
    content_type: str
    data: bytes


def fetch_image(url: str, *, allowed_hosts=None, limits: Limits = LIMITS) -> Fetched:
    """GET ``url`` under the rules above and return its body.

    ``allowed_hosts`` defaults to ``settings.IMAGE_FETCH_ALLOWED_HOSTS``. Raises
    ImageRefused, whose ``code`` says which rule: ``bad-url``, ``scheme``,
    ``credentials``, ``dns``, ``address`` (nothing was connected to), ``connect``,
    ``tls``, ``timeout``, ``http-status``, ``redirects``, ``too-big``, ``encoding``,
    ``not-image``, ``svg``, ``unsupported``, ``http``.
    """
    if allowed_hosts is None:
        allowed_hosts = getattr(settings, "IMAGE_FETCH_ALLOWED_HOSTS", [])
    allowed = _allowed(allowed_hosts)
    deadline = time.monotonic() + limits.total_seconds
    for _hop in range(limits.redirects + 1):
        target = _Target.of(url, allowed)
        response = target.get(limits, deadline)
        try:
            if response.status in _REDIRECTS:
                location = (response.headers.get("Location") or "").strip()
                if not location:
                    raise ImageRefused("http-status", f"HTTP {response.status} without a Location.")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise ImageRefused("http-status", f"The server answered HTTP {response.status}.")
            content_type = response.headers.get("Content-Type", "")
            if refusal := content_type_refusal(content_type):
                raise refusal
            encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding != "identity":
                raise ImageRefused("encoding", f"The image was sent {encoding}-compressed.")
            data = _body(response, limits, deadline)
            return Fetched(url=url, content_type=content_type, data=data)
        finally:
            response.release_conn()
            target.close()
    raise ImageRefused("redirects", f"More than {limits.redirects} redirects.")


def address_refusal(address: str) -> tuple[str, str] | None:
    """(kind, text) when a connection to ``address`` (an IP address) is refused, None
    when it is a public address. IPv6 forms that embed an IPv4 address (mapped
    ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo) are judged
    by the IPv4 addresses they carry too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6:
        # Mapped and NAT64 addresses reach the IPv4 address they carry: its verdict is theirs.
        carried = ip.ipv4_mapped or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        )
        if carried is not None:
            if refusal := address_refusal(str(carried)):
                return refusal[0], f"{ip} carries {carried}, {_KIND_WORDS[refusal[0]]}"
            return None
        for inner in (ip.sixtofour, *(ip.teredo or ())):
            if inner is not None and (refusal := address_refusal(str(inner))):
                return refusal[0], f"{ip} carries {inner}, {_KIND_WORDS[refusal[0]]}"
    kind = _kind(ip)
    return (kind, f"{ip} is {_KIND_WORDS[kind]}") if kind else None


def _kind(ip) -> str | None:
    if ip in _METADATA:
        return "metadata"
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.version == 4 and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "cgnat"
    for network, kind in _NOT_PUBLIC:
        if ip.version == network.version and ip in network:
            return kind
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not-public"
    return None


def _allowed(entries) -> set[tuple[str, int | None]]:
    """IMAGE_FETCH_ALLOWED_HOSTS as (host, port or None for any port)."""
    allowed = set()
    for entry in entries:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        else:
            host, port = entry, ""
        allowed.add((host, int(port) if port.isdigit() else None))
    return allowed


@dataclass
class _Target:
    """One hop: the URL taken apart, its host resolved and every address checked."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: list[str]
    pool: object = None

    @classmethod
    def of(cls, url: str, allowed: set) -> "_Target":
        try:
            parts = urlsplit(url.strip())
            port = parts.port
            host = parts.hostname or ""
        except ValueError:
            raise ImageRefused("bad-url", "The image URL cannot be read.") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            shown = scheme or "(none)"
            raise ImageRefused("scheme", f"Only http and https are fetched, not {shown}.")
        if "@" in parts.netloc:
            raise ImageRefused("credentials", "URLs with a user name or password are not fetched.")
        if not host:
            raise ImageRefused("bad-url", "The image URL has no host.")
        try:
            host = host.encode("idna").decode("ascii") if not host.isascii() else host
        except UnicodeError:
            raise ImageRefused("bad-url", "The image URL's host name is not valid.") from None
        port = port or (443 if scheme == "https" else 80)
        path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
        addresses = _resolve(host, port)
        if (host, port) not in allowed and (host, None) not in allowed:
            for address in addresses:
                if refusal := address_refusal(address):
                    _kind_name, text = refusal
                    said = f"Refused: {text}." if host == address else f"Refused {host} ({text})."
                    raise ImageRefused("address", said)
        return cls(scheme, host, port, path, addresses)

    def get(self, limits: Limits, deadline: float):
        """The response's head (the body is read by the caller), from the first of the
        checked addresses that accepts a connection."""
        problem = None
        for address in self.addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            timeout = urllib3.Timeout(
                connect=min(limits.connect_seconds, remaining), read=remaining
            )
            self.close()
            self.pool = self._pool(address, timeout)
            try:
                return self.pool.urlopen(
                    "GET",
                    self.path,
                    headers=self._headers(),
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=False,
                    decode_content=False,
                    timeout=timeout,
                )
            except (ConnectTimeoutError, NewConnectionError) as error:
                problem = error  # the next address may answer
                continue
            except ReadTimeoutError:
                raise ImageRefused("timeout", "The server took too long to answer.") from None
            except SSLError as error:
                raise ImageRefused("tls", f"The TLS connection failed ({error}).") from None
            except (ProtocolError, urllib3.exceptions.HTTPError, OSError) as error:
                raise ImageRefused("http", f"The request failed ({error}).") from None
        # NewConnectionError is a ConnectTimeoutError too in urllib3: test it first.
        if isinstance(problem, NewConnectionError):
            raise ImageRefused("connect", f"Could not connect to {self.host}.")
        raise ImageRefused("timeout", f"Connecting to {self.host} took too long.")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _pool(self, address: str, timeout):
        # The pool's host is the checked address itself: urllib3 never resolves a name.
        if self.scheme == "https":
            return urllib3.HTTPSConnectionPool(
                address,
                self.port,
                timeout=timeout,
                maxsize=1,
                retries=False,
                cert_reqs="CERT_REQUIRED",
                ssl_context=ssl.create_default_context(),
                server_hostname=self.host,
                assert_hostname=self.host,
            )
        return urllib3.HTTPConnectionPool(
            address, self.port, timeout=timeout, maxsize=1, retries=False
        )

    def _headers(self) -> dict:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return {
            "Host": host if self.port == default else f"{host}:{self.port}",
            "User-Agent": USER_AGENT,
            "Accept": "image/png,image/jpeg,image/gif,image/webp",
            "Accept-Encoding": "identity",
        }


def _resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an address literal: itself), in the
    resolver's order, without duplicates."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise ImageRefused("dns", f"The host {host} does not resolve.") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise ImageRefused("dns", f"The host {host} does not resolve.")
    return addresses


def _body(response, limits: Limits, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > limits.max_bytes:
        raise ImageRefused("too-big", _too_big(limits, int(declared)))
    chunks, size = [], 0
    try:
        while True:
            if time.monotonic() > deadline:
                raise ImageRefused("timeout", "The image took too long to download.")
            # read1: what has arrived, so a trickling server meets the deadline too.
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limits.max_bytes:
                raise ImageRefused("too-big", _too_big(limits))
            chunks.append(chunk)
    except ReadTimeoutError:
        raise ImageRefused("timeout", "The image took too long to download.") from None
    except (ProtocolError, urllib3.exceptions.HTTPError, OSError) as error:
        raise ImageRefused("http", f"The download broke off ({error}).") from None
    return b"".join(chunks)


def _too_big(limits: Limits, declared: int | None = None) -> str:
    limit = f"{limits.max_bytes / 1_048_576:g} MB"
    if declared is not None:
        return f"The image is {declared / 1_048_576:.1f} MB; images may be at most {limit}."
    return f"The image is over {limit}; images may be at most {limit}."
