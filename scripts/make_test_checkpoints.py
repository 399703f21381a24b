#!/usr/bin/env python3
"""Write seeded synthetic Hugging Face checkpoints (compiler/testing/synthetic.py) into OUT_DIR/<variant>/.

    python scripts/make_test_checkpoints.py OUT_DIR [--variants llama3-tiny,qwen2-tiny] [--seed N]
"""

import argparse
import sys
import time
from pathlib import Path

from kiln.testing.synthetic import VARIANTS, make_checkpoint


def parameter_count(checkpoint: Path) -> int:
    """Parameters stored in the checkpoint's safetensors (a tied lm_head is stored once)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                count = 1
                for dim in f.get_slice(name).get_shape():
                    count *= dim
                total += count
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, from: {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    from transformers.utils import logging
    logging.disable_progress_bar()  # one line per checkpoint, not a bar per shard
    for name in names:
        start = time.perf_counter()
        path = make_checkpoint(name, args.out_dir / name, seed=args.seed)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        print(f"{name}: {parameter_count(path):,} parameters, {size / 1e6:.2f} MB, "
              f"{seconds:.1f} s -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
