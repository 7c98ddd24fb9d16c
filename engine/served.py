"""What the API and the web UI of one `engine serve` work with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Path, Query

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


# Bounded by the columns' integer types, so that a huge number is a 422, not a database error.
InstanceId = Annotated[int, Path(ge=1, le=2**31 - 1)]
AttemptNumber = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
LogCursor = Annotated[int | None, Query(ge=0, le=2**63 - 1)]
