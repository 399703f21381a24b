"""Weights: quantization formats, the per-matrix plan, conversion, the tensor cache."""
