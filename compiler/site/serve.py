"""A small static file server with the MIME types a kiln page needs (`.wasm`, `.mjs`, `.json`).
Several folders can be mounted under URL prefixes, e.g. {"/": site, "/tvmjs/": bundle}.

`kiln serve` and `kiln demo` turn on `site_headers` (the CSP and friends of headers.py); the
tests' harness pages, served by the same class, get only the cross-origin isolation headers (so
that they can use threads), or none (`isolated=False`). Either way: no directory listings,
a malformed request path is a 400 (never a traceback), idle connections are closed after
`idle_timeout_s`, and the listen backlog takes a page's burst of parallel shard fetches."""

from __future__ import annotations

import http.server
import sys
import threading
from functools import partial
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

from kiln.site.headers import HTTP_HEADERS, ISOLATION_HEADERS

MIME_TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".json": "application/json",
    ".html": "text/html",
    ".bin": "application/octet-stream",
}
# The loader fetches a model's shards in parallel and this server speaks HTTP/1.0 (a connection per
# request): socketserver's default backlog of 5 reset connections under such a burst.
LISTEN_BACKLOG = 256
IDLE_TIMEOUT_S = 30.0
# A response is written in chunks of this size and the timeout bounds each chunk's write, so a
# download is cut only when the client takes `idle_timeout_s` to accept 64 KiB, never for its length.
WRITE_CHUNK = 64 * 1024


def request_path(target: str) -> str | None:
    """The request target reduced to path and query, or None if it is not a sane path: not absolute,
    not UTF-8 once percent-decoded, a control character (NUL...) in it, or a `..` segment."""
    try:
        parts = urlsplit(target)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 host in an absolute-form target
        return None
    if parts.scheme or parts.netloc:  # absolute-form, as sent to proxies: keep only path and query
        target = parts.path + (f"?{parts.query}" if parts.query else "")
    path = urlsplit(target).path
    if not path.startswith("/"):
        return None
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 0x20 or c == "\x7f" for c in decoded) or ".." in decoded.split("/"):
        return None
    return target


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def __init__(self, *args, mounts: dict[str, Path], headers: dict[str, str], idle_timeout_s: float, **kwargs):
        self.mounts = mounts
        self.extra_headers = headers
        self.timeout = idle_timeout_s  # StreamRequestHandler makes it the socket's timeout
        super().__init__(*args, **kwargs)

    def send_head(self):
        path = request_path(self.path)
        if path is None:
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad request path")
            return None
        self.path = path
        return super().send_head()

    def translate_path(self, path: str) -> str:
        url_path = unquote(urlsplit(path).path)
        # Longest prefix wins, so "/tvmjs/" shadows "/".
        for prefix in sorted(self.mounts, key=len, reverse=True):
            if url_path.startswith(prefix):
                root = self.mounts[prefix].resolve()
                # resolve() also follows symlinks: one that points out of the root is refused too.
                target = (root / url_path[len(prefix):]).resolve()
                if target == root or root in target.parents:
                    return str(target)
        return str(Path("/nonexistent") / "kiln")

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND, "File not found")
        return None

    def copyfile(self, source, outputfile):
        while chunk := source.read(WRITE_CHUNK):
            outputfile.write(chunk)

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        for name, value in self.extra_headers.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 - signature set by the base class
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG

    def handle_error(self, request, client_address):
        # A browser that cancels a download or closes the tab is no error of the server's.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class StaticServer:
    """Serve `mounts` on host:port (port 0 picks a free one); as a context manager, from a
    background thread, else through serve_forever(). `site_headers` sends the site's security
    headers (headers.HTTP_HEADERS); otherwise responses carry only the cross-origin isolation
    headers, or none with `isolated=False`."""

    def __init__(self, mounts: dict[str, str | Path], port: int = 0, host: str = "127.0.0.1", *,
                 site_headers: bool = False, isolated: bool = True, idle_timeout_s: float = IDLE_TIMEOUT_S):
        normalized = {p if p.endswith("/") else p + "/": Path(d) for p, d in mounts.items()}
        headers = HTTP_HEADERS if site_headers else ISOLATION_HEADERS if isolated else {}
        handler = partial(_Handler, mounts=normalized, headers=headers, idle_timeout_s=idle_timeout_s)
        self.httpd = _Server((host, port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()

    def __enter__(self) -> "StaticServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
