"""Runner registration (`@job_handler`) and discovery.

A runner is a function `(inputs, ctx) -> result` or a class whose instances have such a `run`
method; either may be `async`. Registration leaves the user's object untouched.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from engine.config import RUNNERS_ENV
from engine.errors import DuplicateRunner, RunnerError, RunnerNotFound
from engine.typed_inputs import inputs_model

ENTRY_POINT_GROUP = "engine.runners"
RESERVED_PREFIX = "engine."
"""The keys of the built-in runners (`engine.runners`): no other runner may take one."""

T = TypeVar("T")


@dataclass(frozen=True)
class Runner:
    """One registered runner: its key, the user's object, and where it was defined."""

    key: str
    target: Any
    location: str
    is_async: bool
    inputs_model: type[BaseModel] | None = None
    """The pydantic model its `inputs` parameter is annotated with: it gets an instance."""

    def resolve(self) -> Callable[..., Any]:
        """The callable to invoke for one attempt (a fresh instance for class runners)."""
        if inspect.isclass(self.target):
            run: Callable[..., Any] = self.target().run  # type: ignore[attr-defined]
            return run
        target: Callable[..., Any] = self.target
        return target


def _location(target: Any) -> str:
    try:
        file = inspect.getsourcefile(target) or "?"
        line = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return getattr(target, "__module__", "?")
    return f"{file}:{line}"


class JobRegistry:
    """Runners by key. `job_handler` registers into the default instance, `registry`."""

    def __init__(self) -> None:
        self._runners: dict[str, Runner] = {}

    def handler(self, key: str) -> Callable[[T], T]:
        """Decorator registering a function or class under `key`; a key may be taken only once."""
        if not isinstance(key, str) or not key:
            raise RunnerError("a runner key must be a non-empty string")

        def register(target: T) -> T:
            self.add(key, target)
            return target

        return register

    def add(self, key: str, target: Any) -> Runner:
        if inspect.isclass(target):
            run = getattr(target, "run", None)
            if not callable(run):
                raise RunnerError(f"runner {key!r}: class {target.__qualname__} has no run method")
            is_async = inspect.iscoroutinefunction(run)
        elif callable(target):
            is_async = inspect.iscoroutinefunction(target)
        else:
            raise RunnerError(f"runner {key!r}: {target!r} is neither a function nor a class")
        runner = Runner(key, target, _location(target), is_async, inputs_model(target))
        if key.startswith(RESERVED_PREFIX) and _builtins().get(key) is not target:
            raise RunnerError(
                f"runner key {key!r} (at {runner.location}) is reserved: keys starting with "
                f"{RESERVED_PREFIX!r} belong to the built-in runners "
                f"({', '.join(sorted(_builtins()))}); choose another key"
            )
        existing = self._runners.get(key)
        # The same place seen twice is one runner imported under two module names, not two.
        same = existing is not None and (
            existing.target is target
            or (":" in runner.location and existing.location == runner.location)
        )
        if existing is not None and not same:
            raise DuplicateRunner(
                f"runner key {key!r} is registered twice: at {existing.location} "
                f"and at {runner.location}"
            )
        self._runners[key] = runner
        return runner

    def add_builtins(self) -> JobRegistry:
        """Register the built-in runners (`engine.shell`, `engine.http`, `engine.sql`); returns
        the registry. Discovery does this; a bare `JobRegistry()` holds only what it is given."""
        for key, target in _builtins().items():
            self.add(key, target)
        return self

    def get(self, key: str) -> Runner:
        try:
            return self._runners[key]
        except KeyError:
            raise RunnerNotFound(
                f"no runner is registered as {key!r}; known runners: {self.describe_keys()}"
            ) from None

    def __contains__(self, key: object) -> bool:
        return key in self._runners

    def keys(self) -> list[str]:
        return sorted(self._runners)

    def user_keys(self) -> list[str]:
        """The keys of the runners that are not built in."""
        return [key for key in self.keys() if not key.startswith(RESERVED_PREFIX)]

    def runners(self) -> list[Runner]:
        return [self._runners[key] for key in self.keys()]

    def describe_keys(self) -> str:
        return ", ".join(self.keys()) or "(none)"


def _builtins() -> Mapping[str, Any]:
    from engine.runners import BUILTINS  # on first use: `import engine` stays light

    return BUILTINS


registry = JobRegistry()
job_handler = registry.handler


def discover(
    extra: Iterable[str] = (), *, cwd: Path | None = None, use_entry_points: bool = True
) -> JobRegistry:
    """The default registry with the built-in runners, after importing every runner module so
    that its `@job_handler` decorators register.

    Looks in the `runners/` folder of `cwd`, then in each module name or path of `extra` and of
    `$ENGINE_RUNNERS` (comma-separated), then in the `engine.runners` entry points.
    """
    registry.add_builtins()
    base = cwd or Path.cwd()
    folder = base / "runners"
    if folder.is_dir():
        _import_path(folder)
    names = [*extra, *os.environ.get(RUNNERS_ENV, "").split(",")]
    for name in (n.strip() for n in names):
        if name:
            path = Path(name) if os.path.isabs(name) else base / name
            if path.exists():
                _import_path(path)
            else:
                _import_module(name)
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as exc:
                raise RunnerError(f"entry point {ep.name!r} ({ep.value}): {exc}") from exc
    return registry


def _import_module(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name or name.startswith(f"{exc.name}."):
            message = f"runner module {name!r} not found (neither a path nor a module)"
            raise RunnerError(message) from None
        raise RunnerError(f"runner module {name!r}: {exc}") from exc
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError(f"runner module {name!r}: {type(exc).__name__}: {exc}") from exc


def _import_path(path: Path) -> None:
    """Import a `.py` file, or every `.py` file below a folder.

    Module names carry a digest of the folder, so that `a/jobs.py` and `b/jobs.py` are both
    imported, and importing one place twice is a no-op.
    """
    path = path.resolve()
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    root = path.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # lets runner modules import their siblings
    prefix = "engine_runners.r" + hashlib.sha1(str(root).encode()).hexdigest()[:10]
    for file in files:
        rel = file.relative_to(root)
        if "__pycache__" in rel.parts or any(p.startswith(".") for p in rel.parts):
            continue
        parts = [p for p in rel.with_suffix("").parts if p != "__init__"]
        name = ".".join([prefix, *parts])
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise RunnerError(f"cannot import runner file {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except RunnerError:
            del sys.modules[name]
            raise
        except Exception as exc:
            del sys.modules[name]
            raise RunnerError(f"runner file {file}: {type(exc).__name__}: {exc}") from exc
