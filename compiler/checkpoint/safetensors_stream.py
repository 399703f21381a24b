"""Read tensors one at a time from a Hugging Face safetensors checkpoint, in bounded memory.

We parse the format ourselves (8-byte little-endian header length, a JSON header, then raw
little-endian data) because `safetensors`' NumPy API cannot return bfloat16, the dtype most
Llama checkpoints ship in. Only headers are read up front; `read(name)` seeks to one tensor and
reads just its bytes, so peak memory is one tensor (plus its float32 copy), never a whole file.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiln.errors import CheckpointError, UnsupportedError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# The safetensors library refuses headers above 100 MB; a larger length means a corrupt file.
MAX_HEADER_BYTES = 100 * 1024 * 1024

# safetensors dtype tag -> (our dtype name, bytes per element). Names are NumPy's (and TVM's).
_DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
    "U64": ("uint64", 8), "U32": ("uint32", 4), "U16": ("uint16", 2), "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}
# Dtypes a weight may have: `read` widens the first three to float32, returns float64 as stored.
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
# Dtypes `read` returns as stored (explicitly little-endian, as the format stores them).
_AS_STORED = {"float64": "<f8", "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "i1",
              "uint64": "<u8", "uint32": "<u4", "uint16": "<u2", "uint8": "u1", "bool": "?"}


@dataclass(frozen=True)
class _Entry:
    file: Path
    dtype: str            # our name, or the raw tag for a dtype we do not know
    shape: tuple[int, ...]
    start: int            # absolute byte offset of the tensor's data in `file`
    nbytes: int


class CheckpointTensors:
    """The tensors of one checkpoint folder (or one .safetensors file), readable by name."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        self._entries: dict[str, _Entry] = {}
        for file in _find_files(folder):
            for name, entry in _read_header(file).items():
                if name in self._entries:
                    raise CheckpointError(
                        f"tensor {name} appears in both {self._entries[name].file.name} and "
                        f"{file.name}; re-download the checkpoint or re-save it with "
                        "transformers' save_pretrained.")
                self._entries[name] = entry
        index = folder / INDEX_FILE
        if folder.is_dir() and not (folder / SINGLE_FILE).is_file() and index.is_file():
            # The index promises where each tensor lives; a mismatch means a mixed-up download.
            for name, shard in _load_index(index).items():
                entry = self._entries.get(name)
                if entry is None or entry.file.name != Path(shard).name:
                    raise CheckpointError(
                        f"{INDEX_FILE} places tensor {name} in {shard} but that shard does not "
                        "contain it; re-download the checkpoint so the index and shards match.")

    def names(self) -> list[str]:
        """All tensor names, sorted (a stable order independent of how the files were written)."""
        return sorted(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def dtype(self, name: str) -> str:
        """The stored dtype: "float32", "float16", "bfloat16", or another NumPy-style name."""
        return self._entry(name).dtype

    def nbytes(self, name: str) -> int:
        """Bytes the tensor takes in its file (what reading it costs)."""
        return self._entry(name).nbytes

    def is_float(self, name: str) -> bool:
        """Whether `read` gives floating-point values (what a model weight must be)."""
        return self._entry(name).dtype in FLOAT_DTYPES

    def read(self, name: str) -> np.ndarray:
        """One tensor: float32 for F32/F16/BF16 data, other dtypes as stored."""
        entry = self._entry(name)
        raw = np.empty(entry.nbytes, dtype=np.uint8)
        with open(entry.file, "rb") as f:
            f.seek(entry.start)
            got = f.readinto(memoryview(raw))
        if got != entry.nbytes:
            raise CheckpointError(
                f"{entry.file.name} ends before the data of tensor {name}; the file is truncated, "
                "re-download it.")
        if entry.dtype == "bfloat16":
            # bf16 is the top half of an f32: widen the bits and shift them into place (exact).
            data = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif entry.dtype in ("float32", "float16"):
            data = raw.view("<f4" if entry.dtype == "float32" else "<f2")
            data = data.astype(np.float32, copy=False)  # f32 stays a view of our own buffer
        elif entry.dtype in _AS_STORED:
            data = raw.view(_AS_STORED[entry.dtype]).astype(entry.dtype, copy=False)
        else:
            raise UnsupportedError(
                f"tensor {name} is stored as {entry.dtype}, which kiln cannot read; save the "
                "checkpoint in float32, float16 or bfloat16.")
        return data.reshape(entry.shape)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise CheckpointError(
                f"the checkpoint has no tensor named {name}; check that the folder holds the "
                "model's complete weights for the architecture named in config.json.") from None


def _find_files(folder: Path) -> list[Path]:
    """The safetensors files to read: one file, model.safetensors, or the shards of the index."""
    if folder.is_file() and folder.suffix == ".safetensors":
        return [folder]  # e.g. a LoRA adapter's adapter_model.safetensors
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; pass the folder that "
                              "holds config.json and the .safetensors weights.")
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    index = folder / INDEX_FILE
    if index.is_file():
        files = []
        for shard in dict.fromkeys(_load_index(index).values()):  # unique, in index order
            path = folder / shard
            if not path.is_file():
                raise CheckpointError(
                    f"shard {shard} named in {INDEX_FILE} is missing from {folder}; download "
                    "all the checkpoint's .safetensors files.")
            files.append(path)
        return files
    if list(folder.glob("*.bin")) or list(folder.glob("*.pt")) or list(folder.glob("*.pth")):
        raise CheckpointError(
            f"{folder} has only PyTorch pickle weights (*.bin) and kiln reads safetensors; convert "
            "them by loading the model with transformers and calling "
            "save_pretrained(out_dir, safe_serialization=True).")
    raise CheckpointError(f"{folder} has neither {SINGLE_FILE} nor {INDEX_FILE}; pass the "
                          "folder of a Hugging Face checkpoint saved with safetensors weights.")


def _load_index(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise ValueError("weight_map is not a mapping of names to files")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index} is not a valid safetensors index ({exc}); re-download "
                              "the checkpoint.") from None
    return weight_map


def _read_header(file: Path) -> dict[str, _Entry]:
    """Parse and validate one file's header; the data stays on disk."""
    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{file} has a corrupt safetensors header ({why}); re-download "
                               "the file or re-save the checkpoint with safetensors.")

    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise corrupt("file shorter than 8 bytes")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise corrupt(f"header length {header_len} does not fit in a {size}-byte file")
        try:
            header = json.loads(f.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise corrupt(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")

    data_start, data_size = 8 + header_len, size - 8 - header_len
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            tag, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            if not (isinstance(tag, str) and isinstance(shape, list)
                    and all(type(d) is int and d >= 0 for d in shape)
                    and type(begin) is int and type(end) is int):
                raise TypeError
        except (TypeError, KeyError, ValueError):
            raise corrupt(f"entry {name!r} lacks a valid dtype, shape or data_offsets") from None
        if not 0 <= begin <= end <= data_size:
            raise corrupt(f"tensor {name} spans bytes {begin}..{end} of a {data_size}-byte "
                          "data section")
        dtype, itemsize = _DTYPES.get(tag, (tag, None))
        if itemsize is not None and end - begin != math.prod(shape) * itemsize:
            raise corrupt(f"tensor {name} has {end - begin} bytes but shape {shape} of {tag} "
                          f"needs {math.prod(shape) * itemsize}")
        entries[name] = _Entry(file, dtype, tuple(shape), data_start + begin, end - begin)
    # As the safetensors library requires: tensors tile the data section in order, without gaps or
    # overlaps. Overlapping tensors would silently share bytes (one weight read as another).
    position = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].start, item[1].nbytes)):
        begin = entry.start - data_start
        if begin != position:
            raise corrupt(f"tensor {name} starts at byte {begin} of the data section, where "
                          f"{'the previous tensor overlaps it' if begin < position else 'it leaves a gap'}"
                          f" (expected {position})")
        position = begin + entry.nbytes
    if position != data_size:
        raise corrupt(f"the tensors end at byte {position} of a {data_size}-byte data section")
    return entries
