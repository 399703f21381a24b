"""Greedy runs the runtime tests compare: transformers' `generate` and kiln's runtime (KilnModel) on
the WASM backend in Node (runtime_web/harness/node_generate.mjs), on the same prompt ids."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from kiln import toolchain

RUNNER = toolchain.REPO_ROOT / "runtime_web" / "harness" / "node_generate.mjs"
KILN_MJS = toolchain.REPO_ROOT / "runtime_web" / "dist" / "kiln.mjs"


def transformers_greedy(model, prompt: list[int], steps: int) -> tuple[list[int], np.ndarray]:
    """(`steps` greedy tokens, the logits of the prompt's last position)."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=steps, do_sample=False, eos_token_id=None,
                             pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    return out.sequences[0, len(prompt):].tolist(), out.logits[0][0].numpy()


def kiln_node_greedy(bundle: Path, prompt: list[int], steps: int) -> tuple[list[int], np.ndarray]:
    """The same from kiln's runtime on the bundle's WASM library, in Node."""
    proc = subprocess.run([toolchain.find_tool("node"), str(RUNNER), str(toolchain.tvmjs_bundle()), str(KILN_MJS),
                           str(bundle)], input=json.dumps({"prompt": prompt, "steps": steps}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    return result["tokens"], np.array(result["prefillLogits"])
