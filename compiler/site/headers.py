"""The security headers a kiln site is served with. This is the one definition: `kiln serve` sends
it as HTTP headers, `kiln site` writes it to the site's `_headers` file (Netlify, Cloudflare Pages)
and into index.html as <meta> tags (the fallback where a host sets no headers, e.g. GitHub Pages)."""

from __future__ import annotations

import html

# Everything the page, its Web Worker and its service worker load comes from the site's own origin.
CSP_DIRECTIVES = {
    "default-src": "'self'",
    # Module scripts from the site only, no inline or eval'd script; WebAssembly compilation of the
    # runtime and the model libraries needs 'wasm-unsafe-eval'.
    "script-src": "'self' 'wasm-unsafe-eval'",
    # fetch(): models.json and the bundle (the worker's shard downloads included) stay on the origin.
    "connect-src": "'self'",
    "worker-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",  # data: for the empty favicon that spares a request
    "font-src": "'self'",
    "media-src": "'none'",
    "frame-src": "'none'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'none'",
    "frame-ancestors": "'none'",  # no other site may frame the chat
}
# Browsers ignore these in a <meta> policy, and Chromium logs an error for each.
HEADER_ONLY_DIRECTIVES = ("frame-ancestors",)

REFERRER_POLICY = "no-referrer"


def content_security_policy(for_meta: bool = False) -> str:
    return "; ".join(f"{name} {value}" for name, value in CSP_DIRECTIVES.items()
                     if not (for_meta and name in HEADER_ONLY_DIRECTIVES))


# Cross-origin isolation: browsers give a page SharedArrayBuffer (the WASM backend's threads) only
# when it is served with both. A <meta> tag cannot set them, so a host without headers runs one thread.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}

HTTP_HEADERS = {
    "Content-Security-Policy": content_security_policy(),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": REFERRER_POLICY,
    **ISOLATION_HEADERS,
}

HEADERS_FILE = "_headers"


def headers_file() -> str:
    """`_headers` in the format of Netlify and Cloudflare Pages: these headers on every path."""
    return "/*\n" + "".join(f"  {name}: {value}\n" for name, value in HTTP_HEADERS.items())


def meta_tags() -> str:
    """The part of the headers a page can carry itself (a <meta> policy cannot set nosniff or frame-ancestors)."""
    csp = html.escape(content_security_policy(for_meta=True), quote=False).replace('"', "&quot;")
    return (f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
            f'  <meta name="referrer" content="{REFERRER_POLICY}">')
