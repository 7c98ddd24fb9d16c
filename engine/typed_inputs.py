"""Typed runner inputs: a runner whose `inputs` parameter is annotated with a pydantic model gets
an instance of it, and a step's inputs are checked against that model twice: their literal part
by `engine validate`, before anything runs, and the whole once rendered, before the runner is
called (a mismatch fails the attempt with the model's message)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.expressions import is_template


class InputsMismatch(ValueError):
    """Rendered inputs that the runner's model refuses; the message lists each fault."""


def inputs_model(target: Any) -> type[BaseModel] | None:
    """The pydantic model that a runner function's (or class's `run`'s) first parameter is
    annotated with, if any."""
    function: Any = getattr(target, "run", None) if inspect.isclass(target) else target
    try:
        parameters = list(inspect.signature(function).parameters.values())
        if inspect.isclass(target):  # an unbound `run`: its first parameter is self
            parameters = parameters[1:]
        hints = typing.get_type_hints(function)
    except (TypeError, ValueError, NameError):  # no signature, or an annotation not importable
        return None
    annotation = hints.get(parameters[0].name) if parameters else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def checked(model: type[BaseModel], inputs: dict[str, Any]) -> BaseModel:
    """`inputs` as an instance of `model`; InputsMismatch naming each fault otherwise."""
    try:
        return model.model_validate(inputs)
    except ValidationError as exc:
        faults = "; ".join(f"{_dotted(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InputsMismatch(f"inputs do not fit {model.__name__}: {faults}") from None


def literal_faults(
    model: type[BaseModel], inputs: dict[str, Any], hint: Callable[[str, list[str]], str]
) -> Iterator[tuple[tuple[str | int, ...], str, bool]]:
    """What is wrong with a step's inputs as written, each with its path inside `inputs` and
    whether it is about the key there: unknown keys (with `hint`'s did-you-mean, unless the
    model allows extra keys), wrong types, missing fields. Templated values are left for the
    check once rendered."""
    known = [field.alias or name for name, field in model.model_fields.items()]
    if model.model_config.get("extra") != "allow":
        for key in inputs:
            if key not in known and key not in model.model_fields:
                message = f"inputs: unknown key {key!r} for {model.__name__}{hint(key, known)}"
                yield (key,), message, True
    templated = set(_templated_paths(inputs, ()))
    try:
        model.model_validate(inputs)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            if error["type"] == "extra_forbidden" and len(loc) == 1:
                continue  # reported above, with a hint
            if any(loc[: len(path)] == path for path in templated):
                continue
            message = f"inputs.{_dotted(loc)}: {error['msg']} ({model.__name__})"
            yield loc, message, error["type"] == "extra_forbidden"


def _templated_paths(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    if is_template(value):
        yield path
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _templated_paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _templated_paths(inner, (*path, index))


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc) or "(inputs)"
