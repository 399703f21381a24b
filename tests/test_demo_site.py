"""The demo chat site (`kiln site`, runtime_web/demo/) in headless Chromium, driven like a person
would: pick the real SmolLM2-135M-Instruct (the demo's default bundle), cancel a slow load, load it and watch the progress reach 100 %, send a message with Enter,
see the reply stream in (the text grows across observations), stop it mid-stream, regenerate it
(prefill/decode tokens per second and the backend shown), then reload with the network off and the
server gone, load the model again from the browser's caches and ask it the capital of France (the
reply must say Paris); a stored reply that tries to
inject markup shows as text; finally "Clear all data" empties the caches and the conversations. Every request the page, its worker and its service
worker make is recorded, in the browser and on the server: none may go to another origin, and
none at all may happen between "model loaded" and the reload. No console error or CSP violation
is allowed. The conversation's screenshot is saved to test-artifacts/demo-conversation.png."""

from __future__ import annotations

import json
import re
import time
from functools import partial
from urllib.parse import urlsplit

import pytest

from kiln import toolchain
from kiln.site.demo import QUANTIZATIONS, model_id, prepare_demo
from kiln.testing.run_library import launch_chromium
from kiln.site.serve import StaticServer

playwright_api = pytest.importorskip("playwright.sync_api")

MODEL_ID = model_id(QUANTIZATIONS[0])
ARTIFACT = toolchain.REPO_ROOT / "test-artifacts" / "demo-conversation.png"
STATS = re.compile(r"WebGPU · prefill [\d.]+ tok/s · decode [\d.]+ tok/s · \d+ tokens")
TIMEOUT_MS = 120_000
# A stored reply with markup in it, and the DOM the app must make of it: Markdown becomes elements,
# HTML stays text (innerHTML shows it escaped).
HOSTILE_REPLY = ('**bold** <img src=x onerror="window.injected=1">\n<script>window.injected=2</script>\n\n'
                 "```js\n<b>not bold</b>\n```\n# Title *em*\n\n3. <a href=//evil.example>x</a>\n- `<i>`\n> quoted")
HOSTILE_DOM = ('<p><strong>bold</strong> &lt;img src=x onerror="window.injected=1"&gt;<br>'
               "&lt;script&gt;window.injected=2&lt;/script&gt;</p>"
               '<pre><code class="language-js">&lt;b&gt;not bold&lt;/b&gt;</code></pre><h3>Title <em>em</em></h3>'
               '<ol start="3"><li>&lt;a href=//evil.example&gt;x&lt;/a&gt;</li></ol><ul><li><code>&lt;i&gt;</code></li></ul>'
               "<blockquote><p>quoted</p></blockquote>")
CACHE_CONTENTS = """async () => {
    const out = {};
    for (const name of await caches.keys()) out[name] = (await (await caches.open(name)).keys()).map((r) => r.url);
    return out;
}"""


@pytest.fixture(scope="module")
def site(demo_work):
    # The site `kiln demo` (the README's first command) builds and serves, from the session's demo bundles.
    return prepare_demo(demo_work, log=lambda *a, **k: None)


class RecordingServer(StaticServer):
    """StaticServer that records the path of every request it answers, and can hold weight shards
    back for `shard_delay_s` seconds (a slow network, to cancel a load in the middle)."""

    def __init__(self, mounts):
        super().__init__(mounts, site_headers=True)  # the security headers `kiln demo` serves the site with
        self.paths: list[str] = []
        self.shard_delay_s = 0.0
        base = self.httpd.RequestHandlerClass
        server = self

        class Handler(base.func):
            def do_GET(self):
                if self.path.split("?")[0].endswith(".bin") and server.shard_delay_s:
                    time.sleep(server.shard_delay_s)
                super().do_GET()

            def log_request(self, code="-", size="-"):
                server.paths.append(self.path)

        self.httpd.RequestHandlerClass = partial(Handler, *base.args, **base.keywords)


def reply_text(page):
    """The last reply's text, exactly (inner_text would fold its whitespace)."""
    return page.evaluate("() => [...document.querySelectorAll('.message.assistant .body')].pop()?.textContent ?? ''")


def watch_stream(page, growths=2, timeout_s=TIMEOUT_MS / 1000):
    """Poll the streaming reply until its text has grown `growths` times; returns the lengths seen.
    The first text waits for the prompt's prefill, which on SwiftShader in a busy CI run can take
    tens of seconds: the wait is the one other slow steps get, and the time is printed."""
    seen: list[int] = []
    start = time.monotonic()
    while time.monotonic() < start + timeout_s:
        n = page.evaluate("() => document.querySelector('.message.assistant.streaming .body')?.textContent.length ?? 0")
        if n and (not seen or n > seen[-1]):
            seen.append(n)
            if len(seen) == 1:
                print(f"[demo] first reply text after {time.monotonic() - start:.1f} s")
        if len(seen) > growths:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"the reply did not grow {growths} times within {timeout_s} s (lengths seen: {seen})")


def wait_reply_done(page):
    expect = playwright_api.expect
    expect(page.locator(".message.assistant.streaming")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(page.locator("#send")).to_be_enabled()


def set_max_tokens(page, n):
    page.click("#settings-toggle")
    page.fill("#max-tokens", str(n))
    page.click("#settings-close")


def load_model(page):
    # WebGPU on SwiftShader decodes the 135M model at 1-2 tokens/s: a long reply is easily stopped mid-way.
    expect = playwright_api.expect
    page.select_option("#model-select", MODEL_ID)
    page.select_option("#backend-select", "webgpu")
    page.click("#load-button")
    expect(page.locator("#model-status")).to_contain_text("Ready", timeout=TIMEOUT_MS)
    assert page.locator("#load-progress").evaluate("p => p.value") == 100
    progress = page.locator("#progress-text").inner_text()
    assert "100 %" in progress and " MB" in progress, progress
    expect(page.locator("#backend-badge")).to_have_text("WebGPU")


def test_demo_site_chat_stop_offline_and_privacy(site):
    expect = playwright_api.expect
    server = RecordingServer({"/": site})
    server.__enter__()
    origin = server.url
    requests: list[tuple[str, str]] = []   # (url, who): every request Chromium reports
    problems: list[str] = []               # console errors, CSP violations, uncaught page errors
    running = True
    try:
        with playwright_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            # Opened as a file, the app cannot start (modules and service workers need a server): the
            # page's static hint says how to open it instead.
            as_file = browser.new_page()
            as_file.goto((site / "index.html").as_uri())
            expect(as_file.locator("#boot-hint")).to_contain_text("kiln serve SITE_DIR")
            as_file.wait_for_timeout(500)
            expect(as_file.locator("#boot-hint")).to_be_visible()
            as_file.close()
            context = browser.new_context(viewport={"width": 1200, "height": 820})
            # The context sees the page's, its worker's and (in Chromium) the service worker's requests.
            context.on("request", lambda r: requests.append((r.url, "service worker" if r.service_worker else "page")))
            page = context.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

            # -- first visit: pick the model, load it ------------------------------------------------
            page.goto(origin + "/")
            # The real model, the f32 bundle first (the default: any WebGPU adapter, or WASM), then the f16 one.
            expect(page.locator("#model-select option")).to_have_count(2)
            expect(page.locator("#model-select option").first).to_contain_text(MODEL_ID)
            expect(page.locator("#boot-hint")).to_be_hidden()
            expect(page.locator("#model-info")).to_contain_text("WebGPU or WASM")
            expect(page.locator("#model-info")).to_contain_text("license apache-2.0")
            expect(page.locator("#demo-warning")).to_be_hidden()
            page.click("#settings-toggle")
            page.fill("#temperature", "0")
            page.fill("#max-tokens", "400")  # seconds of decoding: the stream is caught mid-way
            page.click("#settings-close")
            # Cancel a load while the weights are still downloading, then load for real.
            server.shard_delay_s = 5.0
            page.select_option("#model-select", MODEL_ID)
            page.click("#load-button")
            expect(page.locator("#progress-area")).to_be_visible()
            page.wait_for_timeout(500)  # the worker is up and waiting for the shards
            assert "Loaded" not in page.locator("#progress-text").inner_text()
            page.click("#cancel-load")
            expect(page.locator("#model-status")).to_have_text("Loading cancelled.")
            expect(page.locator("#progress-area")).to_be_hidden()
            expect(page.locator("#backend-badge")).to_be_hidden()
            server.shard_delay_s = 0.0
            load_model(page)
            # The service worker controls the page (and so saw the bundle's files) once the model is in.
            assert page.evaluate("() => navigator.serviceWorker.controller !== null")
            page.wait_for_timeout(300)  # let the service worker finish storing what it fetched
            browser_mark, server_mark = len(requests), len(server.paths)
            # The weights went to the loader's store only; the service worker kept the rest of the bundle.
            stored = page.evaluate(CACHE_CONTENTS)
            bundle_url = f"{origin}/models/{MODEL_ID}/"
            shards = json.loads((site / "models" / MODEL_ID / "tensor-cache.json").read_text())["records"]
            assert sorted(u.split("?")[0] for u in stored["kiln-shards"]) == sorted(bundle_url + r["dataPath"] for r in shards)
            app_cache = set(stored["kiln-site-v1"])
            for path in ("", "index.html", "app.mjs", "app.css", "kiln.mjs", "kiln-worker.mjs", "kiln-thread.mjs", "models.json"):
                assert f"{origin}/{path}" in app_cache, path
            for name in ("kiln-config.json", "tensor-cache.json", "tokenizer.json", "tokenizer_config.json", "model_webgpu.wasm"):
                assert bundle_url + name in app_cache, name
            assert not [u for u in app_cache if u.endswith(".bin")], "the service worker stored weight shards a second time"

            # -- chat: a reply streams in, Stop cuts it, Regenerate makes a whole one -----------------
            page.click("#prompt")
            page.keyboard.type("Hello! Write me a **long** story, please.")
            page.keyboard.press("Enter")
            expect(page.locator(".message.user .body")).to_have_text("Hello! Write me a **long** story, please.")
            expect(page.locator("#stop")).to_be_visible()
            lengths = watch_stream(page)
            page.click("#stop")
            wait_reply_done(page)
            expect(page.locator(".message.assistant .meta").last).to_contain_text("stopped")
            stopped_at = len(reply_text(page))
            assert stopped_at >= lengths[-1]
            page.wait_for_timeout(300)
            assert len(reply_text(page)) == stopped_at, "the reply kept growing after Stop"
            expect(page.locator("#stop")).to_be_hidden()

            set_max_tokens(page, 16)
            page.click("#regenerate")
            wait_reply_done(page)
            expect(page.locator(".message.assistant")).to_have_count(1)
            expect(page.locator(".message.assistant .meta").last).to_have_text(STATS)
            regenerated = reply_text(page)
            assert regenerated, "the regenerated reply is empty"
            expect(page.locator("#conversation-list .open-conversation")).to_have_count(1)
            expect(page.locator("#conversation-list .open-conversation")).to_have_text("Hello! Write me a **long** story, please.")
            ARTIFACT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACT))

            # Nothing at all was fetched while chatting: not by the page, its worker or the service worker.
            assert requests[browser_mark:] == [], requests[browser_mark:]
            assert server.paths[server_mark:] == [], server.paths[server_mark:]
            shards_fetched = [p for p in server.paths if ".bin" in p]
            assert shards_fetched, "the first load fetched no weight shard from the server"

            # -- offline: the server is gone and the browser offline; the app and the model still work --
            server.__exit__(None, None, None)
            running = False
            context.set_offline(True)
            page.reload()
            expect(page.locator("#model-select option")).to_have_count(2)
            # The saved conversation comes back from IndexedDB.
            expect(page.locator("#conversation-list .open-conversation")).to_have_count(1)
            load_model(page)
            set_max_tokens(page, 24)
            page.click("#prompt")
            page.keyboard.type("What is the capital of France?")
            page.keyboard.press("Enter")
            watch_stream(page, growths=1)
            wait_reply_done(page)
            expect(page.locator(".message.assistant .meta").last).to_have_text(STATS)
            assert "Paris" in reply_text(page), reply_text(page)
            expect(page.locator("#conversation-list .open-conversation")).to_have_count(2)
            # Escape stops a reply too (keyboard use).
            set_max_tokens(page, 400)
            page.click("#regenerate")
            watch_stream(page, growths=1)
            page.keyboard.press("Escape")
            wait_reply_done(page)
            expect(page.locator(".message.assistant .meta").last).to_contain_text("stopped")

            # Reopen the first conversation from the sidebar.
            page.locator("#conversation-list .open-conversation", has_text="Hello!").click()
            expect(page.locator(".message.user .body")).to_have_text("Hello! Write me a **long** story, please.")
            assert reply_text(page) == regenerated

            # -- a reply that tries to inject markup renders as text ------------------------------------
            # (The model does not write this on request, so it goes into IndexedDB directly, as a stored reply.)
            page.evaluate("""(content) => new Promise((resolve, reject) => {
                const open = indexedDB.open("kiln-demo", 1);
                open.onsuccess = () => {
                    const tx = open.result.transaction("conversations", "readwrite");
                    tx.objectStore("conversations").put({ id: "hostile", title: "Hostile reply", modelId: "",
                        system: "", created: 1, updated: Date.now(), messages: [
                            { role: "user", content: "hi" }, { role: "assistant", content }] });
                    tx.oncomplete = () => { open.result.close(); resolve(); };
                    tx.onerror = () => reject(tx.error);
                };
                open.onerror = () => reject(open.error);
            })""", HOSTILE_REPLY)
            page.reload()
            page.locator("#conversation-list .open-conversation", has_text="Hostile reply").click()
            body = page.locator(".message.assistant .body").last
            expect(body).to_contain_text("quoted")
            assert body.inner_html() == HOSTILE_DOM
            assert page.evaluate("() => window.injected") is None

            # -- Clear all data: caches (shards and app), conversations, settings ---------------------
            page.click("#clear-data")
            page.click("#clear-confirm")
            expect(page.locator("#model-status")).to_contain_text("All data deleted", timeout=TIMEOUT_MS)
            expect(page.locator("#conversation-list li")).to_have_text("No saved conversations yet.")
            left = page.evaluate("""async () => ({
                caches: await caches.keys(),
                databases: (await indexedDB.databases()).map((d) => d.name),
                settings: localStorage.length })""")
            assert left == {"caches": [], "databases": [], "settings": 0}, left
            assert problems == [], problems

            # The page's Content-Security-Policy is in force: an injected inline script does not run.
            violated = page.evaluate("""() => new Promise((resolve) => {
                document.addEventListener("securitypolicyviolation", (e) => resolve(e.effectiveDirective), { once: true });
                const script = document.createElement("script");
                script.textContent = "window.inlineScriptRan = true";
                document.head.append(script);
            })""")
            assert violated == "script-src-elem" and page.evaluate("() => window.inlineScriptRan") is None
            browser.close()
    finally:
        if running:
            server.__exit__(None, None, None)

    # -- privacy: every request stayed on the site's origin ------------------------------------------
    assert requests, "no request was recorded"
    foreign = [(url, who) for url, who in requests
               if not url.startswith("data:") and f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" != origin]
    assert foreign == [], foreign
    assert any(who == "service worker" for _, who in requests), "no service worker request was recorded"
    assert ARTIFACT.stat().st_size > 10_000
