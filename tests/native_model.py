"""Run a kiln model natively (the same Relax module, built for the `llvm` target) with weights read
back from the bundle's tensor cache: fast numeric checks against transformers, no browser.
With `all_logits`, the module also has `prefill_all` (the logits of every position of a chunk), for
teacher-forced checks such as perplexity."""

from __future__ import annotations

from pathlib import Path

import dataclasses

import numpy as np

from kiln.checkpoint.folder import load_checkpoint
from kiln.weights.convert import convert_weights
from kiln.kernels.model_module import build_model_module
from kiln.weights.quantize import get_quantization
from kiln.weights.tensor_cache import read_tensor_cache
from kiln.weights.plan import plan_formats

CONTEXT = 256
PREFILL_CHUNK = 128


def _with_all_logits(model_class):
    """The family's model class plus `prefill_all`. Bundles never carry it: a chat has no use for
    the logits of every prompt position, and a browser would pay for them."""
    from tvm.relax.frontend.nn.spec import MethodSpec, ModuleSpec

    class AllLogits(model_class):
        def prefill_all(self, input_embed, paged_kv_cache):
            return self._logits(self.model(input_embed, paged_kv_cache)), paged_kv_cache

        def get_default_spec(self):
            spec = super().get_default_spec()
            prefill = spec.method_specs[spec.method_names.index("prefill")]
            extra = MethodSpec(self.prefill_all, prefill.arg_names, prefill.arg_specs, prefill.param_mode,
                               prefill.effect_mode)
            return ModuleSpec(self, [*spec.method_names, "prefill_all"], [*spec.method_specs, extra])

    return AllLogits


class NativeModel:
    def __init__(self, checkpoint: Path, quantization: str, work_dir: Path, *, context: int = CONTEXT,
                 all_logits: bool = False):
        import tvm
        from tvm import relax

        self.tvm = tvm
        self.context = context
        ckpt = load_checkpoint(checkpoint)
        family = ckpt.family
        if all_logits:
            family = dataclasses.replace(family, model_class=_with_all_logits(family.model_class))
        target = tvm.target.Target("llvm")
        sizes = dict(context_window=context, prefill_chunk=PREFILL_CHUNK, with_sampling=False)
        quant = get_quantization(quantization)
        self.formats = plan_formats(ckpt, quant).formats  # as kiln build chooses them
        module = build_model_module(family, ckpt.model_config, quant, target, formats=self.formats, **sizes)
        plain = build_model_module(family, ckpt.model_config, get_quantization("q0f32"), target, **sizes)
        convert_weights(ckpt, module.params, {p["name"]: p["shape"] for p in plain.params}, quant, work_dir,
                        formats=self.formats)
        self.weights = read_tensor_cache(work_dir)
        self.params = [tvm.runtime.tensor(self.weights[p["name"]]) for p in module.params]
        self.vm = relax.VirtualMachine(relax.build(module.mod, target=target), tvm.cpu())
        self.config = ckpt.model_config
        self._builtin = {name: tvm.get_global_func(f"vm.builtin.kv_state_{name}")
                         for name in ("add_sequence", "begin_forward", "end_forward")}
        self.reset()

    def reset(self) -> None:
        shape = self.tvm.runtime.ShapeTuple
        window = self.config.sliding_window
        self.kv = self.vm["create_tir_paged_kv_cache"](shape([1]), shape([self.context]), shape([PREFILL_CHUNK]),
                                                       shape([16]), shape([1 if window else 0]))
        self._builtin["add_sequence"](self.kv, 0)
        if window:
            enable = self.tvm.get_global_func("vm.builtin.attention_kv_cache_enable_sliding_window_for_seq")
            # The cache attends over what it holds plus the new token: hold window - 1 tokens.
            enable(self.kv, 0, window - 1, 0)
        self.length = 0

    def _step(self, fn: str, ids: list[int]) -> np.ndarray:
        """Logits of `fn` ("prefill", "decode" or "prefill_all") on `ids`, flattened."""
        tvm = self.tvm
        emb = self.vm["embed"](tvm.runtime.tensor(np.asarray(ids, dtype="int32")), self.params).numpy()
        self._builtin["begin_forward"](self.kv, tvm.runtime.ShapeTuple([0]), tvm.runtime.ShapeTuple([len(ids)]))
        logits, self.kv = self.vm[fn](tvm.runtime.tensor(emb[None]), self.kv, self.params)
        self._builtin["end_forward"](self.kv)
        self.length += len(ids)
        return logits.numpy().reshape(-1)

    def chunk_limit(self) -> int:
        """The longest exact prefill chunk now. Within a chunk attention is causal over the whole
        chunk, so with a sliding window W the cached tokens plus the chunk must stay within W."""
        window = self.config.sliding_window
        if not window:
            return PREFILL_CHUNK
        cached = min(self.length, window - 1)
        return max(1, min(PREFILL_CHUNK, window - cached))

    def prefill(self, ids: list[int]) -> np.ndarray:
        """Logits of the last prompt token; the prompt goes in chunks of at most chunk_limit()."""
        start = 0
        while start < len(ids):
            chunk = ids[start:start + self.chunk_limit()]
            logits = self._step("prefill", chunk)
            start += len(chunk)
        return logits

    def perplexity(self, ids: list[int]) -> float:
        """exp(mean negative log-likelihood of ids[1:]), teacher-forced from a fresh cache in
        prefill chunks; needs `all_logits`."""
        self.reset()
        nll, start = 0.0, 0
        vocab = self.config.vocab_size
        while start < len(ids) - 1:
            chunk = ids[start:start + self.chunk_limit()]
            logits = self._step("prefill_all", chunk).reshape(len(chunk), vocab).astype(np.float64)
            targets = ids[start + 1:start + 1 + len(chunk)]
            logits = logits[:len(targets)]
            top = logits.max(axis=1)
            log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
            nll += float((log_z - logits[np.arange(len(targets)), targets]).sum())
            start += len(chunk)
        return float(np.exp(nll / (len(ids) - 1)))

    def decode(self, token: int) -> np.ndarray:
        return self._step("decode", [token])

    def greedy(self, prompt: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
        """`steps` greedy tokens after `prompt`, and the logits each was chosen from."""
        logits = self.prefill(prompt)
        tokens, all_logits = [], [logits]
        for _ in range(steps):
            tokens.append(int(np.argmax(logits)))
            if len(tokens) == steps:
                break
            logits = self.decode(tokens[-1])
            all_logits.append(logits)
        return tokens, all_logits
