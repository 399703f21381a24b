"""kiln compiler: Llama-family checkpoints to WebGPU / WASM web bundles."""
