"""The Hugging Face checkpoint folder a user already has: its JSON files, its model family and the
tokenizer files that travel into the bundle. Tensors are read lazily (safetensors_stream).
A GGUF file is read into the same Checkpoint interface by gguf_checkpoint."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_defs.registry import Family, family_for

from .errors import CheckpointError
from .safetensors_stream import CheckpointTensors

# Files copied into the bundle when present; tokenizer.json is required.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class Checkpoint:
    folder: Path  # the checkpoint folder (for a GGUF checkpoint, the .gguf file)
    hf_config: dict[str, Any]
    generation_config: dict[str, Any]
    tokenizer_config: dict[str, Any]
    family: Family
    model_config: Any  # the family's config dataclass
    tokenizer_files: list[str] = field(default_factory=list)
    license: str | None = None  # as the checkpoint states it (model card, GGUF metadata), e.g. apache-2.0

    @property
    def chat_template(self) -> str | None:
        template = self.tokenizer_config.get("chat_template")
        if template is None and (self.folder / "chat_template.jinja").is_file():
            template = (self.folder / "chat_template.jinja").read_text()
        if isinstance(template, list):  # a list of named templates: use "default"
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default")
        return template

    # What a build reads beyond the JSON above; gguf_checkpoint.GGUFCheckpoint reads the same from one file.
    def open_tensors(self) -> CheckpointTensors:
        """The weights, readable one tensor at a time by Hugging Face name."""
        return CheckpointTensors(self.folder)

    def weight_bytes(self) -> int:
        """Bytes of weight files a build reads (the progress bar's total)."""
        return sum(f.stat().st_size for f in self.folder.glob("*.safetensors"))

    def write_tokenizer_files(self, dest: Path) -> None:
        """Put `tokenizer_files` into the folder `dest`."""
        for name in self.tokenizer_files:
            shutil.copyfile(self.folder / name, dest / name)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); {what}.") from None


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """A Hugging Face checkpoint folder, or a GGUF file (any other file is refused as not GGUF)."""
    folder = Path(folder)
    if folder.is_file():
        from .gguf_checkpoint import load_gguf_checkpoint

        return load_gguf_checkpoint(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"checkpoint {folder} does not exist; pass a Hugging Face checkpoint folder (config.json, *.safetensors, "
            "tokenizer.json) or a .gguf file."
        )
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"{folder} has no config.json; pass a Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json)."
        )
    hf_config = _read_json(config_path, "re-download or fix the checkpoint's config.json")
    family = family_for(hf_config)
    model_config = family.config_class.from_hf(hf_config)
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(
            f"{folder} has no tokenizer.json; kiln needs the fast tokenizer file (save one with "
            "transformers' AutoTokenizer.from_pretrained(...).save_pretrained(folder))."
        )
    generation = folder / "generation_config.json"
    tok_config = folder / "tokenizer_config.json"
    return Checkpoint(
        folder=folder,
        hf_config=hf_config,
        generation_config=_read_json(generation, "fix or delete it") if generation.is_file() else {},
        tokenizer_config=_read_json(tok_config, "fix or delete it") if tok_config.is_file() else {},
        family=family,
        model_config=model_config,
        tokenizer_files=[name for name in TOKENIZER_FILES if (folder / name).is_file()],
        license=model_card_license(folder / "README.md"),
    )


def model_card_license(readme: Path) -> str | None:
    """The `license:` field of a Hugging Face model card's YAML front matter, if there is one."""
    if not readme.is_file():
        return None
    lines = readme.read_text(errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, _, value = line.partition(":")
        if key == "license" and value.strip():
            return value.strip().strip("'\"")
    return None
