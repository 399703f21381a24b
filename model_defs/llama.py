"""LlamaForCausalLM on tvm.relax.frontend.nn: Llama 1/2 (multi-head), Llama 3/3.1/3.2 (grouped-query
attention, rope_theta, llama3 RoPE scaling, tied embeddings), and the same architecture under other
names (TinyLlama, SmolLM, OpenLLaMA, Vicuna, XGen). Mistral and Qwen2 reuse it with their
differences (mistral.py, qwen2.py).

Attention runs on nn.llm's TIR paged KV cache, which applies RoPE itself and runs on WebGPU, WASM
and the native CPU alike.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from tvm import relax, te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache

from kiln.errors import ConfigFieldError, UnsupportedError

from .layers import Embedding, Linear, WeightFormats

SUPPORTED_ROPE_TYPES = ("default", "llama3")
LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


@dataclass
class LlamaConfig:
    """The fields of a Hugging Face config.json that change the math, checked on the way in."""

    architecture: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None  # None, or the llama3 parameters
    tie_word_embeddings: bool
    max_position_embeddings: int
    qkv_bias: bool = False
    o_bias: bool = False
    sliding_window: int | None = None

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "LlamaConfig":
        """Every field is checked here, where it is read: presence, JSON type, range and the head
        arithmetic, so a bad config.json stops the build in its first second (ConfigFieldError)."""
        arch = (hf.get("architectures") or ["LlamaForCausalLM"])[0]
        _require(hf, arch, "hidden_act", ("silu",), default="silu")
        if _flag(hf, "mlp_bias"):
            raise UnsupportedError(f"{arch} with mlp_bias=true is not supported; kiln supports Llama MLPs without bias.")
        hidden = _integer(hf, "hidden_size")
        heads = _integer(hf, "num_attention_heads")
        kv_heads = _integer(hf, "num_key_value_heads", default=heads)
        if heads % kv_heads:
            raise ConfigFieldError("num_key_value_heads", f"is {kv_heads}, which does not divide num_attention_heads "
                                   f"({heads}); grouped-query attention needs a whole number of query heads per "
                                   "key/value head")
        head_dim = _integer(hf, "head_dim", default=None)
        if head_dim is None:  # transformers' default
            head_dim = hidden // heads
            if head_dim < 1:
                raise ConfigFieldError("hidden_size", f"is {hidden}, fewer than num_attention_heads ({heads}), so "
                                       "the heads have no dimensions")
        if head_dim % 2:
            raise ConfigFieldError("head_dim", f"is {head_dim}; rotary position embeddings rotate pairs of "
                                   "dimensions, so it must be even")
        rope_theta, rope_scaling = _rope(hf, arch)
        attention_bias = _flag(hf, "attention_bias")
        return cls(
            architecture=arch,
            hidden_size=hidden,
            intermediate_size=_integer(hf, "intermediate_size"),
            num_hidden_layers=_integer(hf, "num_hidden_layers", maximum=MAX_LAYERS),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            vocab_size=_integer(hf, "vocab_size"),
            rms_norm_eps=_number(hf, "rms_norm_eps", default=1e-6),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            tie_word_embeddings=_flag(hf, "tie_word_embeddings"),
            max_position_embeddings=_integer(hf, "max_position_embeddings", default=2048),
            qkv_bias=attention_bias,
            o_bias=attention_bias,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _require(hf: dict, arch: str, field: str, allowed: tuple, default=None) -> None:
    value = hf.get(field, default)
    if value not in allowed:
        raise UnsupportedError(
            f"{arch} with {field}={value!r} is not supported; kiln supports {field} in {list(allowed)}."
        )


_REQUIRED = object()
# Sizes index int32 tensors in TVM; a layer count above any published model's is a typo (and
# would take hours to unroll).
MAX_SIZE = 2**31 - 1
MAX_LAYERS = 1024


def _shown(value: Any) -> str:
    kind = {bool: "a boolean", str: "a string", list: "a list", dict: "an object", float: "a number"}.get(type(value))
    return f"{json.dumps(value)[:40]} ({kind})" if kind else json.dumps(value)[:40]


def _absent(hf: dict, field: str, default: Any, name: str) -> Any:
    if default is _REQUIRED:
        raise ConfigFieldError(name, "is missing" if field not in hf else "is null")
    return default


def _integer(hf: dict, field: str, *, default: Any = _REQUIRED, minimum: int = 1, maximum: int = MAX_SIZE,
             name: str | None = None) -> Any:
    """A whole number in [minimum, maximum]; null or absent gives `default` (absent and required: an error)."""
    value, name = hf.get(field), name or field
    if value is None:
        return _absent(hf, field, default, name)
    if type(value) is not int:  # bool is an int to Python, not to JSON
        raise ConfigFieldError(name, f"is {_shown(value)}; it must be a whole number")
    if not minimum <= value <= maximum:
        raise ConfigFieldError(name, f"is {value}; it must be between {minimum} and {maximum}")
    return value


def _number(hf: dict, field: str, *, default: Any = _REQUIRED, name: str | None = None) -> float:
    """A finite number above 0; null or absent as for _integer."""
    value, name = hf.get(field), name or field
    if value is None:
        return _absent(hf, field, default, name)
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ConfigFieldError(name, f"is {_shown(value)}; it must be a finite number")
    if value <= 0:
        raise ConfigFieldError(name, f"is {value}; it must be above 0")
    return float(value)


def _flag(hf: dict, field: str, default: bool = False) -> bool:
    value = hf.get(field)
    if value is None:
        return default
    if type(value) is not bool:
        raise ConfigFieldError(field, f"is {_shown(value)}; it must be true or false")
    return value


def _rope(hf: dict, arch: str) -> tuple[float, dict | None]:
    """RoPE base and scaling, from transformers 5's `rope_parameters` or the older
    `rope_theta` + `rope_scaling` fields."""
    key = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
    params = hf.get(key) or {}
    if not isinstance(params, dict):
        raise ConfigFieldError(key, f"is {_shown(params)}; it must be an object or null")
    theta = _number(params, "rope_theta", default=None, name=f"{key}.rope_theta")
    if theta is None:
        theta = _number(hf, "rope_theta", default=10000.0)
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedError(
            f"{arch} with rope_scaling type {rope_type!r} is not supported; kiln supports "
            f"{', '.join(SUPPORTED_ROPE_TYPES)}."
        )
    if rope_type == "default":
        return theta, None
    missing = [k for k in LLAMA3_ROPE_KEYS if k not in params]
    if missing:
        raise UnsupportedError(f"{arch}'s llama3 rope_scaling lacks {', '.join(missing)}; the config is incomplete.")
    scaling = {"rope_type": "llama3",
               **{k: _number(params, k, name=f"{key}.{k}") for k in LLAMA3_ROPE_KEYS[:3]},
               "original_max_position_embeddings": _integer(params, "original_max_position_embeddings",
                                                            name=f"{key}.original_max_position_embeddings")}
    if scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        # Llama 3 blends between the two wavelength bounds; equal bounds divide by zero.
        raise ConfigFieldError(f"{key}.high_freq_factor", f"is {scaling['high_freq_factor']}; it must be above "
                               f"low_freq_factor ({scaling['low_freq_factor']})")
    return theta, scaling


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, fmt: WeightFormats, prefix: str):
        self.num_q, self.num_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        # q, k and v projections fused along the output dimension (MLC's qkv_proj layout).
        qkv_out = (self.num_q + 2 * self.num_kv) * self.head_dim
        self.qkv_proj = Linear(cfg.hidden_size, qkv_out, fmt(f"{prefix}.qkv_proj"), bias=cfg.qkv_bias)
        self.o_proj = Linear(self.num_q * self.head_dim, cfg.hidden_size, fmt(f"{prefix}.o_proj"), bias=cfg.o_bias)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        b, s, _ = x.shape
        qkv = op.reshape(self.qkv_proj(x), (b, s, self.num_q + 2 * self.num_kv, self.head_dim))
        out = kv_cache.attention_with_fused_qkv(layer_id, qkv, self.num_q, sm_scale=self.head_dim**-0.5)
        return self.o_proj(op.reshape(out, (b, s, self.num_q * self.head_dim)))


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig, fmt: WeightFormats, prefix: str):
        self.intermediate = cfg.intermediate_size
        # gate and up projections fused along the output dimension (MLC's gate_up_proj layout).
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * cfg.intermediate_size, fmt(f"{prefix}.gate_up_proj"))
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, fmt(f"{prefix}.down_proj"))

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        gate, up = op.split(self.gate_up_proj(x), 2, axis=-1)
        return self.down_proj(op.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig, fmt: WeightFormats, prefix: str):
        self.self_attn = Attention(cfg, fmt, f"{prefix}.self_attn")
        self.mlp = MLP(cfg, fmt, f"{prefix}.mlp")
        self.input_layernorm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=fmt.model_dtype)
        self.post_attention_layernorm = nn.RMSNorm(
            cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=fmt.model_dtype
        )

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), kv_cache, layer_id)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig, fmt: WeightFormats):
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size, fmt("model.embed_tokens"))
        self.layers = nn.ModuleList([DecoderLayer(cfg, fmt, f"model.layers.{i}") for i in range(cfg.num_hidden_layers)])
        self.norm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=fmt.model_dtype)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache) -> nn.Tensor:
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, kv_cache, layer_id)
        return self.norm(x)


def _last_position(x: nn.Tensor) -> nn.Tensor:
    """[b, s, d] -> [b, 1, d]: prefill only needs the logits of the last token."""

    def compute(t: te.Tensor):
        b, s, d = t.shape
        return te.compute((b, 1, d), lambda i, _, k: t[i, s - 1, k], name="last_position")

    return op.tensor_expr_op(compute, "last_position", [x])


class LlamaForCausalLM(nn.Module):
    """The exported functions are the interface WebLLM calls (../shared/INTEROP.md):
    embed, prefill, decode and create_tir_paged_kv_cache."""

    def __init__(self, cfg: LlamaConfig, fmt: WeightFormats, target):
        """`fmt` gives each matrix's format by its parameter prefix (model.layers.N.mlp.down_proj, ...)."""
        self.cfg, self.fmt, self.target = cfg, fmt, target
        self.model = LlamaModel(cfg, fmt)
        if not cfg.tie_word_embeddings:
            self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, fmt("lm_head"))

    def _logits(self, hidden: nn.Tensor) -> nn.Tensor:
        head = self.model.embed_tokens if self.cfg.tie_word_embeddings else self.lm_head
        logits = head.times(hidden)
        return logits.astype("float32") if logits.dtype != "float32" else logits

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        return self.model.embed_tokens(input_ids)

    def prefill(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache):
        hidden = self.model(input_embed, paged_kv_cache)
        return self._logits(_last_position(hidden)), paged_kv_cache

    def decode(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache):
        return self._logits(self.model(input_embed, paged_kv_cache)), paged_kv_cache

    def create_tir_paged_kv_cache(
        self,
        max_batch_size: tirx.Var,
        max_total_seq_len: tirx.Var,
        prefill_chunk_size: tirx.Var,
        page_size: tirx.Var,
        support_sliding_window: tirx.Var,
    ) -> PagedKVCache:
        # A sliding window (Mistral) is switched on per sequence at run time, with
        # vm.builtin.attention_kv_cache_enable_sliding_window_for_seq, on a cache created with
        # support_sliding_window=1; the cache then keeps only the window's pages.
        cfg = self.cfg
        return TIRPagedKVCache(
            attn_kind="mha",
            max_batch_size=max_batch_size,
            max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size,
            page_size=page_size,
            support_sliding_window=support_sliding_window,
            layer_partition=relax.ShapeExpr([0, cfg.num_hidden_layers]),
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads,
            qk_head_dim=cfg.head_dim,
            v_head_dim=cfg.head_dim,
            mla_original_qk_head_dim=0,
            mla_original_v_head_dim=0,
            rope_mode=RopeMode.NORMAL,
            rope_scale=1,
            rope_theta=cfg.rope_theta,
            rope_scaling=cfg.rope_scaling or {},
            rope_ext_factors=relax.prim_value(0),
            rotary_dim=cfg.head_dim,
            enable_disaggregation=False,
            dtype=self.fmt.model_dtype,
            target=self.target,
        )

    def get_default_spec(self) -> nn.spec.ModuleSpec:
        hidden, dtype = self.cfg.hidden_size, self.fmt.model_dtype
        with_params = {"param_mode": "packed", "effect_mode": "none"}
        no_params = {"param_mode": "none", "effect_mode": "none"}
        kv = nn.spec.Object(object_type=PagedKVCache)
        spec = {
            "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": with_params},
            "prefill": {"input_embed": nn.spec.Tensor([1, "seq_len", hidden], dtype), "paged_kv_cache": kv,
                        "$": with_params},
            "decode": {"input_embed": nn.spec.Tensor([1, 1, hidden], dtype), "paged_kv_cache": kv, "$": with_params},
            "create_tir_paged_kv_cache": {
                "max_batch_size": int, "max_total_seq_len": int, "prefill_chunk_size": int, "page_size": int,
                "support_sliding_window": int, "$": no_params,
            },
        }
        return nn.spec.ModuleSpec.from_raw(spec, self)


def hf_weight_sources(cfg: LlamaConfig) -> dict[str, list[str]]:
    """Each kiln (MLC-named) weight -> the Hugging Face tensors concatenated along axis 0 to make it.
    A `.weight` of a quantized layer becomes that layer's `q_weight` and `q_scale`."""
    sources: dict[str, list[str]] = {"model.embed_tokens.weight": ["model.embed_tokens.weight"]}
    for i in range(cfg.num_hidden_layers):
        hf, kiln = f"model.layers.{i}", f"model.layers.{i}"
        attn = f"{hf}.self_attn"
        sources[f"{kiln}.self_attn.qkv_proj.weight"] = [f"{attn}.{p}_proj.weight" for p in "qkv"]
        if cfg.qkv_bias:
            sources[f"{kiln}.self_attn.qkv_proj.bias"] = [f"{attn}.{p}_proj.bias" for p in "qkv"]
        sources[f"{kiln}.self_attn.o_proj.weight"] = [f"{attn}.o_proj.weight"]
        if cfg.o_bias:
            sources[f"{kiln}.self_attn.o_proj.bias"] = [f"{attn}.o_proj.bias"]
        sources[f"{kiln}.mlp.gate_up_proj.weight"] = [f"{hf}.mlp.gate_proj.weight", f"{hf}.mlp.up_proj.weight"]
        sources[f"{kiln}.mlp.down_proj.weight"] = [f"{hf}.mlp.down_proj.weight"]
        for norm in ("input_layernorm", "post_attention_layernorm"):
            sources[f"{kiln}.{norm}.weight"] = [f"{hf}.{norm}.weight"]
    sources["model.norm.weight"] = ["model.norm.weight"]
    if not cfg.tie_word_embeddings:
        sources["lm_head.weight"] = ["lm_head.weight"]
    return sources
