"""`kiln serve` (compiler/site/serve.py) against hostile and heavy clients: the site's security headers on
every response, no directory listing, malformed paths answered 400 without a traceback, no way out of
the served folder, a burst of 200 parallel shard requests all answered, idle connections closed,
slow but active downloads not cut, and the Web Worker's fetches held to the site's origin by the
header policy. The policy is site/headers.py's; the README's host snippets must spell the same."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from kiln import toolchain
from kiln.site import headers as site_headers
from kiln.cli import listen
from kiln.site.serve import StaticServer

SHARD = os.urandom(64 * 1024)


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    (root / "models" / "m").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>t</title>")
    (root / "models.json").write_text('{"models": []}')
    (root / "models" / "m" / "params_shard_0.bin").write_bytes(SHARD)
    (tmp_path / "secret.txt").write_text("SECRET")
    (root / "models" / "link.txt").symlink_to(tmp_path / "secret.txt")
    return root


def raw_request(server, target: bytes, method: bytes = b"GET", timeout: float = 5) -> tuple[int, dict, bytes]:
    """Send one request exactly as given (no client-side normalization); (status, headers, body)."""
    with socket.create_connection(server.httpd.server_address[:2], timeout=timeout) as conn:
        conn.sendall(method + b" " + target + b" HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/"), f"{target!r}: no HTTP response (got {data[:80]!r})"
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def test_kiln_serve_sends_the_site_headers(site):
    csp = site_headers.HTTP_HEADERS["Content-Security-Policy"]
    directives = dict(d.split(" ", 1) for d in csp.split("; "))
    assert directives["default-src"] == directives["connect-src"] == directives["worker-src"] == "'self'"
    assert directives["script-src"] == "'self' 'wasm-unsafe-eval'" and directives["frame-ancestors"] == "'none'"
    # The server `kiln serve` and `kiln demo` listen with.
    with listen(site, "127.0.0.1", 0) as server:
        for method, target, status in [(b"GET", b"/", 200), (b"GET", b"/models.json", 200),
                                       (b"HEAD", b"/models/m/params_shard_0.bin", 200),
                                       (b"GET", b"/nope", 404), (b"GET", b"/%00", 400)]:
            got, headers, _ = raw_request(server, target, method)
            assert got == status, target
            for name, value in site_headers.HTTP_HEADERS.items():
                assert headers.get(name) == value, (target, name)
            assert headers["X-Content-Type-Options"] == "nosniff"
    # The tests' harness pages are served without them.
    with StaticServer({"/": site}) as server:
        assert "Content-Security-Policy" not in raw_request(server, b"/")[1]


def test_no_directory_listing_and_no_way_out(site):
    with StaticServer({"/": site}) as server:
        for target in (b"/models/", b"/models/m/"):
            status, _, body = raw_request(server, target)
            assert status == 404 and b"params_shard_0" not in body and b"link.txt" not in body, target
        assert raw_request(server, b"/models")[0] == 301  # to /models/, which is a 404
        for target in (b"/../secret.txt", b"/%2e%2e/secret.txt", b"/models/../../secret.txt",
                       b"/..%2fsecret.txt", b"/models/%2E%2E/%2E%2E/secret.txt", b"/models/link.txt",
                       b"//" + str(site.parent / "secret.txt").encode(), b"http://x/../secret.txt"):
            status, _, body = raw_request(server, target)
            assert status in (400, 404) and b"SECRET" not in body, (target, status)
        assert raw_request(server, b"/models/m/params_shard_0.bin")[2] == SHARD


def test_malformed_paths_are_400_without_traceback(site, capfd):
    bad = [b"/%00", b"/a%00b", b"/models/%00/x", b"/%ff", b"/%c0%ae%c0%ae/", b"/\x01", b"/a\x7fb", b"/%1b[2J",
           b"noslash", b"?q=1", b"http://[x/", b"/%2e%2e/%2e%2e/etc/passwd", b"/..%2f..%2fetc%2fpasswd"]
    # A short seeded fuzz of paths: whatever comes in gets an HTTP answer, never a traceback.
    rng = random.Random(10)
    pieces = ["/", "%", "%00", "%ff", "%2e", "..", ".", "models", "m", "index.html", "\x00", "\t", "é", "?", "#", ";", "%%", "\\"]
    fuzz = [("/" + "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))).encode("utf-8") for _ in range(150)]
    with StaticServer({"/": site}) as server:
        for target in bad:
            status, _, body = raw_request(server, target)
            assert status == 400, (target, status)
        for target in fuzz:
            status = raw_request(server, target)[0]
            assert status in (200, 301, 400, 404), (target, status)
        assert raw_request(server, b"/index.html?x=%00")[0] == 200  # the query is not a path
    time.sleep(0.1)  # a handler that failed prints its traceback after closing the connection
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception" not in err, err


def test_200_parallel_shard_requests_all_succeed(site):
    # socketserver's backlog of 5 dropped most of such a burst (retried SYNs: seconds to minutes).
    n = 200
    with StaticServer({"/": site}) as server:
        url = server.url + "/models/m/params_shard_0.bin"
        start = threading.Barrier(n)

        def fetch(_):
            start.wait()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return response.read() == SHARD
            except OSError as err:
                return repr(err)

        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(fetch, range(n)))
    failed = [r for r in results if r is not True]
    assert not failed, f"{len(failed)}/{n} failed, e.g. {failed[:3]}"


def test_idle_connections_time_out(site):
    with StaticServer({"/": site}, idle_timeout_s=1.0) as server:
        for sent in (b"", b"GET / HTTP/1.0\r\n"):  # nothing at all; a request whose headers never end
            with socket.create_connection(server.httpd.server_address[:2], timeout=5) as conn:
                conn.sendall(sent)
                began = time.monotonic()
                try:
                    closed = conn.recv(1024) == b""
                except TimeoutError:
                    closed = False
                waited = time.monotonic() - began
            assert closed and 0.8 < waited < 3, (sent, closed, waited)


def test_slow_but_active_download_is_not_cut(site):
    # The timeout bounds each 64 KiB write, not the response: 8 MB read at ~6 MB/s outlasts it twice.
    big = os.urandom(8 * 2**20)
    (site / "models" / "m" / "params_shard_1.bin").write_bytes(big)
    timeout = 0.5
    with StaticServer({"/": site}, idle_timeout_s=timeout) as server:
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        conn.settimeout(5)
        conn.connect(server.httpd.server_address[:2])
        with conn:
            conn.sendall(b"GET /models/m/params_shard_1.bin HTTP/1.0\r\n\r\n")
            began, data = time.monotonic(), b""
            while chunk := conn.recv(32 * 1024):
                data += chunk
                time.sleep(0.005)
            took = time.monotonic() - began
    assert data.partition(b"\r\n\r\n")[2] == big, f"cut after {len(data)} bytes"
    assert took > 2 * timeout, f"the download took only {took:.2f} s: too fast to test the timeout"


def test_header_policy_holds_the_worker_to_the_origin(tmp_path):
    """The demo's CSP was a <meta> tag, which a Web Worker does not inherit: its fetch of another
    origin went out. The header, sent with the worker's own script, stops it."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    from kiln.testing.run_library import launch_chromium

    page = tmp_path / "page"
    page.mkdir()
    # The page carries the <meta> policy too, as the demo page does: it does not reach the worker.
    (page / "index.html").write_text(f'<!doctype html>{site_headers.meta_tags()}<script type="module" src="page.mjs"></script>')
    (page / "page.mjs").write_text(
        'const worker = new Worker(new URL("worker.mjs", import.meta.url), { type: "module" });\n'
        "worker.onmessage = (e) => { window.workerResult = e.data; };\n"
        "worker.postMessage(location.hash.slice(1));\n")
    (page / "worker.mjs").write_text(
        "const get = (url) => fetch(url, { mode: 'no-cors' }).then(() => 'fetched', () => 'blocked');\n"
        "onmessage = async (e) => postMessage([await get('index.html'), await get(e.data)]);\n")
    # Another origin (another port) that answers anything and counts what reaches it.
    foreign, hits = socket.create_server(("127.0.0.1", 0)), []

    def answer():
        while True:
            try:
                conn, _ = foreign.accept()
            except OSError:
                return
            with conn:
                hits.append(conn.recv(4096))
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx")

    threading.Thread(target=answer, daemon=True).start()
    foreign_url = f"http://127.0.0.1:{foreign.getsockname()[1]}/shard.bin"
    try:
        with StaticServer({"/": page}, site_headers=True) as server, playwright_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            tab = browser.new_page()
            tab.goto(f"{server.url}/#{foreign_url}")
            tab.wait_for_function("() => window.workerResult !== undefined", timeout=30_000)
            result = tab.evaluate("() => window.workerResult")
            browser.close()
    finally:
        foreign.close()
    assert result == ["fetched", "blocked"] and hits == [], (result, hits)


def test_readme_shows_the_same_headers_for_static_hosts():
    readme = (toolchain.REPO_ROOT / "README.md").read_text()
    for name, value in site_headers.HTTP_HEADERS.items():
        assert f'add_header {name} "{value}" always;' in readme, f"nginx: {name}"
        assert f'Header always set {name} "{value}"' in readme, f"Apache: {name}"
        assert f"  {name}: {value}\n" in readme, f"_headers: {name}"
    assert site_headers.headers_file() in readme
    # The <meta> fallback is the header policy less what a <meta> policy cannot carry.
    meta = site_headers.content_security_policy(for_meta=True)
    assert "frame-ancestors" not in meta and meta in site_headers.HTTP_HEADERS["Content-Security-Policy"]
