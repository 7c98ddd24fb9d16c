"""Conditions and `{{ }}` templates, evaluated by Jinja2 in an immutable sandbox.

Everything is compiled once, when a definition is loaded, so that syntax errors and references to
unknown steps are validation errors and running a step costs a function call, not a parse.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import Undefined, meta, nodes
from jinja2.exceptions import TemplateError

from engine.errors import ExpressionError
from engine.sandbox import Sandbox, bounded, charge

_env = Sandbox()

_LONE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)

Scope = Mapping[str, Any]
"""What expressions see: `params`, `steps` (id -> {result, status}), `run` and, in inputs,
`secrets`."""
SCOPE_NAMES = ("params", "steps", "run", "secrets")
"""The top-level names of a scope; with Jinja2's globals (`range`, ...) all an expression may
name."""
KNOWN_NAMES = frozenset(SCOPE_NAMES) | frozenset(_env.globals)
_KEYED = ("steps", "params", "secrets")
"""The names whose first key validation checks: step ids, declared params, secret names."""


class Compiled:
    """A compiled expression or template, with the names and the first keys it reads."""

    def __init__(
        self,
        source: str,
        evaluate: Callable[[Scope], Any],
        names: frozenset[str],
        keys: Mapping[str, frozenset[str]],
    ):
        self.source = source
        self.names = names
        """The top-level names it reads (`params`, `steps`, `run`, ...)."""
        self.steps = keys.get("steps", frozenset())
        """The step ids it reads through `steps.<id>`."""
        self.params = keys.get("params", frozenset())
        """The param names it reads through `params.<name>`."""
        self.secrets = keys.get("secrets", frozenset())
        """The secret names it reads through `secrets.<name>`."""
        self._evaluate = evaluate

    def __call__(self, scope: Scope) -> Any:
        try:
            return self._evaluate(scope)
        except ExpressionError:
            raise
        except Exception as exc:  # anything a user's expression can raise, sandbox refusals too
            raise ExpressionError(f"{self.source!r}: {type(exc).__name__}: {exc}") from None


@functools.lru_cache(maxsize=4096)
def compile_condition(source: str) -> Compiled:
    """A boolean expression such as `steps.process.result.count > 0` (no braces)."""
    if not source.strip():
        raise ExpressionError("an empty expression")
    ast = _parse("{{ (" + source + ") }}", source)
    expression = _compile_expression(source)
    return Compiled(
        source, _budgeted(lambda scope: bool(expression(**scope))), _names(ast), _keys(ast)
    )


def _compile_expression(source: str) -> Callable[..., Any]:
    try:
        return _env.compile_expression(source, undefined_to_none=False)
    except TemplateError as exc:
        raise ExpressionError(f"{source!r}: {exc}") from None


@functools.lru_cache(maxsize=4096)
def compile_template(source: str) -> Compiled:
    """A string with `{{ }}`: a lone `{{ expr }}` keeps its native type, anything else is text."""
    lone = _LONE.match(source)
    if lone and "{{" not in lone["expr"] and "}}" not in lone["expr"]:
        path = _path(lone["expr"])
        if path is not None:
            root, keys = path
            first = keys[0] if keys else None
            read = {root: frozenset([first])} if isinstance(first, str) else {}
            return Compiled(source, _lookup(root, keys), frozenset([root]), read)
        ast = _parse(source, source)
        expression = _compile_expression(lone["expr"])
        evaluate = _budgeted(lambda scope: _defined(expression(**scope)))
        return Compiled(source, evaluate, _names(ast), _keys(ast))
    ast = _parse(source, source)
    template = _env.from_string(ast)
    return Compiled(
        source, _budgeted(lambda scope: charge(template.render(scope))), _names(ast), _keys(ast)
    )


def _budgeted(evaluate: Callable[[Scope], Any]) -> Callable[[Scope], Any]:
    """`evaluate` under a budget of its own (`sandbox.bounded`); plain paths need none."""

    def within_budget(scope: Scope) -> Any:
        with bounded():
            return evaluate(scope)

    return within_budget


_PATH = re.compile(r"^\s*([A-Za-z_]\w*)((?:\.[A-Za-z_]\w*|\[\d+\])*)\s*$")
_KEY = re.compile(r"\.(\w+)|\[(\d+)\]")
_LITERALS = frozenset({"true", "false", "none", "True", "False", "None"})


def _path(expr: str) -> tuple[str, list[str | int]] | None:
    """`steps.a.result.rows[0]` as ("steps", ["a", "result", "rows", 0]); None if not a path.

    Plain paths are most of what templates say; looking them up directly, through the same
    sandboxed attribute access that Jinja2 would use, spares a compile per template.
    """
    match = _PATH.match(expr)
    if match is None or match[1] in _LITERALS or "__" in expr:
        return None
    keys: list[str | int] = [name if name else int(index) for name, index in _KEY.findall(match[2])]
    return match[1], keys


def _lookup(root: str, keys: list[str | int]) -> Callable[[Scope], Any]:
    def evaluate(scope: Scope) -> Any:
        if root not in scope:
            raise ExpressionError(f"{root!r} is undefined")
        value = scope[root]
        for key in keys:
            value = _env.getitem(value, key) if isinstance(key, int) else _env.getattr(value, key)
        return _defined(value)

    return evaluate


def _defined(value: Any) -> Any:
    """Raise the undefined error that a value standing for a missing name or key carries."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return value


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


_REFUSED_STATEMENTS: dict[type[nodes.Node], str] = {
    nodes.For: "for",
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.Assign: "set",
    nodes.AssignBlock: "set",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from",
    nodes.Extends: "extends",
}
"""A template is a value, not a program: with no loops, assignments or macros, the work an
expression can do stays bounded by its length (see `sandbox.py`). Compute in a runner."""


def _parse(text: str, source: str) -> nodes.Template:
    """Parse and refuse, before anything runs, what the sandbox would refuse later or not at all."""
    try:
        ast = _env.parse(text)
    except TemplateError as exc:
        raise ExpressionError(f"{source!r}: {exc}") from None
    statement = next(ast.find_all(tuple(_REFUSED_STATEMENTS)), None)
    if statement is not None:
        kind = _REFUSED_STATEMENTS[type(statement)]
        raise ExpressionError(f"{source!r}: {{% {kind} %}} is not allowed: only {{% if %}} is")
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        attr = _key(node)
        if isinstance(attr, str) and attr.startswith("__"):
            raise ExpressionError(f"{source!r}: access to {attr!r} is not allowed")
    return ast


def _key(node: nodes.Node) -> Any:
    """The attribute or constant subscript that a Getattr or Getitem node reads."""
    if isinstance(node, nodes.Getattr):
        return node.attr
    arg = getattr(node, "arg", None)
    return arg.value if isinstance(arg, nodes.Const) else None


def _names(ast: nodes.Template) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(ast))


def _keys(ast: nodes.Template) -> dict[str, frozenset[str]]:
    """The constant first keys read of `steps` and `params` (`steps.a`, `params["day"]`)."""
    found: dict[str, set[str]] = {name: set() for name in _KEYED}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if isinstance(target, nodes.Name) and target.name in found:
            key = _key(node)
            if isinstance(key, str):
                found[target.name].add(key)
    return {name: frozenset(keys) for name, keys in found.items()}


class TemplateTree:
    """A step's `inputs` with every templated string compiled, wherever it stands.

    Faults do not stop compilation: `errors` lists each with the path of its string, and
    `leaves` each compiled string with its path, for checks that point at the right line.
    """

    def __init__(self, value: Any) -> None:
        self.errors: list[tuple[tuple[str | int, ...], ExpressionError]] = []
        self.leaves: list[tuple[tuple[str | int, ...], Compiled]] = []
        self._value = self._compile(value, ())

    @property
    def is_static(self) -> bool:
        return not self.leaves

    def render(self, scope: Scope) -> Any:
        return _render_tree(self._value, scope)

    def _compile(self, value: Any, path: tuple[str | int, ...]) -> Any:
        if is_template(value):
            try:
                compiled = compile_template(value)
            except ExpressionError as exc:
                self.errors.append((path, exc))
                return value
            self.leaves.append((path, compiled))
            return compiled
        if isinstance(value, dict):
            return {k: self._compile(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._compile(v, (*path, i)) for i, v in enumerate(value)]
        return value


def _render_tree(value: Any, scope: Scope) -> Any:
    if isinstance(value, Compiled):
        return value(scope)
    if isinstance(value, dict):
        return {k: _render_tree(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_tree(v, scope) for v in value]
    return value
