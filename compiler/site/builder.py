"""`kiln site`: one or more bundles plus the web runtime and the demo chat app -> a static folder
that any static host can serve (relative URLs only).

    SITE/index.html, app.mjs, app.css, sw.js, ...   the demo app (runtime_web/dist/demo/)
    SITE/kiln.mjs, kiln-worker.mjs, kiln-thread.mjs the runtime (runtime_web/dist/)
    SITE/models.json                                what the app's model picker lists
    SITE/models/<id>/                               each bundle, as `kiln build` wrote it
    SITE/_headers                                   the security headers, for Netlify / Cloudflare Pages
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jsonschema

from kiln import schemas, toolchain
from kiln.bundle.kiln_config import CONFIG_FILE, validate
from kiln.errors import BundleError, ToolchainError
from kiln.site import headers as site_headers
from kiln.staging import check_output, staged_folder

DIST = toolchain.REPO_ROOT / "runtime_web" / "dist"
RUNTIME_FILES = ("kiln.mjs", "kiln-worker.mjs", "kiln-thread.mjs")
MODELS_FILE = "models.json"
# Where the demo page takes the <meta> form of the site's security policy.
META_MARKER = re.compile(r"<!-- kiln:security-meta.*?-->")


@dataclass
class SiteModel:
    id: str
    folder: Path
    config: dict[str, Any]
    files: list[str]

    def manifest_entry(self) -> dict[str, Any]:
        backends = [t for t in ("webgpu", "wasm") if t in self.config["libraries"]]
        return {
            "id": self.id,
            "name": self.folder.name,
            "path": f"models/{self.id}/",
            "bytes": sum((self.folder / f).stat().st_size for f in self.files),
            "quantization": self.config["quantization"],
            "backends": backends,
            "webgpu_features": self.config["webgpu_features"],
            "context_window": self.config["context_window_size"],
            "params": self.config["params"]["count"],
            "demo": bool(self.config.get("synthetic", False)),
            "license": self.config.get("license"),
        }


def read_bundle(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """kiln-config.json of a bundle and the files the runtime will fetch, all checked to exist."""
    config_path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise BundleError(f"bundle folder {folder} does not exist; pass a folder written by `kiln build`.")
    if not config_path.is_file():
        raise BundleError(f"{folder} has no {CONFIG_FILE}, so it is not a kiln bundle; build one with `kiln build CHECKPOINT --out {folder}`.")
    try:
        config = json.loads(config_path.read_text())
        validate(config)
        cache = json.loads((folder / config["tensor_cache"]).read_text())
        shards = [record["dataPath"] for record in cache["records"]]
    except (json.JSONDecodeError, jsonschema.ValidationError, OSError, KeyError, TypeError) as err:
        reason = getattr(err, "message", None) or str(err)
        raise BundleError(f"bundle {folder} is damaged ({reason}); rebuild it with `kiln build --force`.") from None
    files = [CONFIG_FILE, config["tensor_cache"], *config["tokenizer_files"], *config["libraries"].values(), *shards]
    if (folder / "mlc-chat-config.json").is_file():
        files.append("mlc-chat-config.json")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise BundleError(f"bundle {folder} is missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; rebuild it with `kiln build --force`.")
    return config, files


def _model_id(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _link_or_copy(src: Path, dst: Path) -> None:
    # Weight shards are large and never edited in place: a hard link saves the disk a second copy.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def runtime_dist() -> Path:
    needed = [DIST / f for f in RUNTIME_FILES] + [DIST / "demo" / "index.html"]
    missing = [str(p.relative_to(toolchain.REPO_ROOT)) for p in needed if not p.is_file()]
    if missing:
        raise ToolchainError(f"the web runtime is not built ({', '.join(missing)} missing); {toolchain.SETUP_HINT}.")
    return DIST


def _write_page(src: Path, dst: Path) -> None:
    page, found = META_MARKER.subn(site_headers.meta_tags(), src.read_text(), count=1)
    if not found:
        raise ToolchainError(f"{src} lacks the kiln:security-meta marker, so the web runtime build is out of date; {toolchain.SETUP_HINT}.")
    dst.write_text(page)


def build_site(bundles: list[Path], out: Path, *, force: bool = False,
               log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Write the site folder and return its models.json entries."""
    if not bundles:
        raise BundleError("no bundle given; pass one or more folders written by `kiln build`.")
    out = Path(out)
    check_output(out, force, inputs=[Path(b) for b in bundles], input_kind="bundle", marker=MODELS_FILE,
                 what="site folder")
    taken: set[str] = set()
    models = []
    for folder in map(Path, bundles):
        config, files = read_bundle(folder)
        models.append(SiteModel(_model_id(folder.resolve().name, taken), folder, config, files))
    dist = runtime_dist()

    with staged_folder(out) as site:
        shutil.copytree(dist / "demo", site, dirs_exist_ok=True)
        _write_page(dist / "demo" / "index.html", site / "index.html")
        # Hosts that read a _headers file send the policy as HTTP headers, which (unlike the <meta>
        # tags) also cover the Web Worker and set nosniff and frame-ancestors.
        (site / site_headers.HEADERS_FILE).write_text(site_headers.headers_file())
        for name in RUNTIME_FILES:
            shutil.copyfile(dist / name, site / name)
        entries = []
        for model in models:
            target = site / "models" / model.id
            target.mkdir(parents=True)
            for name in model.files:
                _link_or_copy(model.folder / name, target / name)
            entries.append(model.manifest_entry())
            log(f"  {model.id}: {len(model.files)} files, {entries[-1]['bytes'] / 2**20:.1f} MiB")
        manifest = {"models": entries}
        schemas.validate(manifest, schemas.SITE_MODELS)
        (site / MODELS_FILE).write_text(json.dumps(manifest, indent=2))
    return entries
