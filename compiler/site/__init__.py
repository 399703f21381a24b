"""The chat site: building it, serving it, the demo command."""
