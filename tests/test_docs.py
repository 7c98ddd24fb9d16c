"""docs/dsl.md stays true: every YAML example in it is checked by the real loader.

A ```yaml block is a complete definition that must load, unless the line before its fence is
`<!-- invalid -->` (it must be refused with a DefinitionError) or `<!-- fragment -->` (skipped).
A ```text block after `<!-- validate-output -->` is pasted `engine validate` output: it must be
exactly what the loader reports for the invalid examples above it. A ```text block after
`<!-- graph-output -->` must be `engine graph` of the nearest complete example above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.definition import load_text
from engine.definition.schema import json_schema_text
from engine.errors import DefinitionError
from engine.registry import JobRegistry

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "dsl.md"
MARKERS = {"invalid", "fragment", "validate-output", "graph-output"}
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*([\w-]+)\s*-->$")


@dataclass(frozen=True)
class Block:
    lang: str
    line: int
    """1-based line of the opening fence."""
    marker: str | None
    text: str

    @property
    def id(self) -> str:
        return f"{self.lang}@line{self.line}" + (f"-{self.marker}" if self.marker else "")


def _blocks() -> list[Block]:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            i += 1
        assert i < len(lines), f"docs/dsl.md:{start + 1}: unclosed code fence"
        marker = _MARKER.match(lines[start - 1].strip()) if start else None
        name = marker.group(1) if marker else None
        assert name is None or name in MARKERS, f"docs/dsl.md:{start}: unknown marker {name!r}"
        text = "\n".join(lines[start + 1 : i]) + "\n"
        blocks.append(Block(fence.group(1), start + 1, name, text))
        i += 1
    return blocks


BLOCKS = _blocks()
YAML = [b for b in BLOCKS if b.lang == "yaml"]
VALID = [b for b in YAML if b.marker is None]
INVALID = [b for b in YAML if b.marker == "invalid"]


def test_the_doc_has_examples() -> None:
    """Guards the extraction itself: an empty parametrization would pass vacuously."""
    assert len(VALID) >= 20
    assert len(INVALID) >= 2
    assert all(b.marker in (None, "invalid", "fragment") for b in YAML)


@pytest.mark.parametrize("block", VALID, ids=lambda b: b.id)
def test_valid_example_loads(block: Block) -> None:
    """With every runner it names known, so that the inputs of built-in runners are checked."""
    where = f"docs/dsl.md@{block.line}"
    try:
        steps = load_text(block.text, where).definition.steps
        load_text(block.text, where, _registry([step.runner_key for step in steps]))
    except DefinitionError as error:
        pytest.fail(f"the example at docs/dsl.md:{block.line} is invalid:\n{error}")


@pytest.mark.parametrize("block", INVALID, ids=lambda b: b.id)
def test_invalid_example_is_refused(block: Block) -> None:
    with pytest.raises(DefinitionError) as caught:
        load_text(block.text, f"docs/dsl.md@{block.line}")
    assert caught.value.problems


def _preceding(block: Block, marker: str | None) -> list[Block]:
    return [b for b in YAML if b.line < block.line and b.marker == marker]


def _registry(keys: list[str]) -> JobRegistry:
    """The built-in runners, and a stand-in for each other key."""
    registry = JobRegistry().add_builtins()
    for key in keys:
        if key not in registry:
            registry.add(key, lambda inputs, ctx: {})
    return registry


@pytest.mark.parametrize(
    "output", [b for b in BLOCKS if b.marker == "validate-output"], ids=lambda b: b.id
)
def test_pasted_validate_output_is_what_the_loader_says(output: Block) -> None:
    problems: dict[str, list[str]] = {}
    summary = None
    known: list[str] = []
    for line in output.text.splitlines():
        found = re.match(r"^(\S+\.ya?ml):\d+:\d+: ", line)
        if found:
            problems.setdefault(found.group(1), []).append(line)
            runners = re.search(r"known runners: (.*)$", line)
            if runners and runners.group(1) != "(none)":
                known = runners.group(1).split(", ")
        elif re.match(r"^\d+ of \d+ definitions valid$", line):
            summary = line
    assert problems, "no file:line:col lines in the pasted output"
    assert summary == f"0 of {len(problems)} definitions valid"
    candidates = _preceding(output, "invalid")
    registry = _registry(known)
    for file, expected in problems.items():
        reported = []
        for block in candidates:
            try:
                load_text(block.text, file, registry)
            except DefinitionError as error:
                reported.append([str(p) for p in error.problems])
        assert expected in reported, (
            f"docs/dsl.md:{output.line}: no invalid example above yields the pasted output for "
            f"{file}; the loader says:\n" + "\n\n".join("\n".join(r) for r in reported)
        )


@pytest.mark.parametrize(
    "output", [b for b in BLOCKS if b.marker == "graph-output"], ids=lambda b: b.id
)
def test_pasted_graph_is_what_engine_graph_prints(output: Block) -> None:
    source = _preceding(output, None)[-1]
    loaded = load_text(source.text, "graph.yaml")
    assert output.text == loaded.graph.to_mermaid()


def test_editor_schema_line_points_at_the_current_schema() -> None:
    text = DOC.read_text(encoding="utf-8")
    line = "# yaml-language-server: $schema=../schemas/batch-definition.schema.json"
    assert line in text
    schema = ROOT / "definitions" / "../schemas/batch-definition.schema.json"
    assert schema.resolve().read_text(encoding="utf-8") == json_schema_text(
        JobRegistry().add_builtins().runners()
    )
