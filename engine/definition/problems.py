"""pydantic's validation errors as located problems, worded for someone editing YAML: the dotted
path of the value, and for an unknown key the known key it is closest to; and the definition
without its faulty keys, so that the loader's own checks can still report on the rest."""

from __future__ import annotations

import copy
import difflib
import typing
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.definition.models import (
    NAME_PATTERN,
    PARAM_NAME_PATTERN,
    STEP_ID_PATTERN,
    Definition,
)
from engine.definition.source import YamlDocument
from engine.errors import Problem
from engine.jsondata import json_kind


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def without_faults(data: dict[str, Any], exc: ValidationError) -> Definition | None:
    """The definition with every faulty mapping key removed, if that leaves it valid.

    List items are never removed, so that the positions of the remaining problems stay right.
    """
    pruned = copy.deepcopy(data)
    for error in exc.errors():
        parent, key = None, None
        node: Any = pruned
        for part in error["loc"]:
            if isinstance(node, dict) and part in node:
                parent, key, node = node, part, node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                parent, key, node = None, None, node[part]
        if parent is None:
            return None
        parent.pop(key, None)
    try:
        return Definition.model_validate(pruned)
    except ValidationError:
        return None


def pydantic_problems(exc: ValidationError, document: YamlDocument) -> Iterator[Problem]:
    for error in exc.errors():
        loc = error["loc"]
        where = _dotted(loc, document)
        if error["type"] == "invalid_key":
            yield document.problem(loc, f"{where}: keys must be strings", key=True)
        elif error["type"] == "extra_forbidden":
            known = _known_keys(loc)
            hint = did_you_mean(str(loc[-1]), known) or (
                f"; allowed: {', '.join(known)}" if known else ""
            )
            yield document.problem(loc, f"{where}: unknown key {loc[-1]!r}{hint}", key=True)
        elif error["type"] == "missing":
            yield document.problem(loc, f"{where}: required key is missing")
        elif error["type"] == "string_pattern_mismatch" and loc[-1] == "[key]":
            said = _PATTERNS.get(error["ctx"]["pattern"], error["msg"])
            yield document.problem(loc[:-1], f"{_dotted(loc[:-1], document)}: {said}", key=True)
        elif error["type"] == "string_pattern_mismatch":
            yield document.problem(
                loc, f"{where}: {_PATTERNS.get(error['ctx']['pattern'], error['msg'])}"
            )
        elif error["type"] in _SHAPES:
            said = f"must be {_SHAPES[error['type']]}, not {json_kind(error['input'])}"
            yield document.problem(loc, f"{where}: {said}")
        else:
            yield document.problem(loc, f"{where}: {error['msg']}")


_SHAPES = {"model_type": "a mapping", "dict_type": "a mapping", "list_type": "a list"}
"""What a value of the wrong shape should have been: pydantic names the model class instead."""


_PATTERNS = {
    NAME_PATTERN: "must be lowercase letters, digits, '_' and '-', starting with a letter or digit",
    STEP_ID_PATTERN: (
        "must be letters, digits and '_', starting with a letter or one '_' (templates cannot read "
        "a name that starts with '__')"
    ),
    PARAM_NAME_PATTERN: "a param's name may not start with '__': templates cannot read it",
}
"""What each pattern of the models asks for, in words instead of the regular expression."""


def _dotted(loc: Sequence[str | int], document: YamlDocument) -> str:
    """`steps[2].nextSteps[0].step`, leaving out pydantic's union tags."""
    text = ""
    node_path: list[str | int] = []
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("name", "edge") and node_path[-2:-1] == ["nextSteps"]:
            continue
        else:
            text += f".{part}" if text else str(part)
        node_path.append(part)
    return text or "(top level)"


def _known_keys(loc: Sequence[str | int]) -> list[str]:
    """The keys allowed in the mapping that holds `loc[-1]`, found by walking the model types."""
    current: Any = Definition
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
            continue
        for model in _models_in(current):
            fields = {f.alias or n: f.annotation for n, f in model.model_fields.items()}
            if part in fields:
                current = fields[part]
                break
    models = _models_in(current)
    return [f.alias or n for n, f in models[0].model_fields.items()] if models else []


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    if typing.get_origin(tp) is dict:
        return []
    return [m for arg in typing.get_args(tp) for m in _models_in(arg)]
