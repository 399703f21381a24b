"""Read tensors one at a time from a GGUF file (llama.cpp's format), under the Hugging Face names
the weight converter already uses, so a GGUF file goes through the same converter as safetensors.

The maintained `gguf` package parses the file and dequantizes blocks with its NumPy code. It
memory-maps the file: only the header is parsed up front, and `read(name)` touches just one
tensor's pages (file-backed, which the kernel can drop again), so peak memory is one dequantized
float32 tensor, never the whole model. On top of it this module
  - checks the file is a whole GGUF file, and every tensor type is one kiln dequantizes,
    before anything is written;
  - maps llama.cpp's tensor names (blk.N.attn_q.weight) to Hugging Face's
    (model.layers.N.self_attn.q_proj.weight) with the gguf package's own name table;
  - undoes the row permutation llama.cpp's converter applies to the q and k projections.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from kiln.errors import CheckpointError, UnsupportedError

GGUF_MAGIC = b"GGUF"

# The tensor types the gguf package's NumPy code dequantizes that kiln accepts: the float types and
# the block quantizations llama.cpp users pick (legacy Q4/Q5/Q8 and the K-quants Q4_K..Q6_K).
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")

# Exceptions the gguf package's parser raises on a file that is cut short or corrupt.
_PARSE_ERRORS = (ValueError, IndexError, KeyError, OverflowError, TypeError)


def is_gguf(path: Path) -> bool:
    """Whether `path` is a file that starts with the GGUF magic bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(len(GGUF_MAGIC)) == GGUF_MAGIC
    except OSError:
        return False


def open_gguf(path: Path):
    """The parsed file (a gguf.GGUFReader), or CheckpointError for anything but a whole GGUF file."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; pass a Hugging Face checkpoint folder or a .gguf file.")
    if not is_gguf(path):
        raise CheckpointError(
            f"{path} is not a GGUF file (it does not start with the bytes 'GGUF'); pass a .gguf model file "
            "or a Hugging Face checkpoint folder.")
    try:
        return GGUFReader(path)
    except _PARSE_ERRORS as err:
        # The reader maps every tensor while parsing, so a truncated file fails here, not mid-build.
        raise CheckpointError(
            f"{path} is not a complete GGUF file ({err}); it is truncated or corrupt: download it again.") from None


def read_metadata(reader) -> dict[str, Any]:
    """The file's key-value metadata as Python values (arrays as lists, strings decoded)."""
    try:
        return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    except _PARSE_ERRORS as err:  # UnicodeDecodeError included: it is a ValueError
        raise CheckpointError(f"the GGUF file's metadata cannot be read ({err}); the file is corrupt: "
                              "download it again.") from None


def hf_to_gguf_names(arch_name: str, num_layers: int, hf_names: Iterable[str]) -> dict[str, str]:
    """Hugging Face tensor name -> llama.cpp's name in a GGUF of architecture `arch_name`."""
    import gguf

    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch_name)
    table = gguf.get_tensor_name_map(arch, num_layers)
    names = {}
    for hf in hf_names:
        name = table.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise AssertionError(f"the gguf package has no llama.cpp name for {hf}")
        names[hf] = name
    return names


def unpermute_rotary_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of a q or k projection (weight or bias): it stores each head's
    rows with the two rotary halves interleaved (row pairs i, i + head_dim/2 adjacent), for its
    interleaved RoPE; Hugging Face keeps the halves apart, as kiln's RoPE expects."""
    rows = weight.shape[0]
    half = rows // num_heads // 2
    return weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


class GGUFTensors:
    """The tensors of one GGUF file, readable by Hugging Face name: the interface of
    safetensors_stream.CheckpointTensors (names, shape, dtype, nbytes, read, in, len)."""

    def __init__(self, reader, names: dict[str, str], rotary_heads: dict[str, int]):
        """`names`: Hugging Face name -> GGUF name for the tensors to expose (those the file lacks
        are left out, as a safetensors reader leaves out what its files lack); `rotary_heads`:
        Hugging Face name -> head count, for the q/k tensors llama.cpp permuted."""
        tensors = {t.name: t for t in reader.tensors}
        self._tensors = {hf: tensors[name] for hf, name in names.items() if name in tensors}
        self._rotary_heads = rotary_heads

    def names(self) -> list[str]:
        return sorted(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        # GGUF lists dimensions fastest-varying first; NumPy and Hugging Face the other way round.
        return tuple(int(d) for d in reversed(self._tensor(name).shape))

    def dtype(self, name: str) -> str:
        """The stored GGML type: "F32", "Q4_1", ..."""
        return self._tensor(name).tensor_type.name

    def nbytes(self, name: str) -> int:
        return int(self._tensor(name).n_bytes)

    def is_float(self, name: str) -> bool:
        """Always: every type kiln reads (check_tensor_types) dequantizes to float32."""
        return name in self._tensors

    def read(self, name: str) -> np.ndarray:
        """One tensor, dequantized to float32, in Hugging Face's layout."""
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        tensor = self._tensor(name)
        data = dequantize(tensor.data, tensor.tensor_type).reshape(self.shape(name))
        if tensor.tensor_type == GGMLQuantizationType.F32:
            data = data.copy()  # otherwise a read-only view of the mapped file
        heads = self._rotary_heads.get(name)
        return unpermute_rotary_rows(data, heads) if heads else data

    def grid(self, name: str):
        """The tensor's quantized grid as stored (compiler/checkpoint/gguf_blocks.py), rows in Hugging Face's
        order; None for a float tensor."""
        from kiln.checkpoint.gguf_blocks import GRID_FORMATS, read_grid

        tensor = self._tensor(name)
        if self.dtype(name) not in GRID_FORMATS or len(self.shape(name)) != 2:
            return None
        rows, cols = self.shape(name)
        grid = read_grid(self.dtype(name), tensor.data, rows, cols)
        heads = self._rotary_heads.get(name)
        # The un-permutation moves whole rows: their integers and their scales alike.
        return grid.rows(unpermute_rotary_rows(np.arange(rows), heads)) if heads else grid

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def _tensor(self, name: str):
        try:
            return self._tensors[name]
        except KeyError:
            raise CheckpointError(
                f"the GGUF file has no tensor for {name}; it is incomplete or not a model of the "
                "architecture its metadata names.") from None


def check_tensor_types(path: Path, reader) -> None:
    """Every tensor is of a type kiln dequantizes; raised before anything is written."""
    unsupported = sorted({t.tensor_type.name for t in reader.tensors} - set(SUPPORTED_TYPES))
    if unsupported:
        example = next(t.name for t in reader.tensors if t.tensor_type.name == unsupported[0])
        raise UnsupportedError(
            f"{Path(path).name} has tensors of type {', '.join(unsupported)} (e.g. {example}), which kiln "
            f"cannot read; kiln reads GGUF tensors of type {', '.join(SUPPORTED_TYPES)}: convert or "
            "download the model in one of those.")
