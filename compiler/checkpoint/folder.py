"""The Hugging Face checkpoint folder a user already has: its JSON files, its model family and the
tokenizer files that travel into the bundle. Tensors are read lazily (safetensors_stream).
A GGUF file is read into the same Checkpoint interface by checkpoint/gguf.py."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.checkpoint.chat_template import template_of
from kiln.checkpoint.safetensors_stream import CheckpointTensors
from kiln.errors import CheckpointError
from kiln.model_defs.registry import Family, family_for

# Files copied into the bundle when present; tokenizer.json is required.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class Checkpoint:
    folder: Path  # the checkpoint folder (for a GGUF checkpoint, the .gguf file)
    hf_config: dict[str, Any]
    generation_config: dict[str, Any]
    tokenizer_config: dict[str, Any]  # chat_template included, wherever the checkpoint keeps it
    family: Family
    model_config: Any  # the family's config dataclass
    tokenizer_files: list[str] = field(default_factory=list)
    license: str | None = None  # as the checkpoint states it (model card, GGUF metadata), e.g. apache-2.0
    # Bundle files made by kiln rather than copied (name -> text), e.g. a tokenizer_config.json
    # for a checkpoint that has none: the runtime always fetches one.
    tokenizer_texts: dict[str, str] = field(default_factory=dict, repr=False)
    chat_template_source: str = "tokenizer_config.json"  # where the template came from, for errors

    @property
    def chat_template(self) -> str | None:
        return template_of(self.tokenizer_config)

    # What a build reads beyond the JSON above; gguf.GGUFCheckpoint reads the same from one file.
    def open_tensors(self) -> CheckpointTensors:
        """The weights, readable one tensor at a time by Hugging Face name."""
        return CheckpointTensors(self.folder)

    def weight_bytes(self) -> int:
        """Bytes of weight files a build reads (the progress bar's total)."""
        return sum(f.stat().st_size for f in self.folder.glob("*.safetensors"))

    def tokenizer_text(self, name: str) -> str:
        """The text of the bundle file `name` (one of tokenizer_files)."""
        if name in self.tokenizer_texts:
            return self.tokenizer_texts[name]
        return (self.folder / name).read_text(encoding="utf-8")

    def write_tokenizer_files(self, dest: Path) -> None:
        """Put `tokenizer_files` into the folder `dest`."""
        for name in self.tokenizer_files:
            if name in self.tokenizer_texts:
                (dest / name).write_text(self.tokenizer_texts[name], encoding="utf-8")
            else:
                shutil.copyfile(self.folder / name, dest / name)


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path`; anything else (bad JSON, a list, ...) is a CheckpointError ending in `what`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not UTF-8 text; {what}.") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); {what}.") from None
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a string"}.get(type(data), "a single value")
        raise CheckpointError(f"{path} holds {kind}, not a JSON object; {what}.")
    return data


def model_config_from_hf(hf_config: dict[str, Any]) -> tuple[Family, Any]:
    """The family and its checked config dataclass; ConfigFieldError or UnsupportedError otherwise."""
    family = family_for(hf_config)
    return family, family.config_class.from_hf(hf_config)


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """A Hugging Face checkpoint folder, or a GGUF file (any other file is refused as not GGUF)."""
    folder = Path(folder)
    if folder.is_file():
        from kiln.checkpoint.gguf import load_gguf_checkpoint

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
    hf_config = read_json_object(config_path, "re-download or fix the checkpoint's config.json")
    family, model_config = model_config_from_hf(hf_config)
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(
            f"{folder} has no tokenizer.json; kiln needs the fast tokenizer file (save one with "
            "transformers' AutoTokenizer.from_pretrained(...).save_pretrained(folder))."
        )
    generation = folder / "generation_config.json"
    tokenizer_config, texts, source = _tokenizer_config(folder)
    files = [name for name in TOKENIZER_FILES if (folder / name).is_file() or name in texts]
    return Checkpoint(
        folder=folder,
        hf_config=hf_config,
        generation_config=read_json_object(generation, "fix or delete it") if generation.is_file() else {},
        tokenizer_config=tokenizer_config,
        family=family,
        model_config=model_config,
        tokenizer_files=files,
        license=model_card_license(folder / "README.md"),
        tokenizer_texts=texts,
        chat_template_source=source,
    )


def _tokenizer_config(folder: Path) -> tuple[dict[str, Any], dict[str, str], str]:
    """tokenizer_config.json as the bundle will carry it, the file's text where kiln must write it,
    and where the chat template comes from. transformers 5 saves the template as chat_template.jinja
    (and older tools save special_tokens_map.json without a tokenizer_config.json); the runtime
    reads both the template and the special tokens from tokenizer_config.json, so they go in it."""
    path, jinja = folder / "tokenizer_config.json", folder / "chat_template.jinja"
    config = read_json_object(path, "fix or delete it") if path.is_file() else {}
    written = not path.is_file()
    if written and (folder / "special_tokens_map.json").is_file():
        specials = read_json_object(folder / "special_tokens_map.json", "fix or delete it")
        config = {key: value for key, value in specials.items() if key.endswith("_token")}
    source = "tokenizer_config.json"
    if jinja.is_file():  # as in transformers, the file wins over a chat_template in the config
        try:
            template = jinja.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{jinja} is not UTF-8 text; fix or delete it.") from None
        written, source = written or config.get("chat_template") != template, "chat_template.jinja"
        config["chat_template"] = template
    texts = {"tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False)} if written else {}
    return config, texts, source


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
