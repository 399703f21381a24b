"""The bundle: kiln build's steps, kiln-config.json, the checks before a build."""
