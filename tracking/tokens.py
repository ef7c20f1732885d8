"""Signed tracking tokens: what /c/, /o/ and /u/ need, carried in the URL itself.

The redirect hot path reads nothing from the database, so a click token holds its
delivery, its link and its destination, sealed with an HMAC so nobody can point our
domain at a URL we did not send.

Binary layout (then base64url without padding):

    byte 0    kind (bits 0-2) | flags (honeypot 0x08, deflated URL 0x10,
              URL is http:// 0x20, URL kept verbatim 0x40; 0x80 reserved, must be 0)
    byte 1    key id: first byte of a hash of the signing key, so verification
              tries only the key(s) it names
    varint    delivery_id (unsigned LEB128, shortest form)
    click only:
    varint    link_id
    rest      the destination without its "https://" / "http://" prefix,
              raw-deflated with a preset dictionary when that is shorter
    16 bytes  HMAC-SHA256(key, all bytes above), truncated

The layout and the preset dictionary are a wire format: tokens live on in sent
emails for years, so change neither; add a new kind instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import quote

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

MAC_BYTES = 16
MAX_ID = 2**63 - 1  # PostgreSQL bigint
MAX_URL_LENGTH = 4096
# Largest payload sign_token makes, in base64 characters; longer input is refused unread.
MAX_TOKEN_CHARS = (2 + 10 + 10 + MAX_URL_LENGTH + MAC_BYTES) * 4 // 3 + 4

KIND_CLICK = 1
KIND_OPEN = 2
KIND_UNSUBSCRIBE = 3
_KIND_MASK = 0x07
FLAG_HONEYPOT = 0x08
FLAG_DEFLATED = 0x10
FLAG_HTTP = 0x20
FLAG_VERBATIM = 0x40
_FLAG_RESERVED = 0x80

# Preset deflate dictionary: common URL pieces, the most frequent last (closest).
# Frozen with the wire format above.
URL_ZDICT = (
    b"index.htmlproducts/collections/blog/account/category/item?id=.php.aspx.html"
    b"&utm_term=&utm_content=&utm_campaign=?utm_source=newsletter&utm_medium=email"
    b".co.uk/.org/.net/.de/.io/.com/www."
)

_KEY_ID_LABEL = b"clickmap.tracking.token-key-id\x00"
_DERIVE_LABEL = b"clickmap.tracking.tokens.v1"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DNS_HOST = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
# Bytes the ASCII fast path refuses anywhere: C0 controls, space, DEL, backslash.
_ASCII_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")
# Outside ASCII: controls, invisible format characters (bidi overrides, zero-width),
# spaces and lone surrogates (which cannot even be encoded).
_UNICODE_FORBIDDEN = frozenset(("Cc", "Cf", "Cs", "Zs", "Zl", "Zp"))
_AUTHORITY_END = re.compile(r"[/?#]")
# Kept as-is when re-quoting path, query and fragment; everything else is %-encoded.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]~_"
_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9!#$%&'()*+,\-./:;=?@\[\]~_]")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass(frozen=True)
class ClickToken:
    delivery_id: int
    link_id: int
    url: str
    honeypot: bool = False


@dataclass(frozen=True)
class OpenToken:
    delivery_id: int


@dataclass(frozen=True)
class UnsubscribeToken:
    delivery_id: int


Token = ClickToken | OpenToken | UnsubscribeToken


# --- keys -------------------------------------------------------------------------


def signing_keys() -> list[bytes]:
    """The keys tokens are checked against; the first one signs.

    TRACKING_KEYS, a list of secrets, oldest last; when empty, one key derived from
    SECRET_KEY under a label of its own (plus SECRET_KEY_FALLBACKS, verify-only, so
    rotating SECRET_KEY the Django way keeps sent links working). Cached: the click hot
    path asks on every request; a changed setting (tests) clears the cache.
    """
    return list(_signing_keys())


@receiver(setting_changed)
def _keys_changed(setting, **kwargs):
    if setting in ("TRACKING_KEYS", "SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        _signing_keys.cache_clear()


@lru_cache(maxsize=1)
def _signing_keys() -> tuple[bytes, ...]:
    configured = [
        secret.encode() if isinstance(secret, str) else bytes(secret)
        for secret in getattr(settings, "TRACKING_KEYS", None) or []
        if secret
    ]
    if configured:
        return tuple(configured)
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return tuple(_derived_key(secret) for secret in secrets if secret)


@lru_cache(maxsize=16)
def _derived_key(secret: str | bytes) -> bytes:
    secret_bytes = secret.encode() if isinstance(secret, str) else secret
    return hmac.digest(secret_bytes, _DERIVE_LABEL, "sha256")


@lru_cache(maxsize=64)
def _key_id(key: bytes) -> int:
    return hashlib.sha256(_KEY_ID_LABEL + key).digest()[0]


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.digest(key, payload, "sha256")[:MAC_BYTES]


# --- destinations -----------------------------------------------------------------


def safe_destination(url: str) -> str | None:
    """The normalised http(s) URL a click may redirect to, or None when it must not.

    Refused: any scheme but http/https (javascript:, data:, vbscript:, file: …),
    relative and scheme-relative URLs, a missing or malformed host, credentials
    (user@host, the classic lookalike trick), control characters, whitespace and
    invisible format characters anywhere inside, backslashes, and URLs longer than
    MAX_URL_LENGTH. Normalised: surrounding ASCII whitespace dropped, scheme and host
    lower-cased, IDN host in punycode, default port dropped, non-ASCII and unsafe
    characters of path/query/fragment percent-encoded. Idempotent:
    safe_destination(safe_destination(u)) == safe_destination(u).
    """
    if not isinstance(url, str):
        return None
    url = url.strip(" \t\n\r\f")
    if not url or len(url) > MAX_URL_LENGTH or _has_forbidden_char(url):
        return None
    match = _SCHEME.match(url)
    if match is None:
        return None
    scheme = match.group(1).lower()
    rest = url[match.end() :]
    if scheme not in _DEFAULT_PORTS or not rest.startswith("//"):
        return None
    rest = rest[2:]
    match = _AUTHORITY_END.search(rest)
    end = match.start() if match else len(rest)
    authority, tail = rest[:end], rest[end:]
    host_port = _host_port(authority, scheme)
    if host_port is None:
        return None
    if _NEEDS_QUOTING.search(tail):
        tail = quote(tail, safe=_URL_SAFE)
    normalised = f"{scheme}://{host_port}{tail}"
    return normalised if len(normalised) <= MAX_URL_LENGTH else None


def _has_forbidden_char(url: str) -> bool:
    if url.isascii():
        return _ASCII_FORBIDDEN.search(url) is not None
    return any(
        _ASCII_FORBIDDEN.match(char) is not None
        if char.isascii()
        else unicodedata.category(char) in _UNICODE_FORBIDDEN
        for char in url
    )


def _host_port(authority: str, scheme: str) -> str | None:
    """`host[:port]` normalised, or None; userinfo is refused, not stripped."""
    if not authority or "@" in authority:
        return None
    if authority.startswith("["):
        inner, bracket, port = authority[1:].partition("]")
        host = _ipv6_host(inner) if bracket else None
        if port and not port.startswith(":"):
            return None
        port = port[1:]
    else:
        host_text, _, port = authority.partition(":")
        if ":" in port:
            return None
        host = _dns_host(host_text)
    if host is None:
        return None
    if port:
        if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
            return None
        port = str(int(port))
    if not port or port == _DEFAULT_PORTS[scheme]:
        return host
    return f"{host}:{port}"


def _ipv6_host(text: str) -> str | None:
    if not text.isascii() or "%" in text:
        return None
    try:
        return f"[{ipaddress.IPv6Address(text).compressed}]"
    except ValueError:
        return None


def _dns_host(text: str) -> str | None:
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    host = text.lower()
    if len(host) > 254 or not _DNS_HOST.fullmatch(host):
        return None
    return host


# --- encoding ---------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None unless a shortest-form varint <= MAX_ID."""
    value = shift = 0
    for index in range(pos, min(pos + 10, len(data))):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if (byte == 0 and index > pos) or value > MAX_ID:
                return None
            return value, index + 1
        shift += 7
    return None


def _encode_payload(token: Token, key_id: int) -> bytes:
    """The bytes the MAC covers. Checks layout only, never URL safety: that is
    sign_token's job (tests use this to forge correctly signed unsafe tokens)."""
    if isinstance(token, OpenToken):
        return bytes((KIND_OPEN, key_id)) + _varint(token.delivery_id)
    if isinstance(token, UnsubscribeToken):
        return bytes((KIND_UNSUBSCRIBE, key_id)) + _varint(token.delivery_id)
    flags = KIND_CLICK | (FLAG_HONEYPOT if token.honeypot else 0)
    if token.url.startswith("https://"):
        body = token.url[8:].encode()
    elif token.url.startswith("http://"):
        body, flags = token.url[7:].encode(), flags | FLAG_HTTP
    else:
        body, flags = token.url.encode(), flags | FLAG_VERBATIM
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=URL_ZDICT)
    deflated = compressor.compress(body) + compressor.flush()
    if len(deflated) < len(body):
        body, flags = deflated, flags | FLAG_DEFLATED
    return bytes((flags, key_id)) + _varint(token.delivery_id) + _varint(token.link_id) + body


def _decode_payload(payload: bytes) -> Token | None:
    """The token a MAC-verified payload holds, or None when malformed or unsafe."""
    if len(payload) < 3 or payload[0] & _FLAG_RESERVED:
        return None
    kind, flags = payload[0] & _KIND_MASK, payload[0] & ~_KIND_MASK
    read = _read_varint(payload, 2)
    if read is None:
        return None
    delivery_id, pos = read
    if kind in (KIND_OPEN, KIND_UNSUBSCRIBE):
        if flags or pos != len(payload):
            return None
        return OpenToken(delivery_id) if kind == KIND_OPEN else UnsubscribeToken(delivery_id)
    if kind != KIND_CLICK or (flags & FLAG_HTTP and flags & FLAG_VERBATIM):
        return None
    read = _read_varint(payload, pos)
    if read is None:
        return None
    link_id, pos = read
    body = payload[pos:]
    if flags & FLAG_DEFLATED:
        body = _inflate(body)
        if body is None:
            return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if flags & FLAG_HTTP:
        text = "http://" + text
    elif not flags & FLAG_VERBATIM:
        text = "https://" + text
    url = safe_destination(text)  # defence in depth: a leaked key still cannot send javascript:
    if url is None:
        return None
    return ClickToken(delivery_id, link_id, url, honeypot=bool(flags & FLAG_HONEYPOT))


def _inflate(data: bytes) -> bytes | None:
    inflater = zlib.decompressobj(-15, zdict=URL_ZDICT)
    try:
        out = inflater.decompress(data, MAX_URL_LENGTH + 1)
    except zlib.error:
        return None
    if len(out) > MAX_URL_LENGTH or not inflater.eof or inflater.unused_data:
        return None
    return out


def _seal(payload: bytes, key: bytes) -> str:
    return base64.urlsafe_b64encode(payload + _mac(key, payload)).rstrip(b"=").decode("ascii")


def _unseal(text: str) -> bytes | None:
    """The raw bytes of a canonical unpadded base64url string, or None."""
    if len(text) % 4 == 1 or not _BASE64URL.fullmatch(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # Unused low bits of the last character would let two strings decode alike.
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != text.encode("ascii"):
        return None
    return raw


# --- public API -------------------------------------------------------------------


def sign_token(token: Token, keys: Sequence[bytes] | None = None) -> str:
    """The URL-safe signed text of `token`, signed with the first of `keys`
    (default: signing_keys()).

    A click token's URL is stored as safe_destination(url); ValueError when that is
    None, when an id is not an int in 0..2**63-1, or when there is no key.
    Invariant: verify_token(sign_token(t)) == t with t.url normalised.
    """
    keys = signing_keys() if keys is None else keys
    if not keys:
        raise ValueError("no tracking signing key configured")
    if not isinstance(token, ClickToken | OpenToken | UnsubscribeToken):
        raise ValueError(f"not a tracking token: {token!r}")
    ids = [token.delivery_id]
    if isinstance(token, ClickToken):
        ids.append(token.link_id)
        url = safe_destination(token.url)
        if url is None:
            raise ValueError(f"unsafe click destination: {token.url!r}")
        if not isinstance(token.honeypot, bool):
            raise ValueError("honeypot must be a bool")
        token = replace(token, url=url)
    for value in ids:
        if type(value) is not int or not 0 <= value <= MAX_ID:
            raise ValueError(f"token id out of range: {value!r}")
    key = bytes(keys[0])
    return _seal(_encode_payload(token, _key_id(key)), key)


def verify_token(text: str, keys: Sequence[bytes] | None = None) -> Token | None:
    """The token `text` carries when a listed key signed it, else None.

    None for anything forged, altered, truncated, signed by a key no longer listed,
    non-canonical, oversized, non-ASCII or naming an unsafe destination; never raises
    on any input. Cost: one base64 decode and one HMAC per key sharing the key id.
    """
    if not isinstance(text, str) or len(text) > MAX_TOKEN_CHARS:
        return None
    raw = _unseal(text)
    if raw is None or len(raw) < 3 + MAC_BYTES:
        return None
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    keys = signing_keys() if keys is None else keys
    for key in keys:
        key = bytes(key)
        if _key_id(key) == payload[1] and hmac.compare_digest(_mac(key, payload), mac):
            return _decode_payload(payload)
    return None
