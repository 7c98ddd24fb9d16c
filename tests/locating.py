"""What the definition tests share: problems located by the text they point at."""

from __future__ import annotations

import textwrap

import pytest

from engine.definition import LoadedDefinition, load_text
from engine.errors import DefinitionError, Problem

FILE = "def.yaml"


def yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def at(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """1-based line and column of the `nth` occurrence of `needle` in `text`."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def problems(text: str, registry=None) -> list[Problem]:
    with pytest.raises(DefinitionError) as info:
        load_text(text, FILE, registry)
    found = info.value.problems
    assert found, "a DefinitionError must carry at least one problem"
    for p in found:
        assert isinstance(p, Problem)
        assert p.file == FILE
    return found


def only(text: str, registry=None) -> Problem:
    found = problems(text, registry)
    assert len(found) == 1, found
    return found[0]


def where(p: Problem) -> tuple[int, int]:
    return p.line, p.column


def load(text: str, registry=None) -> LoadedDefinition:
    return load_text(text, FILE, registry)
