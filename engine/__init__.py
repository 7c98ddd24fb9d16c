"""A DAG-ready batch workflow engine with a YAML definition DSL.

The public API for runner authors: `job_handler` registers a runner, `StepContext` is what a
runner receives beside its inputs, and the errors are one tree rooted at `EngineError`.
"""

from engine.context import StepContext
from engine.errors import (
    DefinitionError,
    DispatchError,
    DuplicateRunner,
    EngineError,
    ParamsError,
    RunnerError,
    RunnerNotFound,
    StoreError,
)
from engine.registry import JobRegistry, job_handler

__all__ = [
    "DefinitionError",
    "DispatchError",
    "DuplicateRunner",
    "EngineError",
    "JobRegistry",
    "ParamsError",
    "RunnerError",
    "RunnerNotFound",
    "StepContext",
    "StoreError",
    "job_handler",
]
