"""The JSON Schema of the DSL, generated from the pydantic models (editors use it to complete and
check definitions through the `# yaml-language-server: $schema=` line), with the input schema of
every runner that declares one, so that `inputs:` is completed and checked per runner."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable
from typing import Any

from engine.definition.models import Definition

if typing.TYPE_CHECKING:
    from engine.registry import Runner


def json_schema(runners: Iterable[Runner] = ()) -> dict[str, Any]:
    schema = Definition.model_json_schema(by_alias=True, mode="validation")
    defs = schema["$defs"]
    typed = []
    for runner in sorted(runners, key=lambda r: r.key):
        if runner.inputs_model is None:
            continue
        inputs = runner.inputs_model.model_json_schema(
            by_alias=True, mode="validation", ref_template="#/$defs/{model}"
        )
        defs.update(inputs.pop("$defs", {}))
        name = f"inputs of {runner.key}"
        defs[name] = inputs
        typed.append(
            {
                "if": {"properties": {"runner": {"const": runner.key}}, "required": ["runner"]},
                "then": {"properties": {"inputs": {"$ref": f"#/$defs/{name}"}}},
            }
        )
    if typed:
        defs["Step"]["allOf"] = typed
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def json_schema_text(runners: Iterable[Runner] = ()) -> str:
    return json.dumps(json_schema(runners), indent=2, sort_keys=False) + "\n"
