"""What the benchmark runs: the engine on generated definitions, the floor loop, and validation.

Each function measures one thing in this process and returns plain numbers; `run.py` repeats
them, takes medians and prints the tables.
"""

from __future__ import annotations

import gc
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import CursorResult, bindparam, insert, update
from sqlmodel import SQLModel

from engine.definition import LoadedDefinition, load_text, source
from engine.definition.models import Definition
from engine.dispatch.direct import DirectDispatcher
from engine.registry import JobRegistry
from engine.service import BatchService
from engine.store import Store
from engine.store.store import make_engine
from engine.store.tables import definitions, instances, step_results
from engine.store.types import utcnow

RUNNER = "noop"


def noop(inputs: Any, ctx: Any) -> dict[str, int]:
    """The step of every engine and floor run: no work, a tiny JSON result."""
    return {"ok": 1}


def registry() -> JobRegistry:
    reg = JobRegistry()
    reg.add(RUNNER, noop)
    return reg


# -- definitions ------------------------------------------------------------------------------


def linear_yaml(steps: int) -> str:
    """A chain: no step declares nextSteps, so each flows to the next in list order."""
    lines = ["name: bench-linear", "steps:"]
    lines += [f"  - {{id: s{i}, runner: {RUNNER}}}" for i in range(steps)]
    return "\n".join(lines) + "\n"


def fanout_yaml(width: int, concurrency: int) -> str:
    """`head` -> `width` independent steps -> `tail` (join: all), a DAG through nextSteps."""
    middle = [f"m{i}" for i in range(width)]
    lines = [
        "name: bench-fanout",
        f"concurrency: {concurrency}",
        "steps:",
        f"  - {{id: head, runner: {RUNNER}, nextSteps: [{', '.join(middle)}]}}",
    ]
    lines += [f"  - {{id: {m}, runner: {RUNNER}, nextSteps: [tail]}}" for m in middle]
    lines.append(f"  - {{id: tail, runner: {RUNNER}}}")
    return "\n".join(lines) + "\n"


def validation_yaml(steps: int) -> str:
    """A chain whose steps have inputs: a constant, a params template, and the previous step's
    result (which the loader checks is upstream)."""
    lines = [
        "name: bench-validation",
        "params:",
        "  day: {type: string, default: '2026-01-01'}",
        "defaults:",
        "  retry: {maxAttempts: 2, delaySeconds: 1}",
        "steps:",
    ]
    for i in range(steps):
        inputs = f"index: {i}, day: '{{{{ params.day }}}}'"
        if i:
            inputs += f", previous: '{{{{ steps.s{i - 1}.result.ok }}}}'"
        lines.append(f"  - {{id: s{i}, runner: {RUNNER}, inputs: {{{inputs}}}}}")
    return "\n".join(lines) + "\n"


# -- measuring --------------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Make ru_maxrss restart from the current RSS (Linux: clear_refs 5); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


PEAK_RSS_RESETS = _reset_peak_rss()
"""False: each peak below is the process's peak so far, not the peak of its own run, and each
start RSS is that peak too."""


def max_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


@dataclass
class Sample:
    seconds: float
    cpu_seconds: float
    """CPU time of the whole process, every thread: less disturbed than wall time by other work
    on the machine."""
    start_rss_mb: float
    """RSS of the whole process when the measured span began."""
    peak_rss_mb: float
    """Peak RSS of the whole process during the measured span."""


@contextmanager
def _measured(out: list[Sample]) -> Iterator[None]:
    gc.collect()
    _reset_peak_rss()
    rss = max_rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    yield
    out.append(Sample(time.perf_counter() - start, time.process_time() - cpu, rss, max_rss_mb()))


@contextmanager
def _fresh_db() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="engine-bench-")
    try:
        yield f"sqlite:///{folder}/bench.db"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- engine and floor -------------------------------------------------------------------------


def engine_run(loaded: LoadedDefinition, dispatcher: DirectDispatcher, steps: int) -> Sample:
    """One run through BatchService -> Executor -> DirectDispatcher on a fresh SQLite file.

    Timed: `BatchService.run` (params, definition version, instance, every step, and reading the
    instance back). Not timed: creating the file and its schema; loading the definition.
    """
    out: list[Sample] = []
    with _fresh_db() as url:
        store = Store(url)
        try:
            service = BatchService(store, dispatcher)
            with _measured(out):
                view = service.run(BatchService.prepare(loaded, {}))
        finally:
            store.close()
    attempts = len(view.steps or ())
    if view.status != "succeeded" or attempts != steps:
        raise RuntimeError(f"engine run ended {view.status} with {attempts} of {steps} attempts")
    return out[0]


def floor_run(steps: int) -> Sample:
    """The least a durable engine must do per step, on the engine's tables and pragmas.

    Per step, exactly: insert the attempt row and commit, call the no-op, update the row with
    its result and commit. Timed: the loop only.
    """
    out: list[Sample] = []
    with _fresh_db() as url:
        engine = make_engine(url)
        try:
            SQLModel.metadata.create_all(engine)
            with engine.begin() as conn:
                definition = insert(definitions).values(
                    name="floor", version="1", steps=[], source="", created_at=utcnow()
                )
                definition_id = _new_id(conn.execute(definition))
                instance = insert(instances).values(
                    definition_id=definition_id,
                    definition_name="floor",
                    status="running",
                    trigger="cli",
                    params={},
                    created_at=utcnow(),
                )
                instance_id = _new_id(conn.execute(instance))
            start_row = insert(step_results).values(
                batch_instance_id=instance_id,
                step_key=bindparam("step"),
                attempt=1,
                status="running",
                started_at=bindparam("at"),
                created_at=bindparam("at"),
            )
            end_row = (
                update(step_results)
                .where(step_results.c.id == bindparam("row_id"))
                .values(
                    status="succeeded",
                    result_payload=bindparam("result"),
                    finished_at=bindparam("at"),
                )
            )
            with engine.connect() as conn, _measured(out):
                for i in range(steps):
                    started = conn.execute(start_row, {"step": f"s{i}", "at": utcnow()})
                    conn.commit()
                    result = noop({}, None)
                    row = {
                        "row_id": _new_id(started),
                        "result": result,
                        "at": utcnow(),
                    }
                    conn.execute(end_row, row)
                    conn.commit()
        finally:
            engine.dispose()
    return out[0]


def _new_id(result: CursorResult[Any]) -> Any:
    key = result.inserted_primary_key
    assert key is not None
    return key[0]


# -- validation -------------------------------------------------------------------------------


def _engine_base_loader() -> type[yaml.SafeLoader]:
    """The PyYAML loader class the engine's own loader derives from (C when libyaml is there)."""
    for cls in getattr(source, "_Loader", yaml.SafeLoader).__mro__:
        if cls.__module__.startswith("yaml"):
            return cls
    return yaml.SafeLoader


BASE_LOADER = _engine_base_loader()


@dataclass
class Validation:
    """Seconds to read one generated definition, by the engine and by PyYAML alone."""

    steps: int
    yaml_bytes: int
    load_text: float
    """engine.definition.load_text with a registry, as the CLI loads."""
    parse_yaml: float
    """engine.definition.source.parse_yaml alone: the engine's loader and its document checks."""
    model_validate: float
    """Definition.model_validate of the parsed data alone."""
    pyyaml: float
    """yaml.load with BASE_LOADER, the loader class the engine derives from."""
    pyyaml_pure: float | None
    """yaml.safe_load, the pure-Python SafeLoader (measured once, for reference)."""


def _timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def validation(steps: int, reg: JobRegistry, *, pure: bool) -> Validation:
    text = validation_yaml(steps)
    data = source.parse_yaml(text, "bench.yaml").data
    return Validation(
        steps=steps,
        yaml_bytes=len(text.encode()),
        load_text=_timed(lambda: load_text(text, "bench.yaml", reg)),
        parse_yaml=_timed(lambda: source.parse_yaml(text, "bench.yaml")),
        model_validate=_timed(lambda: Definition.model_validate(data)),
        pyyaml=_timed(lambda: yaml.load(text, Loader=BASE_LOADER)),
        pyyaml_pure=_timed(lambda: yaml.safe_load(text)) if pure else None,
    )
