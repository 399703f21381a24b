"""Kernels: the Relax model module, kiln's schedules, linking into WebAssembly."""
