"""Reading checkpoints: Hugging Face folders and GGUF files, into one Checkpoint."""
