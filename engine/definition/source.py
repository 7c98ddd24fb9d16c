"""Safe YAML reading that keeps every node's position.

Only plain data is built, JSON's types read the YAML 1.2 way (see `_Loader`); a duplicate key
is an error rather than a silent overwrite; and oversized files and alias bombs are refused before
anything walks the document.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml

from engine.errors import DefinitionError, Problem

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_NODES = 2_000_000
"""Nodes of the document with every alias expanded: far above any real definition."""
MAX_DEPTH = 64
"""Levels of nesting; a definition needs about ten."""

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_CORE = "tag:yaml.org,2002:"
_REPLACED = {_CORE + kind for kind in ("timestamp", "bool", "int", "float", "value")}
_PLAIN_DATA = {_CORE + kind for kind in ("str", "int", "float", "bool", "null", "map", "seq")}


class _Loader(_BaseLoader):  # type: ignore[valid-type, misc]
    """SafeLoader reading plain scalars as YAML 1.2 (the JSON schema of YAML) does.

    `2026-11-26` stays a string; only true/false are booleans, so `on: failure` keeps its key and
    `country: NO` its value; `010` is ten and `1:30` a string, not YAML 1.1's octal and base 60;
    `1e3` is a number, `.nan` and `.inf` are strings (JSON has no such numbers). Explicit tags
    other than those of JSON's types are refused.
    """

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, regex) for tag, regex in resolvers if tag not in _REPLACED]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }
    yaml_constructors: ClassVar[dict[Any, Any]] = {
        tag: constructor
        for tag, constructor in _BaseLoader.yaml_constructors.items()
        if tag in _PLAIN_DATA or tag == _CORE + "merge"
    }


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    base = {"0x": 16, "0o": 8}.get(digits[:2], 10)
    return sign * int(digits[2:] if base != 10 else digits, base)


def _refuse_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None,
        None,
        f"tag {node.tag!r} is not allowed: a definition holds plain data",
        node.start_mark,
    )


_Loader.add_implicit_resolver(
    _CORE + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    _CORE + "int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    _CORE + "float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)
_Loader.add_constructor(_CORE + "int", _construct_int)
_Loader.add_constructor(None, _refuse_tag)


@dataclass(frozen=True)
class YamlDocument:
    """A parsed file: its data, and its node tree for mapping paths back to positions."""

    file: str
    data: Any
    root: yaml.Node | None
    text: str | bytes = ""

    def problem(self, path: Sequence[str | int], message: str, *, key: bool = False) -> Problem:
        """A problem located at the node that `path` leads to (at its key when `key`)."""
        line, column = self.position(path, key=key)
        return Problem(self.file, line, column, message)

    def position(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        """1-based line and column of the deepest node along `path`.

        Path parts that match nothing in the document (pydantic's union tags, say) are passed over,
        so any validation error location can be handed in as it is.
        """
        node = self.root
        if node is None:
            return 1, 1
        key_node: yaml.Node | None = None
        for part in path:
            child = _child(node, part)
            if child is None:
                continue
            key_node, node = child
        target = key_node if key and key_node is not None else node
        return _within(self._lines, target.start_mark.line + 1, target.start_mark.column + 1)

    @functools.cached_property
    def _lines(self) -> list[str]:
        return _lines_of(self.text)


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == str(part):
                return key_node, value_node
    elif (
        isinstance(node, yaml.SequenceNode)
        and isinstance(part, int)
        and 0 <= part < len(node.value)
    ):
        item = node.value[part]
        return item, item
    return None


def parse_yaml(text: str | bytes, file: str) -> YamlDocument:
    """Parse one YAML document safely; raise DefinitionError with its position on any fault."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_FILE_BYTES:
        limit = MAX_FILE_BYTES // 2**20
        raise DefinitionError(
            [Problem(file, 1, 1, f"file is {size} bytes; the limit is {limit} MiB")]
        )
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return YamlDocument(file, None, None, text)
        _check_size(root, file)
        _check_duplicate_keys(root, file)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = _within(_lines_of(text), mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(filter(None, [exc.context, exc.problem])) or "invalid YAML"
        raise DefinitionError([Problem(file, line, column, f"YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise DefinitionError([Problem(file, 1, 1, f"YAML: {exc}")]) from None
    except RecursionError:
        message = f"YAML: nested too deeply to read (the limit is {MAX_DEPTH} levels)"
        raise DefinitionError([Problem(file, 1, 1, message)]) from None
    finally:
        loader.dispose()
    return YamlDocument(file, data, root, text)


def _lines_of(text: str | bytes) -> list[str]:
    return (text.decode(errors="replace") if isinstance(text, bytes) else text).splitlines()


def _within(lines: list[str], line: int, column: int) -> tuple[int, int]:
    """A position past the end of the text (an unclosed bracket) moved to its last line's end."""
    if line <= len(lines):
        return line, column
    return max(len(lines), 1), len(lines[-1]) + 1 if lines else 1


def _check_size(root: yaml.Node, file: str) -> None:
    """Refuse documents that nest too deeply or whose alias-expanded size explodes.

    One post-order walk, in time linear in distinct nodes: an alias bomb is caught without being
    expanded, and nothing downstream (pydantic, template rendering) meets unbounded recursion.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        children = _children(node)
        if children_done or not children:
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            height[id(node)] = 1 + max((height[id(c)] for c in children), default=0)
            if height[id(node)] > MAX_DEPTH:
                raise DefinitionError([_at(node, file, f"nested deeper than {MAX_DEPTH} levels")])
            if size[id(node)] > MAX_NODES:
                message = (
                    f"document expands to more than {MAX_NODES} nodes through aliases "
                    "(a YAML alias bomb?)"
                )
                raise DefinitionError([_at(node, file, message)])
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _at(node: yaml.Node, file: str, message: str) -> Problem:
    return Problem(file, node.start_mark.line + 1, node.start_mark.column + 1, message)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_duplicate_keys(root: yaml.Node, file: str) -> None:
    problems: list[Problem] = []
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, yaml.Node] = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                    first = keys.setdefault(key_node.value, key_node)
                    if first is not key_node:
                        mark = key_node.start_mark
                        problems.append(
                            Problem(
                                file,
                                mark.line + 1,
                                mark.column + 1,
                                f"duplicate key {key_node.value!r} (first at line "
                                f"{first.start_mark.line + 1})",
                            )
                        )
        stack.extend(_children(node))
    if problems:
        problems.sort(key=lambda p: (p.line, p.column))
        raise DefinitionError(problems)
