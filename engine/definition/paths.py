"""Definitions named by paths on the command line: files, or folders of `*.yaml`/`*.yml`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.definition.loader import LoadedDefinition, load_file
from engine.errors import DefinitionError, Problem

if TYPE_CHECKING:
    from engine.registry import JobRegistry


def definition_files(paths: tuple[str, ...] | list[str]) -> list[Path]:
    """The files named, and every `*.yaml`/`*.yml` below the folders named, sorted."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        else:
            files.append(path)
    return files


def check_paths(
    paths: tuple[str, ...] | list[str], registry: JobRegistry | None = None
) -> tuple[dict[str, LoadedDefinition], list[Problem], int]:
    """Every valid definition under `paths` by name, every problem (of each file, a path holding
    no definition, two files defining one name), and the number of files read."""
    problems: list[Problem] = []
    loaded: dict[str, LoadedDefinition] = {}
    files = definition_files(paths)
    if not files:
        problems.append(Problem(", ".join(paths), 1, 1, "no *.yaml or *.yml files"))
    for file in files:
        try:
            definition = load_file(file, registry)
        except DefinitionError as error:
            problems += error.problems
            continue
        first = loaded.get(definition.name)
        if first is not None:
            problems.append(
                Problem(str(file), 1, 1, f"name {definition.name!r} is defined in {first.file} too")
            )
            continue
        loaded[definition.name] = definition
    return loaded, problems, len(files)


def load_paths(
    paths: tuple[str, ...] | list[str], registry: JobRegistry | None = None
) -> dict[str, LoadedDefinition]:
    """Every definition under `paths`, by name, for a long-running process that serves them;
    one DefinitionError with every problem of `check_paths`."""
    loaded, problems, _ = check_paths(paths, registry)
    if problems:
        raise DefinitionError(problems)
    return loaded
