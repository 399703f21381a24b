"""Our safetensors reader against the safetensors library's own torch loader, and its errors."""

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from kiln.checkpoint import safetensors_stream
from kiln.errors import CheckpointError
from kiln.checkpoint.safetensors_stream import CheckpointTensors


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(6, 10, generator=g) * 3
    # Values bf16/f16 cannot hold exactly, plus specials, so a wrong conversion shows.
    special = torch.tensor([0.0, -0.0, 1e-8, 65504.0, 1e30, float("inf"), -float("inf"), 1 / 3])
    return {
        "w.f32": base,
        "w.f16": base.half(),
        "w.bf16": base.bfloat16(),
        "special.bf16": special.bfloat16(),
        "special.f32": special,
        "scalar.bf16": torch.tensor(2.5).bfloat16(),
        "ids.i64": torch.arange(7, dtype=torch.int64) - 3,
        "empty.f16": torch.zeros(0, 4, dtype=torch.float16),
    }


def test_single_file_matches_safetensors_library(tmp_path):
    tensors = _tensors()
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ref = load_file(tmp_path / "model.safetensors")
    ckpt = CheckpointTensors(tmp_path)

    assert ckpt.names() == sorted(tensors)
    assert len(ckpt) == len(tensors)
    assert "w.bf16" in ckpt and "nope" not in ckpt
    assert ckpt.dtype("w.f32") == "float32"
    assert ckpt.dtype("w.f16") == "float16"
    assert ckpt.dtype("w.bf16") == "bfloat16"
    assert ckpt.dtype("ids.i64") == "int64"
    for name, t in ref.items():
        got = ckpt.read(name)
        assert ckpt.shape(name) == tuple(t.shape) == got.shape, name
        if t.is_floating_point():
            assert got.dtype == np.float32, name
            np.testing.assert_array_equal(got, t.float().numpy(), err_msg=name)
        else:
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, t.numpy())


def test_sharded_index(tmp_path):
    tensors = _tensors()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:3],
              "model-00002-of-00002.safetensors": names[3:]}
    weight_map = {}
    for file, part in shards.items():
        save_file({n: tensors[n] for n in part}, tmp_path / file)
        weight_map.update({n: file for n in part})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))

    ckpt = CheckpointTensors(tmp_path)
    assert ckpt.names() == names
    for name in names:
        np.testing.assert_array_equal(ckpt.read(name), tensors[name].float().numpy()
                                      if tensors[name].is_floating_point()
                                      else tensors[name].numpy())


def test_missing_shard_is_named(tmp_path):
    save_file({"a": torch.ones(2)}, tmp_path / "model-00001-of-00002.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        CheckpointTensors(tmp_path)


def test_index_naming_a_tensor_its_shard_lacks(tmp_path):
    save_file({"a": torch.ones(2)}, tmp_path / "s1.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}}))
    with pytest.raises(CheckpointError, match="tensor b"):
        CheckpointTensors(tmp_path)


def _raw_file(path, header: bytes, data: bytes = b"", length=None):
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)


@pytest.mark.parametrize("case", ["short", "huge_length", "not_json", "not_object",
                                  "offsets_past_end", "size_mismatch", "no_dtype",
                                  "overlapping", "gap", "trailing_bytes"])
def test_corrupt_header(tmp_path, case):
    path = tmp_path / "model.safetensors"
    good = {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    if case == "short":
        path.write_bytes(b"\x01\x02")
    elif case == "huge_length":
        _raw_file(path, json.dumps(good).encode(), bytes(8), length=1 << 40)
    elif case == "not_json":
        _raw_file(path, b"{not json", bytes(8))
    elif case == "not_object":
        _raw_file(path, b"[1, 2]", bytes(8))
    elif case == "offsets_past_end":
        _raw_file(path, json.dumps(good).encode(), bytes(4))
    elif case == "size_mismatch":
        bad = {"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}
        _raw_file(path, json.dumps(bad).encode(), bytes(8))
    elif case == "no_dtype":
        _raw_file(path, json.dumps({"t": {"shape": [2], "data_offsets": [0, 8]}}).encode(),
                  bytes(8))
    elif case == "overlapping":  # the safetensors library refuses it; two weights sharing bytes
        _raw_file(path, json.dumps({**good, "u": good["t"]}).encode(), bytes(16))
    elif case == "gap":
        _raw_file(path, json.dumps({"t": {**good["t"], "data_offsets": [8, 16]}}).encode(), bytes(16))
    elif case == "trailing_bytes":
        _raw_file(path, json.dumps(good).encode(), bytes(12))
    with pytest.raises(CheckpointError, match="corrupt safetensors header") as info:
        CheckpointTensors(tmp_path)
    assert "model.safetensors" in str(info.value)


def test_pytorch_bin_only_folder_says_how_to_convert(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        CheckpointTensors(tmp_path)
    message = str(info.value)
    assert "safetensors" in message and "safe_serialization=True" in message
    assert len(message.splitlines()) == 1


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(CheckpointError, match="neither model.safetensors"):
        CheckpointTensors(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        CheckpointTensors(tmp_path / "absent")


def test_unknown_tensor_name(tmp_path):
    save_file({"a": torch.ones(2)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="no tensor named b"):
        CheckpointTensors(tmp_path).read("b")


def test_truncated_data_is_reported(tmp_path):
    save_file({"a": torch.ones(1000)}, tmp_path / "model.safetensors")
    path = tmp_path / "model.safetensors"
    ckpt = CheckpointTensors(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.read("a")


def test_single_file_path_is_accepted(tmp_path):
    save_file({"lora_A": torch.ones(2, 3)}, tmp_path / "adapter_model.safetensors")
    ckpt = CheckpointTensors(tmp_path / "adapter_model.safetensors")
    assert ckpt.names() == ["lora_A"]


def test_read_touches_only_that_tensors_bytes(tmp_path, monkeypatch):
    big = {f"t{i}": torch.randn(256, 256).bfloat16() for i in range(8)}
    save_file(big, tmp_path / "model.safetensors")
    ckpt = CheckpointTensors(tmp_path)

    bytes_read = []
    real_open = open

    class CountingFile:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def seek(self, *args):
            return self.f.seek(*args)

        def read(self, *args):
            data = self.f.read(*args)
            bytes_read.append(len(data))
            return data

        def readinto(self, buf):
            n = self.f.readinto(buf)
            bytes_read.append(n)
            return n

    monkeypatch.setattr(safetensors_stream, "open",
                        lambda *a, **k: CountingFile(real_open(*a, **k)), raising=False)
    got = ckpt.read("t5")
    np.testing.assert_array_equal(got, big["t5"].float().numpy())
    assert sum(bytes_read) == 256 * 256 * 2
