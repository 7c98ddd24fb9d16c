"""Typed runner inputs: a runner annotated with a pydantic model is checked at validate (the
literal inputs, each fault located) and before each call (the rendered inputs)."""

from __future__ import annotations

import pytest
from executing import run
from locating import at, problems, where, yaml
from pydantic import BaseModel, ConfigDict

from engine.definition.schema import json_schema


class Fetch(BaseModel):
    url: str
    method: str = "GET"
    timeoutSeconds: float = 30.0


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int


@pytest.fixture
def typed(registry):
    seen: list[object] = []

    @registry.handler("fetch")
    def fetch(inputs: Fetch, ctx) -> dict:
        seen.append(inputs)
        return {"url": inputs.url, "timeout": inputs.timeoutSeconds}

    @registry.handler("nested")
    class Nested:
        def run(self, inputs: Strict, ctx) -> int:
            seen.append(inputs)
            return inputs.depth

    return seen


def test_literal_inputs_that_do_not_fit_are_located_validation_errors(registry, typed):
    text = yaml(
        """
        name: x
        params:
          t: {type: string, default: slow}
        steps:
          - id: a
            runner: fetch
            inputs: {urll: "https://x", method: 5, timeoutSeconds: "{{ params.t }}"}
          - id: b
            runner: nested
            inputs: {depth: deep}
        """
    )
    found = {(where(p), p.message) for p in problems(text, registry)}
    assert found == {
        (at(text, "{urll"), "inputs.url: Field required (Fetch)"),
        (at(text, "urll"), "inputs: unknown key 'urll' for Fetch; did you mean 'url'?"),
        (at(text, "5,"), "inputs.method: Input should be a valid string (Fetch)"),
        (
            at(text, "deep"),
            "inputs.depth: Input should be a valid integer, unable to parse string as an "
            "integer (Strict)",
        ),
    }, "a templated value is checked once rendered, not here"


def test_the_runner_gets_an_instance_of_its_model(store, registry, typed):
    view = run(
        store,
        registry,
        """
        name: x
        steps:
          - {id: a, runner: fetch, inputs: {url: "https://x", timeoutSeconds: 5}}
          - {id: b, runner: nested, inputs: {depth: 3}}
        """,
    )
    assert view.status == "succeeded"
    assert typed == [Fetch(url="https://x", timeoutSeconds=5), Strict(depth=3)]
    assert [s.result for s in view.steps] == [{"url": "https://x", "timeout": 5.0}, 3]


def test_rendered_inputs_that_do_not_fit_fail_the_attempt_without_calling_the_runner(
    store, registry, typed
):
    view = run(
        store,
        registry,
        """
        name: x
        params:
          t: {type: string, default: slow}
        steps:
          - {id: a, runner: fetch, inputs: {url: "https://x", timeoutSeconds: "{{ params.t }}"}}
        """,
    )
    assert view.status == "failed" and typed == []
    [attempt] = view.steps
    assert attempt.error.startswith(
        "InputsMismatch: inputs do not fit Fetch: timeoutSeconds: Input should be a valid number"
    )


def test_the_schema_carries_each_typed_runners_inputs(registry, typed):
    schema = json_schema(registry.runners())
    rules = schema["$defs"]["Step"]["allOf"]
    assert [r["if"]["properties"]["runner"]["const"] for r in rules] == ["fetch", "nested"]
    fetch = schema["$defs"]["inputs of fetch"]
    assert fetch["required"] == ["url"] and set(fetch["properties"]) == {
        "url",
        "method",
        "timeoutSeconds",
    }
    assert "allOf" not in json_schema()["$defs"]["Step"], "untyped runners add nothing"
