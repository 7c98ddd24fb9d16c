"""Typed run params: a pydantic model built from a definition's `params`, so that the CLI and the
HTTP API report bad params in the same words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

from engine.definition.models import Param, ParamType
from engine.errors import ExpressionError, ParamsError
from engine.expressions import Compiled, compile_template, is_template
from engine.jsondata import NotJsonData, json_copy
from engine.secrets import PLACEHOLDER_CHARS


def _json_text(value: Any) -> Any:
    """Arrays and objects given as text (`-p ids=[1,2]`) are read as JSON."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


_TYPES: dict[ParamType, Any] = {
    ParamType.string: str,
    ParamType.number: float,
    ParamType.integer: int,
    ParamType.boolean: bool,
    ParamType.array: Annotated[list[Any], BeforeValidator(_json_text)],
    ParamType.object: Annotated[dict[str, Any], BeforeValidator(_json_text)],
}


class ParamsSpec:
    """Validates and completes the params of one run."""

    def __init__(self, params: dict[str, Param]) -> None:
        self.params = params
        self.templates: dict[str, Compiled] = {}
        self.errors: dict[str, ExpressionError] = {}
        """Template defaults that do not compile, for the loader to report."""
        for name, param in params.items():
            if is_template(param.default):
                try:
                    self.templates[name] = compile_template(param.default)
                except ExpressionError as exc:
                    self.errors[name] = exc
        self.kinds: dict[str, Any] = {}
        for name, param in params.items():
            kind = _TYPES[param.type]
            if param.enum is not None:
                kind = Annotated[kind, AfterValidator(_enum_check(tuple(param.enum)))]
            if param.default is None and not param.required:
                kind = kind | None
            self.kinds[name] = kind
        self.model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            "Params",
            __config__=ConfigDict(extra="forbid"),
            **{name: (kind, ...) for name, kind in self.kinds.items()},
        )

    def resolve(self, given: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
        """Given params plus rendered defaults, validated; ParamsError lists every fault."""
        values = dict(given)
        for name, param in self.params.items():
            if name in values or param.required:
                continue
            template = self.templates.get(name)
            try:
                values[name] = template({"run": run}) if template else param.default
            except Exception as exc:
                raise ParamsError(
                    [f"params.{name}: default could not be rendered: {exc}"]
                ) from None
        try:
            validated = self.model.model_validate(values)
        except ValidationError as exc:
            raise ParamsError(format_errors(exc, "params")) from None
        try:
            resolved: dict[str, Any] = json_copy(validated.model_dump())  # JSON mode: NaN -> null
        except NotJsonData as exc:
            raise ParamsError([f"params {exc}"]) from None
        return resolved

    def check_default(self, name: str) -> str | None:
        """Why a plain (non-template) default does not fit its param's type, or None."""
        param = self.params[name]
        if param.required or name in self.templates or param.default is None:
            return None
        try:
            TypeAdapter(self.kinds[name]).validate_python(param.default)
        except ValidationError as exc:
            return "; ".join(e["msg"] for e in exc.errors())
        return None


def _enum_check(allowed: tuple[Any, ...]) -> Any:
    def check(value: Any) -> Any:
        if value not in allowed:
            expected = ", ".join(map(repr, allowed))
            raise PydanticCustomError(
                "enum", "Input should be one of {expected}", {"expected": expected}
            )
        return value

    return check


def format_errors(exc: ValidationError, prefix: str) -> list[str]:
    """Pydantic's errors as `params.name: message` lines."""
    return [
        ".".join([prefix, *(str(p) for p in e["loc"])])
        + (": unknown param" if e["type"] == "extra_forbidden" else f": {e['msg']}")
        for e in exc.errors()
    ]


def secret_param_problems(
    params: dict[str, Param],
) -> Iterator[tuple[str, tuple[str, ...], str, bool]]:
    """What is wrong with the secret params: (name, path under it, message, at the key)."""
    for name, param in params.items():
        if not param.secret:
            continue
        if set(name) & set(PLACEHOLDER_CHARS):
            yield (
                name,
                (),
                "a secret param's name cannot hold the characters U+E000 to U+E003",
                True,
            )
        if param.type is not ParamType.string:
            at = "type" if "type" in param.model_fields_set else "secret"
            yield (
                name,
                (at,),
                f"a secret param must be `type: string`, not {param.type.value}",
                False,
            )
        if param.default is not None:
            yield (
                name,
                ("default",),
                "a secret param cannot have a default: a default is plain text in the "
                "definition file; give the value when the run starts (-p, the HTTP API), or "
                "read it where the step runs with `{{ secrets.NAME }}` in its inputs",
                False,
            )
        if param.enum is not None:
            yield (
                name,
                ("enum",),
                "a secret param cannot have an enum: its values are plain text",
                False,
            )


def outside_inputs(compiled: Compiled, params: dict[str, Param]) -> Iterator[str]:
    """Why `compiled`, evaluated where the engine runs (a condition, map items or key), may not
    read what it reads: secrets, or secret params (there they are placeholders)."""
    if "secrets" in compiled.names:
        yield (
            "secrets may be used only in a step's inputs: they are read where the step runs, "
            "and nowhere else"
        )
    for name in sorted(n for n in compiled.params if n in params and params[n].secret):
        yield (
            f"secret param {name!r} may be used only in a step's inputs: the engine passes "
            "it to the runner without ever reading its value, so a condition, map items or "
            "a key cannot depend on it"
        )
