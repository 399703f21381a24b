"""A small static file server on 127.0.0.1 with the MIME types a kiln page needs (`.wasm`, `.mjs`,
`.json`). Several folders can be mounted under URL prefixes, e.g. {"/": site, "/tvmjs/": bundle}."""

from __future__ import annotations

import http.server
import threading
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlsplit

MIME_TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".json": "application/json",
    ".html": "text/html",
    ".bin": "application/octet-stream",
}


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def __init__(self, *args, mounts: dict[str, Path], **kwargs):
        self.mounts = mounts
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        url_path = unquote(urlsplit(path).path)
        # Longest prefix wins, so "/tvmjs/" shadows "/".
        for prefix in sorted(self.mounts, key=len, reverse=True):
            if url_path.startswith(prefix):
                root = self.mounts[prefix].resolve()
                target = (root / url_path[len(prefix):]).resolve()
                if target == root or root in target.parents:
                    return str(target)
        return str(Path("/nonexistent") / "kiln")

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 - signature set by the base class
        pass


class StaticServer:
    """Serve `mounts` on host:port (port 0 picks a free one); as a context manager, from a
    background thread, else through serve_forever()."""

    def __init__(self, mounts: dict[str, str | Path], port: int = 0, host: str = "127.0.0.1"):
        normalized = {p if p.endswith("/") else p + "/": Path(d) for p, d in mounts.items()}
        handler = partial(_Handler, mounts=normalized)
        self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
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
