"""The Jinja2 environment that every expression and template runs in.

Jinja2's immutable sandbox already refuses attribute access that leads out of the data (dunder
attributes, function globals, mutating methods). This adds bounds on what could exhaust the host:
big powers, repetitions, paddings and format widths, joins and replacements that would build
strings beyond `MAX_SIZE` are refused before they are computed.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import StrictUndefined
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

MAX_SIZE = 100_000
"""The longest string or sequence, and the largest width or count, an expression may make."""
MAX_POWER_BITS = 100_000
"""The largest integer a `**` may make, in bits."""

_PERCENT_SPEC = re.compile(r"%[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")
_WIDTHS = re.compile(r"\d+")


def _too_big(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise SecurityError(f"{what} would be too large ({size} > {MAX_SIZE})")


def _check_percent_format(template: str) -> None:
    for match in _PERCENT_SPEC.finditer(template):
        for width in match.groups():
            if width == "*":
                raise SecurityError("a '*' width in a % format is not allowed")
            if width is not None:
                _too_big(int(width), "a % format width")


def _check_format_string(template: str) -> None:
    for _, _, spec, _ in string.Formatter().parse(template):
        if spec and "{" in spec:
            raise SecurityError("nested replacement fields in a format spec are not allowed")
        for width in _WIDTHS.findall(spec or ""):
            _too_big(int(width), "a format width")


def _check_ints(args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool):
            _too_big(abs(arg), "a width or count argument")


def _joined_size(items: list[Any], separator: Any) -> int:
    return sum(len(str(item)) for item in items) + len(str(separator)) * max(len(items) - 1, 0)


def _replaced_size(text: Any, old: Any, new: Any) -> int:
    text, old, new = str(text), str(old), str(new)
    count = text.count(old) if old else len(text) + 1
    return len(text) + count * max(len(new) - len(old), 0)


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with size bounds, `StrictUndefined` and no globals but `range`."""

    intercepted_binops = frozenset({"**", "*", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False)
        # Only plain data and filters: no lipsum, cycler, joiner or namespace to climb out through.
        self.globals.clear()
        self.globals["range"] = safe_range
        for name in ("center", "indent", "truncate", "wordwrap"):
            self.filters[name] = _guarded(
                self.filters[name], lambda a, k: _check_ints([*a, *k.values()])
            )
        self.filters["format"] = _guarded(
            self.filters["format"], lambda a, k: _check_percent_format(str(a[0]))
        )
        self.filters["join"] = _guarded(self.filters["join"], _check_join_filter)
        self.filters["replace"] = _guarded(
            self.filters["replace"],
            lambda a, k: _too_big(_replaced_size(*a[1:4]), "the replaced string"),
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and left.bit_length() * right > MAX_POWER_BITS:
                raise SecurityError(f"{left} ** {right} would be too large")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    _too_big(len(seq) * times, "the repeated sequence")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return super().call_binop(context, operator, left, right)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_ints([*args, *kwargs.values()])
        method = getattr(__obj, "__name__", None)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and method == "join" and args:
            items = list(args[0])
            _too_big(_joined_size(items, owner), "the joined string")
            args = (items, *args[1:])
        elif isinstance(owner, str) and method == "replace" and len(args) >= 2:
            _too_big(_replaced_size(owner, args[0], args[1]), "the replaced string")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", None) in ("format", "format_map"):
            _check_format_string(owner)
        return super().wrap_str_format(value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`result.items` is the key `items` of a result, not the dict's method."""
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _check_join_filter(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    value = args[1] if len(args) > 1 else ()
    separator = args[2] if len(args) > 2 else kwargs.get("d", "")
    if isinstance(value, str | list | tuple | range):
        _too_big(_joined_size(list(value), separator), "the joined string")


def _guarded(
    filter_function: Callable[..., Any], check: Callable[[tuple[Any, ...], dict[str, Any]], None]
) -> Callable[..., Any]:
    """`filter_function` with `check(args, kwargs)` first; Jinja2's pass-context marks are kept."""

    @functools.wraps(filter_function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check(args, kwargs)
        return filter_function(*args, **kwargs)

    return guarded
