"""The committed JSON Schema is what `engine schema` prints; every shipped definition uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.definition.schema import json_schema
from engine.registry import JobRegistry

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "schemas" / "batch-definition.schema.json"
SCHEMA_LINE = "# yaml-language-server: $schema=../schemas/batch-definition.schema.json"
DEFINITIONS = sorted((REPO / "definitions").glob("*.y*ml"))


def engine(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return subprocess.run(
        [str(Path(sys.executable).with_name("engine")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def committed() -> dict:
    return json.loads(COMMITTED.read_text(encoding="utf-8"))


def test_the_committed_schema_equals_the_output_of_engine_schema():
    proc = engine("schema")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout) == committed(), (
        "schemas/batch-definition.schema.json is stale: regenerate it with `engine schema`"
    )


def test_the_committed_schema_equals_the_models_with_the_built_in_runners():
    assert json_schema(JobRegistry().add_builtins().runners()) == committed()


def test_the_schema_completes_the_inputs_of_each_built_in_runner():
    schema = committed()
    rules = schema["$defs"]["Step"]["allOf"]
    assert [r["if"]["properties"]["runner"]["const"] for r in rules] == [
        "engine.http",
        "engine.shell",
        "engine.sql",
    ]
    http = schema["$defs"]["inputs of engine.http"]
    assert http["required"] == ["url"] and http["additionalProperties"] is False
    assert {"method", "headers", "query", "json", "body", "timeoutSeconds", "expectStatus"} <= set(
        http["properties"]
    )
    assert set(schema["$defs"]["inputs of engine.shell"]["properties"]) == {
        "command",
        "env",
        "cwd",
        "json",
    }
    assert schema["$defs"]["inputs of engine.sql"]["required"] == ["url", "query"]


def test_the_schema_describes_the_dsl():
    schema = committed()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert set(schema["required"]) == {"name", "steps"}
    assert {
        "name",
        "description",
        "cron",
        "timezone",
        "catchup",
        "overlap",
        "concurrency",
        "params",
        "defaults",
        "steps",
    } == set(schema["properties"])
    assert schema.get("additionalProperties") is False  # unknown keys are errors, in editors too
    text = json.dumps(schema)
    for key in ("nextSteps", "allowFailure", "timeoutSeconds", "maxAttempts", "join"):
        assert f'"{key}"' in text


def test_there_are_shipped_definitions():
    assert DEFINITIONS, "definitions/ holds no *.yaml"


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.name)
def test_every_shipped_definition_begins_with_the_schema_line(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == SCHEMA_LINE


def test_the_shipped_definitions_validate_against_the_shipped_runners():
    proc = engine("validate", "definitions")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
