"""Safe YAML reading that keeps every node's position.

Only plain data is built (no tags that construct objects); dates stay strings, as in JSON; a
duplicate key is an error rather than a silent overwrite; and oversized files and alias bombs are
refused before anything walks the document.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml

from engine.errors import DefinitionError, Problem

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_NODES = 2_000_000
"""Nodes of the document with every alias expanded: far above any real definition."""

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_DROPPED = {"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool"}


class _Loader(_BaseLoader):  # type: ignore[valid-type, misc]
    """SafeLoader with YAML 1.2 scalars: `2026-11-26` stays a string, as in JSON, and only
    true/false are booleans, so that `on: failure` keeps its key and `country: NO` its value."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, regex) for tag, regex in resolvers if tag not in _DROPPED]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass(frozen=True)
class YamlDocument:
    """A parsed file: its data, and its node tree for mapping paths back to positions."""

    file: str
    data: Any
    root: yaml.Node | None

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
        return target.start_mark.line + 1, target.start_mark.column + 1


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
    size = len(text)
    if size > MAX_FILE_BYTES:
        raise DefinitionError(
            [Problem(file, 1, 1, f"file is {size} bytes; the limit is {MAX_FILE_BYTES}")]
        )
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return YamlDocument(file, None, None)
        _check_size(root, file)
        _check_duplicate_keys(root, file)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(filter(None, [exc.context, exc.problem])) or "invalid YAML"
        raise DefinitionError([Problem(file, line, column, f"YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise DefinitionError([Problem(file, 1, 1, f"YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return YamlDocument(file, data, root)


def _check_size(root: yaml.Node, file: str) -> None:
    """Refuse documents whose alias-expanded size explodes, in time linear in distinct nodes."""
    expanded: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in expanded:
            continue
        if children_done or isinstance(node, yaml.ScalarNode):
            expanded[id(node)] = 1 + sum(expanded[id(c)] for c in _children(node))
            if expanded[id(node)] > MAX_NODES:
                mark = node.start_mark
                raise DefinitionError(
                    [
                        Problem(
                            file,
                            mark.line + 1,
                            mark.column + 1,
                            f"document expands to more than {MAX_NODES} nodes through aliases "
                            "(a YAML alias bomb?)",
                        )
                    ]
                )
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in expanded)


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
