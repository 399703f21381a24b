"""Write and read TVM's `tensor-cache.json` weight format (params_shard_N.bin + one JSON index).

The layout is what `tvm.contrib.tvmjs.dump_tensor_cache` writes and what tvmjs / WebLLM load:

    {"metadata": {"ParamSize", "ParamBytes", "BitsPerParam"},
     "records": [{"dataPath", "format": "raw-shard", "nbytes", "md5sum", "sha256",
                  "records": [{"name", "shape", "dtype", "format": "raw", "nbytes",
                               "byteOffset"}]}]}

kiln's addition is `sha256` per shard (hex), which kiln's runtime verifies; `md5sum` is kept for
compatibility. Tensors are stored losslessly ("raw"), never as MLC's lossy "f32-to-bf16".
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from kiln import schemas
from kiln.errors import KilnError

MAX_SHARD_BYTES = 32 * 1024 * 1024
CACHE_FILE = "tensor-cache.json"
SHARD_PREFIX = "params_shard"

# Every tensor starts at a multiple of 4 bytes: tvmjs copies a record straight into a WebGPU
# buffer only when offsets and sizes are 4-byte aligned. Wider dtypes get their own alignment.
MIN_ALIGN = 4

# dtypes we store, spelled as TVM spells them (NumPy's names coincide for these; bfloat16 comes
# from ml_dtypes).
_TVM_DTYPES = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
               "uint64", "uint32", "uint16", "uint8"}


class TensorCacheWriter:
    """Streams tensors into size-capped shards; use as a context manager, or call close().

    Bytes go to disk (and into the shard's hashes) as each tensor is added, so memory holds only
    the tensor being written. A new shard starts when the next tensor would push the current one
    past `max_shard_bytes`; a single tensor larger than the cap gets a shard of its own (kiln's
    compiler splits or sizes its tensors so this does not happen for real models).
    `out_dir` should be fresh: files from an earlier run are not removed.
    """

    def __init__(self, out_dir: Path, max_shard_bytes: int = MAX_SHARD_BYTES):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = max_shard_bytes
        self._shards: list[dict] = []
        self._names: set[str] = set()
        self._written: list[Path] = []
        self._file = None           # the open shard, opened lazily so no shard is ever empty
        self._records: list[dict] = []
        self._offset = 0
        self._sha256 = self._md5 = None
        self._param_count = 0
        self._param_bytes = 0
        self._result: dict | None = None

    def __enter__(self) -> TensorCacheWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add(self, name: str, array: np.ndarray, param_count: int | None = None) -> None:
        """Append one tensor. `param_count` is how many original parameters it encodes (a
        packed q4 weight has fewer elements than the weight); default: its element count."""
        if self._result is not None:
            raise RuntimeError("TensorCacheWriter is closed")
        if name in self._names:
            raise ValueError(f"tensor {name} was already added to the tensor cache")
        array = np.asarray(array)
        dtype = array.dtype.name
        if dtype not in _TVM_DTYPES:
            raise ValueError(f"tensor {name} has dtype {dtype}, which the tensor cache does not store")
        # Little-endian, C order: exactly the bytes tvmjs will view as this dtype and shape.
        # (np.asarray, not np.ascontiguousarray, which would turn a 0-d scalar into shape [1].)
        array = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")
        data = array.reshape(-1).view(np.uint8)
        nbytes = data.size

        align = max(MIN_ALIGN, array.dtype.itemsize)
        offset = -(-self._offset // align) * align
        if self._records and offset + nbytes > self.max_shard_bytes:
            self._finish_shard()
            offset = 0
        if self._file is None:
            self._open_shard()
        self._write(bytes(offset - self._offset))  # zero padding up to the aligned offset
        self._write(data)
        self._records.append({"name": name, "shape": [int(d) for d in array.shape],
                              "dtype": dtype, "format": "raw", "nbytes": nbytes,
                              "byteOffset": offset})
        self._names.add(name)
        self._param_count += array.size if param_count is None else int(param_count)
        self._param_bytes += nbytes

    def close(self) -> dict:
        """Finish the last shard, write tensor-cache.json, and return its content."""
        if self._result is not None:
            return self._result
        self._finish_shard()
        size, nbytes = self._param_count, self._param_bytes
        result = {
            "metadata": {"ParamSize": size, "ParamBytes": nbytes,
                         "BitsPerParam": 8 * nbytes / size if size else 0.0},
            "records": self._shards,
        }
        schemas.validate(result, schemas.TENSOR_CACHE)
        # Written under a temporary name and renamed: a reader never sees a half-written index.
        tmp = self.out_dir / (CACHE_FILE + ".tmp")
        tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
        os.replace(tmp, self.out_dir / CACHE_FILE)
        self._result = result
        return result

    def abort(self) -> None:
        """Stop after an error: close and delete the shards written so far, and any index."""
        if self._result is not None:
            (self.out_dir / CACHE_FILE).unlink(missing_ok=True)
        if self._file is not None:
            self._file.close()
            self._file = None
        for path in self._written:
            path.unlink(missing_ok=True)
        self._written.clear()

    def _open_shard(self) -> None:
        path = self.out_dir / f"{SHARD_PREFIX}_{len(self._shards)}.bin"
        self._file = open(path, "wb")
        self._written.append(path)
        self._sha256, self._md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        self._records, self._offset = [], 0

    def _write(self, data) -> None:
        self._file.write(data)
        self._sha256.update(data)
        self._md5.update(data)
        self._offset += len(data)

    def _finish_shard(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        # Key order as TVM's dump_tensor_cache writes it, then kiln's sha256.
        self._shards.append({
            "dataPath": self._written[-1].name, "format": "raw-shard", "nbytes": self._offset,
            "records": self._records, "md5sum": self._md5.hexdigest(),
            "sha256": self._sha256.hexdigest(),
        })
        self._records = []


def read_tensor_cache(folder: Path, verify: bool = True) -> dict[str, np.ndarray]:
    """All tensors of a tensor cache, by name (for tests and tools: reads one shard at a time).

    With `verify`, each shard's size and sha256 (or md5sum, for caches without sha256) must match
    its record. bfloat16 and "f32-to-bf16" tensors are returned as float32 (exact widening).
    """
    folder = Path(folder)
    index = folder / CACHE_FILE
    try:
        cache = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KilnError(f"cannot read {index} ({exc}); rebuild the bundle with kiln build.") from None
    tensors = {}
    for shard in cache["records"]:
        path = folder / shard["dataPath"]
        try:
            blob = path.read_bytes()
        except OSError:
            raise KilnError(f"weight shard {shard['dataPath']} is missing from {folder}; copy the "
                            "whole bundle folder or rebuild it with kiln build.") from None
        if verify:
            _verify_shard(shard, blob)
        for rec in shard["records"]:
            tensors[rec["name"]] = _decode(rec, blob)
    return tensors


def _verify_shard(shard: dict, blob: bytes) -> None:
    name = shard["dataPath"]
    if "sha256" in shard:
        ok = hashlib.sha256(blob).hexdigest() == shard["sha256"]
    elif "md5sum" in shard:
        ok = hashlib.md5(blob, usedforsecurity=False).hexdigest() == shard["md5sum"]
    else:
        raise KilnError(f"weight shard {name} has no sha256 to verify it against; rebuild the "
                        "bundle with kiln build or read it with verify=False.")
    if len(blob) != shard["nbytes"] or not ok:
        raise KilnError(f"weight shard {name} does not match its recorded size and hash (corrupt "
                        "or partly copied); copy it again or rebuild the bundle with kiln build.")


def _decode(rec: dict, blob: bytes) -> np.ndarray:
    start, nbytes, shape, dtype = rec["byteOffset"], rec["nbytes"], rec["shape"], rec["dtype"]
    if start < 0 or start + nbytes > len(blob):
        raise KilnError(f"tensor {rec['name']} lies outside its shard's {len(blob)} bytes; "
                        "rebuild the bundle with kiln build.")
    raw = np.frombuffer(blob, dtype=np.uint8, count=nbytes, offset=start)
    if dtype == "bfloat16" or (dtype == "float32" and rec["format"] == "f32-to-bf16"):
        # bf16 bits are the top half of an f32.
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if rec["format"] != "raw" or dtype not in _TVM_DTYPES:
        raise KilnError(f"tensor {rec['name']} is stored as {rec['format']} {dtype}, which kiln "
                        "cannot read; rebuild the bundle with kiln build.")
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes != expected:
        raise KilnError(f"tensor {rec['name']} has {nbytes} bytes but shape {shape} needs "
                        f"{expected}; rebuild the bundle with kiln build.")
    return raw.view(np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
