"""The JSON Schemas in compiler/schema/: the contracts between the compiler and the web runtime
(kiln-config.json, tensor-cache.json, a site's models.json). The runtime's types and validation are
generated from the same files (runtime_web/scripts/gen_schema_types.mjs); the compiler validates
each file against its schema as it writes it, so a writer bug fails the build, not the browser."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).with_name("schema")
KILN_CONFIG = "kiln-config"
TENSOR_CACHE = "tensor-cache"
SITE_MODELS = "site-models"


@functools.lru_cache(maxsize=None)
def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def validate(document: Any, name: str) -> None:
    """Raises jsonschema.ValidationError: a document that breaks its schema is a kiln bug."""
    import jsonschema

    jsonschema.validate(document, schema(name))
