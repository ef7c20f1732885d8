"""Real servers and real network records for the image tests.

``ImageServer``: a local HTTP(S) server with the images (and the traps) the tests
fetch; it counts the connections it accepts and knows how much of a big body it
managed to send. ``watch_network``: every socket connect and name lookup this
process makes meanwhile, from Python's audit hooks (urllib3 and the socket module
raise them), so a test can show that a refused URL was never connected to.

Image bytes are made here with hand-written PNG chunks or Pillow, never by the code
under test.
"""

import http.server
import io
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from contextlib import contextmanager

from PIL import Image

PINK = (255, 0, 170)
GREEN = (20, 200, 90)
MAGENTA = (230, 40, 150)
ORANGE = (250, 140, 10)
FIFTY_MB = 50 * 1024 * 1024


def png(size, colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def two_halves_png(width, height, left, right) -> bytes:
    """A PNG whose left half is ``left`` and right half ``right``."""
    image = Image.new("RGB", (width, height), left)
    image.paste(right, (width // 2, 0, width, height))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg(size, colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG", quality=95)
    return out.getvalue()


def animated_gif(size, colours) -> bytes:
    frames = [Image.new("RGB", size, colour) for colour in colours]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def declared_png(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A small PNG, written chunk by chunk, that declares ``width`` × ``height`` pixels
    of 1-bit grey: a decompression bomb when the size is large (a few hundred bytes
    claiming gigabytes once decoded). ``idat`` replaces its pixel data (garbage makes
    a corrupt image)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    data = idat if idat is not None else zlib.compress(b"\0" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(1)</script><rect width='10' height='10' fill='red'/></svg>"
)

# path -> (content type, body)
FILES = {
    "/pink.png": ("image/png", png((30, 20), PINK)),
    "/halves.png": ("image/png", two_halves_png(300, 120, GREEN, MAGENTA)),
    "/orange.jpg": ("image/jpeg", jpeg((40, 40), ORANGE)),
    "/page.html": ("text/html; charset=utf-8", b"<!doctype html><p>Not an image</p>"),
    "/bomb.png": ("image/png", declared_png(30_000, 30_000)),
    "/bomb-8000.png": ("image/png", declared_png(8_000, 8_000)),
    "/corrupt.png": ("image/png", declared_png(64, 64, idat=b"this is no zlib stream" * 8)),
    "/truncated.jpg": ("image/jpeg", jpeg((400, 300), ORANGE)[:700]),
    "/logo.svg": ("image/svg+xml", SVG),
    "/svg-as-png.png": ("image/png", SVG),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, dict(self.headers)))
        path, _, query = self.path.partition("?")
        if path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query.removeprefix("to="))
            self.end_headers()
        elif path in ("/huge.png", "/huge-streamed.png"):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            if path == "/huge.png":
                self.send_header("Content-Length", str(FIFTY_MB))
            self.end_headers()
            self._send_zeros(FIFTY_MB)
        elif path == "/silent.png":
            server.release.wait(30)  # answers nothing until the test ends
        elif path == "/trickle.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                while not server.release.is_set():
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
        elif path in FILES:
            content_type, body = FILES[path]
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def _send_zeros(self, total: int) -> None:
        block = b"\0" * 65536
        sent = 0
        try:
            while sent < total:
                self.wfile.write(block)
                sent += len(block)
                self.server.big_sent = sent
            self.server.big_completed = True
        except OSError:  # the client hung up
            pass

    def log_message(self, *args):
        pass


class ImageServer(http.server.ThreadingHTTPServer):
    """The local image server. ``accepted`` counts TCP connections it accepted."""

    daemon_threads = True

    def __init__(self, host="127.0.0.1", tls_context: ssl.SSLContext | None = None):
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.accepted = 0
        self.requests: list[tuple[str, dict]] = []
        self.big_sent = 0
        self.big_completed = False
        self.release = threading.Event()
        super().__init__((host, 0), _Handler)
        if tls_context is not None:
            self.socket = tls_context.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self.host = host
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if tls_context else "http"
        self.url = f"{scheme}://{shown}:{self.port}"
        self.netloc = f"{shown}:{self.port}"

    def get_request(self):
        request = super().get_request()
        self.accepted += 1
        return request

    def handle_error(self, request, client_address):
        pass  # a refused TLS handshake or a hung-up client is part of the test


@contextmanager
def serving(host="127.0.0.1", tls_context=None):
    server = ImageServer(host, tls_context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


# --- What the process did on the network ------------------------------------------------

_watchers: list[list] = []
_watch_lock = threading.Lock()


def _audit(event: str, args) -> None:
    if not _watchers or event not in ("socket.connect", "socket.getaddrinfo"):
        return
    entry = ("connect", args[1]) if event == "socket.connect" else ("lookup", args[0])
    with _watch_lock:
        for log in _watchers:
            log.append(entry)


sys.addaudithook(_audit)  # once per process: this module is imported once


@contextmanager
def watch_network():
    """Yield a list that receives ("connect", address) and ("lookup", host) for every
    socket connect and getaddrinfo this process makes (any thread) meanwhile."""
    log: list = []
    with _watch_lock:
        _watchers.append(log)
    try:
        yield log
    finally:
        with _watch_lock:
            _watchers.remove(log)


def connects(log) -> list:
    return [address for kind, address in log if kind == "connect"]
