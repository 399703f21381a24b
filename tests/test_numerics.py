"""kiln's compiled model against transformers (PyTorch CPU), through the same Relax module built
for the native `llvm` target and the weights read back from the bundle's tensor cache.

q0f32: logits within 1e-3 and identical greedy tokens for every architecture variant.
q4f32_1: the reference is transformers running with kiln's packed weights dequantized by NumPy
(unpack_q4), so the kernels' dequantization and math are checked exactly, not the int4 error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kiln.checkpoint.folder import load_checkpoint
from kiln.weights.quantize import unpack_q4
from kiln.testing.synthetic import make_checkpoint
from native_model import NativeModel

VARIANTS = ["llama2-tiny", "llama3-tiny", "mistral-tiny", "qwen2-tiny"]
STEPS = 16
TOLERANCE = 1e-3


@pytest.fixture(scope="session")
def checkpoint_root(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")


def checkpoint(root, variant):
    folder = root / variant
    if not folder.exists():
        make_checkpoint(variant, folder, seed=0)
    return folder


def prompt_ids(folder, variant) -> list[int]:
    tok = AutoTokenizer.from_pretrained(folder)
    text = "Tell me about kilns, clay and glaze. " * (6 if variant == "mistral-tiny" else 1)
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    if variant == "mistral-tiny":  # the prompt must be longer than the sliding window
        window = load_checkpoint(folder).model_config.sliding_window
        assert len(ids) > 2 * window, (len(ids), window)
    return ids


def reference_greedy(model, prompt: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    """transformers' greedy decoding, with the logits of every step."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=steps, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    tokens = out.sequences[0, len(prompt):].tolist()
    return tokens, [l[0].float().numpy() for l in out.logits]


def compare(kiln: NativeModel, ref_model, prompt):
    ref_tokens, ref_logits = reference_greedy(ref_model, prompt, STEPS)
    tokens, logits = kiln.greedy(prompt, STEPS)
    prefill_diff = np.abs(logits[0] - ref_logits[0]).max()
    assert prefill_diff <= TOLERANCE, f"prefill logits differ by {prefill_diff}"
    assert tokens == ref_tokens
    step_diff = max(np.abs(a - b).max() for a, b in zip(logits, ref_logits))
    assert step_diff <= TOLERANCE, f"decode logits differ by {step_diff}"
    assert len(set(ref_tokens)) > 1, "the reference output is one repeated token: the test would prove little"
    return prefill_diff, step_diff


@pytest.mark.parametrize("variant", VARIANTS)
def test_q0f32_matches_transformers(variant, checkpoint_root, tmp_path, report):
    folder = checkpoint(checkpoint_root, variant)
    kiln = NativeModel(folder, "q0f32", tmp_path / "bundle")
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prefill_diff, step_diff = compare(kiln, ref, prompt_ids(folder, variant))
    report(f"\n[{variant} q0f32] prefill max|diff| {prefill_diff:.1e}, decode max|diff| {step_diff:.1e}")


def dequantized_state_dict(kiln: NativeModel, folder, ref_model) -> dict[str, torch.Tensor]:
    """transformers' state dict with every quantized weight replaced by NumPy's dequantization of
    kiln's packed q4 tensors (split back into q/k/v and gate/up)."""
    ckpt = load_checkpoint(folder)
    state = ref_model.state_dict()
    for name, parts in ckpt.family.weight_sources(ckpt.model_config).items():
        base = name[: -len(".weight")]
        if f"{base}.q_weight" not in kiln.weights:
            continue
        rows = [state[p].shape[0] for p in parts]
        full = unpack_q4(kiln.weights[f"{base}.q_weight"], kiln.weights[f"{base}.q_scale"], state[parts[0]].shape[1])
        for part, block in zip(parts, np.split(full, np.cumsum(rows)[:-1], axis=0)):
            state[part] = torch.from_numpy(np.ascontiguousarray(block))
    if ckpt.model_config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return state


@pytest.mark.parametrize("variant", ["llama3-tiny", "qwen2-tiny"])
def test_q4f32_matches_dequantized_reference(variant, checkpoint_root, tmp_path, report):
    folder = checkpoint(checkpoint_root, variant)
    kiln = NativeModel(folder, "q4f32_1", tmp_path / "bundle")
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ref.load_state_dict(dequantized_state_dict(kiln, folder, ref), strict=False)
    prefill_diff, step_diff = compare(kiln, ref, prompt_ids(folder, variant))
    report(f"\n[{variant} q4f32_1] prefill max|diff| {prefill_diff:.1e}, decode max|diff| {step_diff:.1e}")
