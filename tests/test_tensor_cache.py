"""tensor-cache.json writer: shard cap, alignment, hashes, and round trips through our reader
and through TVM's own `tvm.contrib.tvmjs.load_tensor_cache`."""

import hashlib
import json

import numpy as np
import pytest

from kiln.errors import KilnError
from kiln.weights.tensor_cache import MAX_SHARD_BYTES, TensorCacheWriter, read_tensor_cache

CAP = 1024


def _tensors():
    rng = np.random.default_rng(0)
    # Odd sizes (6, 5, 3 bytes...) so that alignment padding is exercised.
    return {
        "a.f32": rng.standard_normal((10, 7)).astype(np.float32),
        "b.f16": rng.standard_normal(3).astype(np.float16),
        "c.u32": rng.integers(0, 2**32, (4, 5), dtype=np.uint32),
        "d.u8": np.arange(5, dtype=np.uint8),
        "e.i32": np.arange(-6, 6, dtype=np.int32).reshape(3, 4),
        "f.f32": rng.standard_normal((50, 4)).astype(np.float32),   # 800 bytes: fills a shard
        "g.f16": rng.standard_normal((9,)).astype(np.float16),
        "h.big": rng.standard_normal((40, 10)).astype(np.float32),  # 1600 bytes > CAP
        "i.scalar": np.array(1.5, np.float32),
        "j.noncontig": rng.standard_normal((6, 8)).astype(np.float32).T,
        "k.bigendian": np.arange(4, dtype=">f4"),
    }


def _write(folder, tensors, cap=CAP):
    with TensorCacheWriter(folder, max_shard_bytes=cap) as writer:
        for name, array in tensors.items():
            writer.add(name, array)
    return json.loads((folder / "tensor-cache.json").read_text())


def test_shards_respect_cap_alignment_and_hashes(tmp_path):
    tensors = _tensors()
    cache = _write(tmp_path, tensors)
    assert len(cache["records"]) >= 3
    assert [s["dataPath"] for s in cache["records"]] == [
        f"params_shard_{i}.bin" for i in range(len(cache["records"]))]
    seen = []
    for shard in cache["records"]:
        blob = (tmp_path / shard["dataPath"]).read_bytes()
        assert shard["format"] == "raw-shard"
        assert shard["nbytes"] == len(blob)
        assert shard["sha256"] == hashlib.sha256(blob).hexdigest()
        assert shard["md5sum"] == hashlib.md5(blob).hexdigest()
        recs = shard["records"]
        if len(recs) > 1:
            assert len(blob) <= CAP
        else:
            assert recs[0]["nbytes"] <= CAP or recs[0]["byteOffset"] == 0
        end = 0
        for rec in recs:
            assert rec["format"] == "raw"
            assert rec["byteOffset"] % 4 == 0
            assert rec["byteOffset"] >= end  # in order, no overlap
            end = rec["byteOffset"] + rec["nbytes"]
            assert end <= len(blob)
            seen.append(rec["name"])
    assert seen == list(tensors)
    # The oversized tensor sits alone in its own shard.
    (big,) = [s for s in cache["records"] if any(r["name"] == "h.big" for r in s["records"])]
    assert len(big["records"]) == 1 and big["nbytes"] == 1600


def test_dtypes_are_tvm_spellings(tmp_path):
    cache = _write(tmp_path, _tensors())
    dtypes = {r["name"]: r["dtype"] for s in cache["records"] for r in s["records"]}
    assert dtypes["a.f32"] == "float32" and dtypes["b.f16"] == "float16"
    assert dtypes["c.u32"] == "uint32" and dtypes["e.i32"] == "int32" and dtypes["d.u8"] == "uint8"
    shapes = {r["name"]: r["shape"] for s in cache["records"] for r in s["records"]}
    assert shapes["a.f32"] == [10, 7] and shapes["i.scalar"] == [] and shapes["j.noncontig"] == [8, 6]


def test_round_trip_through_our_reader(tmp_path):
    tensors = _tensors()
    _write(tmp_path, tensors)
    got = read_tensor_cache(tmp_path)
    assert list(got) == list(tensors)
    for name, array in tensors.items():
        assert got[name].dtype == array.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


# TVM's loader opens shards without closing them; that is its warning, not ours.
@pytest.mark.filterwarnings("ignore::ResourceWarning",
                            "ignore::pytest.PytestUnraisableExceptionWarning")
def test_round_trip_through_tvm_loader(tmp_path):
    tvm = pytest.importorskip("tvm")
    from tvm.contrib.tvmjs import load_tensor_cache

    tensors = _tensors()
    _write(tmp_path, tensors)
    loaded, metadata = load_tensor_cache(str(tmp_path), tvm.cpu())
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        out = loaded[name].numpy()
        assert out.dtype == array.dtype.newbyteorder("=") and out.shape == array.shape, name
        np.testing.assert_array_equal(out, array, err_msg=name)
    assert metadata["ParamSize"] == sum(a.size for a in tensors.values())


def test_metadata_counts_original_parameters(tmp_path):
    with TensorCacheWriter(tmp_path) as writer:
        writer.add("w.q_weight", np.zeros((4, 8), np.uint32), param_count=4 * 64)
        writer.add("w.q_scale", np.zeros((4, 2), np.float32), param_count=0)
        writer.add("norm", np.ones(64, np.float32))
    meta = writer.close()["metadata"]
    assert meta["ParamSize"] == 4 * 64 + 64
    assert meta["ParamBytes"] == 4 * 8 * 4 + 4 * 2 * 4 + 64 * 4
    assert meta["BitsPerParam"] == pytest.approx(8 * meta["ParamBytes"] / meta["ParamSize"])
    assert json.loads((tmp_path / "tensor-cache.json").read_text())["metadata"] == meta


def test_default_cap_is_32_mib(tmp_path):
    assert MAX_SHARD_BYTES == 32 * 1024 * 1024
    assert TensorCacheWriter(tmp_path).max_shard_bytes == MAX_SHARD_BYTES


def test_corrupt_shard_is_named(tmp_path):
    _write(tmp_path, _tensors())
    path = tmp_path / "params_shard_1.bin"
    blob = bytearray(path.read_bytes())
    blob[3] ^= 0x40
    path.write_bytes(bytes(blob))
    with pytest.raises(KilnError, match="params_shard_1.bin"):
        read_tensor_cache(tmp_path)
    read_tensor_cache(tmp_path, verify=False)  # same size: only the hash can tell


def test_truncated_and_missing_shards(tmp_path):
    _write(tmp_path, _tensors())
    path = tmp_path / "params_shard_0.bin"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(KilnError, match="params_shard_0.bin"):
        read_tensor_cache(tmp_path)
    path.unlink()
    with pytest.raises(KilnError, match="params_shard_0.bin is missing"):
        read_tensor_cache(tmp_path)


def test_duplicate_name_rejected(tmp_path):
    with TensorCacheWriter(tmp_path) as writer:
        writer.add("x", np.zeros(4, np.float32))
        with pytest.raises(ValueError, match="already added"):
            writer.add("x", np.zeros(4, np.float32))


def test_error_inside_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with TensorCacheWriter(tmp_path, max_shard_bytes=CAP) as writer:
            for name, array in _tensors().items():
                writer.add(name, array)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
