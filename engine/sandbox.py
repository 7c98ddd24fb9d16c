"""The Jinja2 environment that every expression and template runs in.

Jinja2's immutable sandbox already refuses attribute access that leads out of the data (dunder
attributes, function globals, mutating methods). This adds bounds on what could exhaust the host:
big products and powers, repetitions, concatenations, paddings and format widths, joins and
replacements that would build values beyond `MAX_SIZE` are refused before they are computed.

Per-call bounds alone let chains through (`range(99999) | map('center', 50000) | list` is 99999
calls of an allowed size), so one evaluation also has a budget (`bounded`): every filter, method
and operator result is charged by its size, iterators handed to a filter are read into lists
under the same charge, and the evaluation fails once it has made more than `MAX_WORK`
characters and elements in all, or run longer than `MAX_SECONDS`. With loops, assignments and
macros refused when a template is compiled (see `expressions.py`), that bounds the work of any
expression.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import StrictUndefined
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

MAX_SIZE = 100_000
"""The longest string or sequence, and the largest width or count, an expression may make."""
MAX_POWER_BITS = 100_000
"""The largest integer a `**` may make, in bits."""
MAX_WORK = 10_000_000
"""The characters and elements one evaluation may make in all, through every call."""
MAX_SECONDS = 2.0
"""How long one evaluation may run."""


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_WORK
        self.deadline = time.monotonic() + MAX_SECONDS


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("budget", default=None)


@contextlib.contextmanager
def bounded() -> Iterator[None]:
    """Give the evaluations inside one budget of work and time."""
    token = _budget.set(_Budget())
    try:
        yield
    finally:
        _budget.reset(token)


def charge(value: Any) -> Any:
    """Count `value` against the current budget; SecurityError once it is spent."""
    budget = _budget.get()
    if budget is not None:
        budget.left -= _weight(value, budget.left + 1)
        if budget.left < 0:
            raise SecurityError(
                f"the expression does too much work: it made more than {MAX_WORK:,} characters "
                "and elements in all"
            )
        if time.monotonic() > budget.deadline:
            raise SecurityError(f"the expression ran longer than {MAX_SECONDS:g}s")
    return value


def _read(value: Any) -> Any:
    """An iterator read into a list (charged as it is read); anything else as it is."""
    if not hasattr(value, "__next__"):
        return value
    items: list[Any] = []
    for item in itertools.islice(value, MAX_SIZE + 1):
        items.append(charge(item))
    _too_big(len(items), "the sequence")
    return items


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


def _weight(value: Any, limit: int = MAX_SIZE) -> int:
    """Elements and characters in `value`, counted through nested lists and mappings.

    Stops counting past `limit`: only whether the bound is crossed matters.
    """
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset | range):
            total += len(item)
            if not isinstance(item, range):
                stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            total += 1
    return total


def _joined_size(items: list[Any], separator: Any) -> int:
    return sum(len(str(item)) for item in items) + len(str(separator)) * max(len(items) - 1, 0)


def _replaced_size(text: Any, old: Any, new: Any) -> int:
    text, old, new = str(text), str(old), str(new)
    count = text.count(old) if old else len(text) + 1
    return len(text) + count * max(len(new) - len(old), 0)


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with size bounds, `StrictUndefined` and no globals but `range`."""

    intercepted_binops = frozenset({"**", "*", "%", "+"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False)
        # Only plain data and filters: no lipsum, cycler, joiner or namespace to climb out through.
        self.globals.clear()
        self.globals["range"] = safe_range
        for name in ("center", "truncate", "wordwrap"):
            self.filters[name] = _guarded(
                self.filters[name], lambda a, k: _check_ints([*a, *k.values()])
            )
        self.filters["indent"] = _guarded(self.filters["indent"], _check_indent_filter)
        self.filters["format"] = _guarded(
            self.filters["format"], lambda a, k: _check_percent_format(str(a[0]))
        )
        self.filters["join"] = _guarded(self.filters["join"], _check_join_filter)
        self.filters["replace"] = _guarded(
            self.filters["replace"],
            lambda a, k: _too_big(_replaced_size(*a[1:4]), "the replaced string"),
        )
        self.filters["tojson"] = _guarded(self.filters["tojson"], _check_tojson_filter)
        for name, function in self.filters.items():
            self.filters[name] = _charged(function)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        both_ints = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and both_ints:
            if right > 0 and left.bit_length() * right > MAX_POWER_BITS:
                raise SecurityError(f"a power of {left.bit_length() * right} bits is too large")
        elif operator == "*" and both_ints:
            if left.bit_length() + right.bit_length() > MAX_POWER_BITS:
                raise SecurityError("the product would be too large")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    _too_big(_weight(seq) * times, "the repeated sequence")
        elif operator == "+" and not both_ints:
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                _too_big(_weight(left) + _weight(right), "the concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return charge(super().call_binop(context, operator, left, right))

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_ints([*args, *kwargs.values()])
        method = getattr(__obj, "__name__", None)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and method == "expandtabs":
            tabsize = args[0] if args else kwargs.get("tabsize", 8)
            _too_big(len(owner) + owner.count("\t") * int(tabsize), "the expanded string")
        elif isinstance(owner, str) and method == "translate" and args:
            table = args[0]
            longest = max((len(str(v)) for v in getattr(table, "values", list)()), default=1)
            _too_big(len(owner) * max(longest, 1), "the translated string")
        elif isinstance(owner, str) and method == "join" and args:
            items = list(args[0])
            _too_big(_joined_size(items, owner), "the joined string")
            args = (items, *args[1:])
        elif isinstance(owner, str) and method == "replace" and len(args) >= 2:
            _too_big(_replaced_size(owner, args[0], args[1]), "the replaced string")
        return charge(super().call(__context, __obj, *args, **kwargs))

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


def _check_indent_filter(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text = str(args[0]) if args else ""
    width = args[1] if len(args) > 1 else kwargs.get("width", 4)
    _check_ints([width])
    if isinstance(width, int):
        _too_big(len(text) + (text.count("\n") + 1) * width, "the indented string")


def _check_join_filter(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    value = args[1] if len(args) > 1 else ()
    separator = args[2] if len(args) > 2 else kwargs.get("d", "")
    if isinstance(value, str | list | tuple | range):
        _too_big(_joined_size(list(value), separator), "the joined string")


def _check_tojson_filter(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    value = args[1] if len(args) > 1 else None
    indent = args[2] if len(args) > 2 else kwargs.get("indent")
    _check_ints([indent])
    if isinstance(indent, int):  # every element and key starts a line of `indent` per level
        _too_big(indent * _weight(value), "the indented JSON")


def _charged(filter_function: Callable[..., Any]) -> Callable[..., Any]:
    """`filter_function` with iterator arguments read into lists and its result charged, both
    against the evaluation's budget; Jinja2's pass-context marks are kept."""

    @functools.wraps(filter_function)
    def charged(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_read(a) for a in args)
        kwargs = {k: _read(v) for k, v in kwargs.items()}
        return charge(filter_function(*args, **kwargs))

    return charged


def _guarded(
    filter_function: Callable[..., Any], check: Callable[[tuple[Any, ...], dict[str, Any]], None]
) -> Callable[..., Any]:
    """`filter_function` with `check(args, kwargs)` first; Jinja2's pass-context marks are kept."""

    @functools.wraps(filter_function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check(args, kwargs)
        return filter_function(*args, **kwargs)

    return guarded
