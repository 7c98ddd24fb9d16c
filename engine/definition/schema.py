"""The JSON Schema of the DSL, generated from the pydantic models (editors use it to complete and
check definitions through the `# yaml-language-server: $schema=` line)."""

from __future__ import annotations

import json
from typing import Any

from engine.definition.models import Definition


def json_schema() -> dict[str, Any]:
    schema = Definition.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"
