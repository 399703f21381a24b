"""`kiln build`: a Hugging Face checkpoint folder or a GGUF file -> a web bundle (kernels for WebGPU
and WASM, weight shards, tokenizer, kiln-config.json and mlc-chat-config.json).

Everything that can fail on the user's input is checked first (plan_build: output safety,
compiler/bundle/validate.py, the options, WebLLM's chat config), so such a failure comes in seconds, not
after minutes of compiling. The bundle is assembled in a hidden sibling folder and renamed into
place only when complete, so a failure never leaves a half-written bundle and never destroys the
previous one.
"""

from __future__ import annotations

import datetime
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

from kiln.bundle.kiln_config import CONFIG_FILE, make_kiln_config
from kiln.checkpoint.facts import ChatFacts
from kiln.checkpoint.folder import Checkpoint, load_checkpoint
from kiln.errors import UnsupportedError
from kiln.kernels.wasm_library import TARGETS
from kiln.staging import check_output, staged_folder
from kiln.weights.plan import FormatPlan
from kiln.weights.quantize import DEFAULT_GGUF_QUANTIZATION, DEFAULT_QUANTIZATION, Quantization, get_quantization

DEFAULT_TARGETS = ("webgpu", "wasm")
MAX_DEFAULT_CONTEXT = 4096
MAX_DEFAULT_PREFILL_CHUNK = 1024


@dataclass
class BuildOptions:
    checkpoint: Path
    out: Path
    quantization: str | None = None  # None: q4f32_2 for a GGUF file (its grids kept exactly), else q4f16_2
    targets: tuple[str, ...] = DEFAULT_TARGETS
    context_window: int | None = None
    prefill_chunk: int | None = None
    force: bool = False


@dataclass
class BuildReport:
    out: Path
    params: int = 0
    param_bytes: int = 0
    bits_per_param: float = 0.0
    bundle_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, int] = field(default_factory=dict)  # this process's peak after each step

    def finished(self, step: str, started: float) -> None:
        self.seconds[step] = time.monotonic() - started
        self.peak_rss_mib[step] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def library_name(target: str) -> str:
    return f"model_{target}.wasm"


def default_quantization(ckpt: Checkpoint) -> str:
    from kiln.checkpoint.gguf import GGUFCheckpoint

    return DEFAULT_GGUF_QUANTIZATION if isinstance(ckpt, GGUFCheckpoint) else DEFAULT_QUANTIZATION


def _check_options(opts: BuildOptions, ckpt: Checkpoint) -> tuple[Quantization, int, int]:
    quant = get_quantization(opts.quantization or default_quantization(ckpt))
    unknown = [t for t in opts.targets if t not in TARGETS]
    if unknown or not opts.targets:
        raise UnsupportedError(
            f"unknown target {', '.join(unknown) or '(none)'}; choose from {', '.join(DEFAULT_TARGETS)}."
        )
    max_ctx = ckpt.model_config.max_position_embeddings
    # None is "not given"; 0 is a value, and refused.
    context = min(max_ctx, MAX_DEFAULT_CONTEXT) if opts.context_window is None else opts.context_window
    if not 1 <= context <= max_ctx:
        raise UnsupportedError(
            f"--context-window {context} must be between 1 and the model's maximum of {max_ctx} tokens "
            "(max_position_embeddings); pass a value in that range.")
    prefill = min(context, MAX_DEFAULT_PREFILL_CHUNK) if opts.prefill_chunk is None else opts.prefill_chunk
    if not 1 <= prefill <= context:
        raise UnsupportedError(f"--prefill-chunk {prefill} must be between 1 and the context window ({context}).")
    return quant, context, prefill


@dataclass
class BuildPlan:
    """What a build decided before compiling anything: every check that can fail on the user's
    input has run by the time one exists."""

    ckpt: Checkpoint
    facts: ChatFacts  # token ids, sampling defaults, chat template: both configs are written from them
    quant: Quantization
    context: int
    prefill: int
    mlc_config: dict
    formats: FormatPlan  # each matrix's format


def plan_build(opts: BuildOptions) -> BuildPlan:
    """The first seconds of a build: output safety, the checkpoint's files, the options, and
    WebLLM's chat config (which renders the chat template). Compiles nothing, writes nothing."""
    from kiln.webllm.mlc_config import mlc_chat_config
    from kiln.kernels.model_module import cache_window
    from kiln.bundle.validate import validate_checkpoint
    from kiln.weights.plan import plan_formats

    check_output(Path(opts.out), opts.force, inputs=[Path(opts.checkpoint)], input_kind="checkpoint",
                 marker=CONFIG_FILE, what="bundle folder")
    ckpt = load_checkpoint(opts.checkpoint)
    facts = validate_checkpoint(ckpt)
    quant, context, prefill = _check_options(opts, ckpt)
    formats = plan_formats(ckpt, quant)
    mlc = mlc_chat_config(
        ckpt, facts, quantization=quant.name, context_window=context, prefill_chunk=prefill,
        sliding_window=cache_window(ckpt.model_config),
        # A template that prints today's date gets the build date: WebLLM cannot call a clock.
        today=datetime.date.today(),
    )
    return BuildPlan(ckpt, facts, quant, context, prefill, mlc, formats)


def build_bundle(opts: BuildOptions, log=print) -> BuildReport:
    from tqdm import tqdm

    from kiln.weights.convert import convert_weights
    from kiln.kernels.model_module import build_model_module
    from kiln.kernels.wasm_library import build_wasm_library, make_target

    started = time.monotonic()
    out = Path(opts.out)
    plan = plan_build(opts)
    ckpt, quant = plan.ckpt, plan.quant
    report = BuildReport(out=out)
    report.finished("read checkpoint", started)
    formats = plan.formats.formats
    log(f"weights as {quant.name}, per matrix (source type -> kiln format):", flush=True)
    for line in plan.formats.summary():
        log(f"  {line}", flush=True)

    with staged_folder(out) as staging:
        family, cfg = ckpt.family, ckpt.model_config
        sizes = dict(context_window=plan.context, prefill_chunk=plan.prefill)

        step = time.monotonic()
        plain = build_model_module(family, cfg, get_quantization("q0f32"), make_target("wasm"), with_sampling=False, **sizes)
        model = build_model_module(family, cfg, quant, make_target("wasm"), with_sampling=False, formats=formats,
                                   **sizes)
        logical_shapes = {p["name"]: p["shape"] for p in plain.params}
        total = ckpt.weight_bytes()
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"weights → {quant.name}", leave=True) as bar:
            cache = convert_weights(ckpt, model.params, logical_shapes, quant, staging,
                                    on_tensor=lambda name, nbytes: bar.update(nbytes), formats=formats)
        report.finished("weights", step)

        libraries = {}
        for i, target in enumerate(opts.targets, 1):
            step = time.monotonic()
            log(f"[{i}/{len(opts.targets)}] compiling {target} kernels ...", flush=True)
            tvm_target = make_target(target)
            module = build_model_module(family, cfg, quant, tvm_target, formats=formats, **sizes)
            build_wasm_library(module.mod, target, staging / library_name(target))
            libraries[target] = library_name(target)
            report.finished(f"{target} kernels", step)
            log(f"      {library_name(target)} in {report.seconds[f'{target} kernels']:.1f} s", flush=True)

        step = time.monotonic()
        ckpt.write_tokenizer_files(staging)
        kiln_config = make_kiln_config(ckpt, plan.facts, quant, libraries=libraries, tensor_cache=cache, **sizes)
        (staging / CONFIG_FILE).write_text(json.dumps(kiln_config, indent=2))
        (staging / "mlc-chat-config.json").write_text(json.dumps(plan.mlc_config, indent=2))
        report.finished("config", step)
    report.params = cache["metadata"]["ParamSize"]
    report.param_bytes = cache["metadata"]["ParamBytes"]
    report.bits_per_param = cache["metadata"]["BitsPerParam"]
    report.bundle_bytes = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    report.finished("total", started)
    return report
