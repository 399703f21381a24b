"""`kiln site` and `kiln serve`: a site folder with the runtime, the demo app and the bundles under
relative URLs, a models.json that describes them, served with the right MIME types; bad input
gets one clear error line, exit 1, and nothing written."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.request

import pytest

from kiln.site import headers as site_headers
from kiln.bundle.build import BuildOptions, build_bundle
from kiln.cli import main
from kiln.testing.synthetic import make_checkpoint


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    checkpoint = make_checkpoint("llama3-tiny", root / "llama3-tiny")
    out = root / "tiny-chat"
    build_bundle(BuildOptions(checkpoint=checkpoint, out=out, quantization="q4f32_1", targets=("wasm",),
                              context_window=256, prefill_chunk=32), log=lambda *a, **k: None)
    return out


def test_site_holds_runtime_app_and_bundles(bundle, tmp_path, capsys):
    site = tmp_path / "site"
    assert main(["site", str(bundle), str(bundle), "--out", str(site)]) == 0
    models = json.loads((site / "models.json").read_text())["models"]
    # The same bundle twice gets two distinct ids, each with its own copy under models/.
    assert [m["id"] for m in models] == ["tiny-chat", "tiny-chat-2"]
    config = json.loads((bundle / "kiln-config.json").read_text())
    for model in models:
        folder = site / model["path"]
        assert model["bytes"] == sum(f.stat().st_size for f in folder.iterdir())
        assert model["backends"] == ["wasm"] and model["quantization"] == "q4f32_1"
        assert model["demo"] is True and model["params"] == config["params"]["count"]
        for shard in json.loads((folder / "tensor-cache.json").read_text())["records"]:
            assert (folder / shard["dataPath"]).read_bytes() == (bundle / shard["dataPath"]).read_bytes()
    for name in ("index.html", "kiln.mjs", "kiln-worker.mjs", "kiln-thread.mjs", "sw.js"):
        assert (site / name).is_file(), name
    # Relative URLs only: the folder must work under any path of any host.
    html = (site / "index.html").read_text()
    urls = re.findall(r'(?:src|href)="([^"]*)"', html)
    # (data: URLs fetch nothing: the empty icon spares the browser a favicon request.)
    assert urls and all(not re.match(r"^(/|[a-z]+:)", u) or u.startswith("data:") for u in urls), urls
    # The security policy of site/headers.py: as a _headers file for hosts that read one, and as
    # <meta> tags in the page for hosts that set no headers.
    assert (site / "_headers").read_text() == site_headers.headers_file()
    assert site_headers.meta_tags() in html and "kiln:security-meta" not in html


def test_site_errors(bundle, tmp_path, capsys):
    def fails(argv, code, *words):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error[{code}]:") and len(err.splitlines()) == 1, err
        for word in words:
            assert word in err, err

    out = tmp_path / "site"
    fails(["site", str(tmp_path / "nope"), "--out", str(out)], "bundle", "does not exist")
    fails(["site", str(tmp_path), "--out", str(out)], "bundle", "kiln-config.json", "kiln build")
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    shard = json.loads((broken / "tensor-cache.json").read_text())["records"][0]["dataPath"]
    (broken / shard).unlink()
    fails(["site", str(bundle), str(broken), "--out", str(out)], "bundle", shard, "--force")
    assert not out.exists() and not list(tmp_path.glob(".site*"))
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    fails(["site", str(bundle), "--out", str(out)], "output-exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"
    fails(["serve", str(tmp_path)], "bundle", "not a kiln site")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_gives_mime_types(bundle, tmp_path):
    site = tmp_path / "site"
    assert main(["site", str(bundle), "--out", str(site)]) == 0
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kiln.cli", "serve", str(site), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert f"http://127.0.0.1:{port}/" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}/"
        expected = {"": "text/html", "models.json": "application/json", "kiln.mjs": "text/javascript",
                    "models/tiny-chat/model_wasm.wasm": "application/wasm",
                    "models/tiny-chat/kiln-config.json": "application/json"}
        for path, mime in expected.items():
            with urllib.request.urlopen(base + path) as response:
                assert response.headers["Content-Type"].split(";")[0] == mime, path
        # A second server on the same port fails with a clear error instead of a traceback.
        second = subprocess.run([sys.executable, "-m", "kiln.cli", "serve", str(site), "--port", str(port)],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and second.stderr.startswith("error[kiln]:") and "--port" in second.stderr
        # `kiln demo` takes its port before it compiles anything, so a busy port fails at once.
        work = tmp_path / "demo"
        demo = subprocess.run([sys.executable, "-m", "kiln.cli", "demo", "--dir", str(work), "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
        assert demo.returncode == 1 and demo.stderr.startswith("error[kiln]:") and "--port" in demo.stderr
        assert not work.exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
