"""What the API and the web UI of one `engine serve` work with."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.background import BackgroundRunner
from engine.definition import LoadedDefinition
from engine.errors import DefinitionNotFound
from engine.health import SchedulerHealth
from engine.registry import JobRegistry
from engine.service import BatchService


@dataclass
class ServedState:
    """What the routes work with; `runner` exists while the application is started, and
    `scheduler` while it runs a scheduler."""

    service: BatchService
    definitions: dict[str, LoadedDefinition]
    registry: JobRegistry
    token: str | None
    tracebacks: bool = False
    """Step errors keep their tracebacks over HTTP (`ENGINE_API_TRACEBACKS`)."""
    _runner: BackgroundRunner | None = field(default=None, repr=False)
    scheduler: SchedulerHealth | None = field(default=None, repr=False)

    @property
    def runner(self) -> BackgroundRunner:
        assert self._runner is not None, "the application is not started"
        return self._runner

    def definition(self, name: str) -> LoadedDefinition:
        try:
            return self.definitions[name]
        except KeyError:
            raise DefinitionNotFound(f"no definition named {name!r} is served") from None
