"""The engine's one exception tree.

The CLI and the HTTP API map these groups to exit codes and status codes in one place each; nothing
below `EngineError` should ever reach a user as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One located finding in a definition file."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class DefinitionNotFound(EngineError):
    """No definition of that name is served."""


class DefinitionError(EngineError):
    """A batch definition (or a run's params) is invalid; carries every problem found at once."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ParamsError(EngineError):
    """The params given for a run do not match the definition's typed params."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


class RunnerError(EngineError):
    """Something is wrong with a runner: its registration, discovery or lookup."""


class DuplicateRunner(RunnerError):
    """Two runners claim one key."""


class RunnerNotFound(RunnerError):
    """No runner is registered under a key."""


class StepFailed(EngineError):
    """A built-in runner's attempt failed: a command's exit code, an unexpected HTTP status."""


class DispatchError(EngineError):
    """A dispatcher could not be chosen or could not hand a step over."""


class StoreError(EngineError):
    """The store could not be opened or queried."""


class InstanceNotFound(StoreError):
    """No batch instance has the given id."""


class IdempotencyKeyTaken(StoreError):
    """Another request created an instance under this idempotency key first."""

    def __init__(self, key: str, instance_id: int) -> None:
        self.instance_id = instance_id
        super().__init__(f"idempotency key {key!r} belongs to instance {instance_id}")


class IdempotencyKeyReused(EngineError):
    """An idempotency key was sent again with another definition or other params."""


class ExpressionError(EngineError):
    """An expression or template does not compile, or failed while evaluating."""


class ConfigError(EngineError):
    """An `ENGINE_*` variable has a value the engine cannot use."""


class LeaseLost(EngineError):
    """Another process took over (or cancelled) this process's instance: it stopped and wrote
    nothing more."""


class InstanceTaken(EngineError):
    """A pending instance did not start here: another process took it first, or it was
    cancelled while it waited."""


class ResumeRefused(EngineError):
    """The instance cannot be resumed: it succeeded, or a live process is running it."""


class ScheduleError(EngineError):
    """A schedule cannot be used: no cron, or a bad backfill range."""


class TickTaken(ScheduleError):
    """Another scheduler or backfill has already claimed this tick."""
