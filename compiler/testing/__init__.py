"""Test and smoke-run support: synthetic checkpoints, running a library in Node/Chromium."""
