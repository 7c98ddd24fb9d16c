"""The metrics themselves, on prometheus_client: names, labels and buckets, and how one run's
step events become counts. Imported only once a process records (`engine.metrics`).

Every metric lives in a registry of its recorder's own, never prometheus_client's global one,
so that two recorders (tests, a library user's own metrics) never meet. Label values are a
definition's name, a step's id, a runner's key and a few fixed words: an item of a mapped step
counts under its step, since item keys are unbounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.exposition import choose_encoder

from engine.execution import Listener, StepEvent
from engine.metrics import Recorder, RecoveryOutcome, RunRecord, SkipReason
from engine.status import InstanceStatus, StepStatus

SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400)
"""Histogram buckets: a no-op step takes about a millisecond, a batch step can take hours."""
E = TypeVar("E")


class ServerRecorder(Recorder):
    """What `engine serve` records: its runs, their step attempts, its ticks and recoveries."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        run = ["definition", "trigger"]
        ended = ["definition", "status"]
        step = ["definition", "step", "outcome"]
        self.started = Counter(
            "engine_instances_started_total",
            "Runs of instances started in this process, by trigger (resume: run again).",
            run,
            registry=registry,
        )
        self.ended = Counter(
            "engine_instances_ended_total",
            "Instances that ended in this process, by status.",
            ended,
            registry=registry,
        )
        self.instance_seconds = Histogram(
            "engine_instance_duration_seconds",
            "How long an instance ran in this process, from its run's start to its end.",
            ended,
            buckets=SECONDS,
            registry=registry,
        )
        self.attempts = Counter(
            "engine_step_attempts_total",
            "Step attempts ended (an item of a mapped step is one), by outcome.",
            step,
            registry=registry,
        )
        self.attempt_seconds = Histogram(
            "engine_step_attempt_duration_seconds",
            "How long a step attempt ran (those skipped or failed before a runner call: none).",
            step,
            buckets=SECONDS,
            registry=registry,
        )
        self.slot_wait = Histogram(
            "engine_step_slot_wait_seconds",
            "How long a ready step waited for a free slot of its instance's concurrency.",
            ["definition"],
            buckets=SECONDS,
            registry=registry,
        )
        self.running = Gauge(
            "engine_steps_running",
            "Step attempts in flight now (each running item of a mapped step is one).",
            ["definition"],
            registry=registry,
        )
        self.claimed = Counter(
            "engine_ticks_claimed_total",
            "Cron ticks a scheduler of this process claimed and created an instance for.",
            ["definition"],
            registry=registry,
        )
        self.skipped = Counter(
            "engine_ticks_skipped_total",
            "Cron ticks a scheduler of this process recorded as skipped, by reason.",
            ["definition", "reason"],
            registry=registry,
        )
        self.recoveries = Counter(
            "engine_recoveries_total",
            "Orphaned instances resumed or started by recovery, or given up (failed).",
            ["outcome"],
            registry=registry,
        )

    def run(self, definition: str, trigger: str) -> RunRecord:
        self.started.labels(definition, trigger).inc()
        return _Run(self, definition)

    def tick_claimed(self, definition: str) -> None:
        self.claimed.labels(definition).inc()

    def tick_skipped(self, definition: str, reason: SkipReason) -> None:
        self.skipped.labels(definition, reason).inc()

    def recovery(self, outcome: RecoveryOutcome) -> None:
        self.recoveries.labels(outcome).inc()

    def exposition(self, accept: str) -> tuple[bytes, str]:
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class _Run(RunRecord):
    """One run's step events as counts. Its events come from its executor's one thread; the
    metrics it shares with other runs (other threads) are thread-safe."""

    def __init__(self, recorder: ServerRecorder, definition: str) -> None:
        self.recorder = recorder
        self.definition = definition
        self.began = time.monotonic()
        self.running = recorder.running.labels(definition)
        self.open: dict[tuple[str, str | None, int], float] = {}
        """Attempts in flight, by step, item and attempt: when each started (monotonic)."""
        self.mapped: set[str] = set()
        """Mapped steps running: their own rows are no attempts, their items are."""

    def listener(self, listener: Listener | None) -> Listener:
        return self.heard if listener is None else _both(self.heard, listener)

    def heard(self, event: object) -> None:
        if not isinstance(event, StepEvent):
            return  # a log line
        now = time.monotonic()
        key = (event.step, event.item, event.attempt)
        if event.status is StepStatus.running:
            if event.items is not None:
                self.mapped.add(event.step)
                return
            self.open[key] = now
            self.running.inc()
            if event.waited is not None:
                self.recorder.slot_wait.labels(self.definition).observe(event.waited)
            return
        began = self.open.pop(key, None)
        if began is None and event.item is None and event.step in self.mapped:
            self.mapped.discard(event.step)
            return
        labels = (self.definition, event.step, event.status.value)
        self.recorder.attempts.labels(*labels).inc()
        if began is not None:
            self.running.dec()
            self.recorder.attempt_seconds.labels(*labels).observe(now - began)

    def ended(self, status: InstanceStatus) -> None:
        seconds = time.monotonic() - self.began
        self.recorder.ended.labels(self.definition, status.value).inc()
        self.recorder.instance_seconds.labels(self.definition, status.value).observe(seconds)

    def __exit__(self, *exc_info: object) -> None:
        self.running.dec(len(self.open))
        self.open.clear()


def _both(first: Callable[[E], None], then: Callable[[E], None]) -> Callable[[E], None]:
    """Tell `first`, then `then`: a listener of the caller's that fails cannot cost a count."""

    def both(event: E) -> None:
        first(event)
        then(event)

    return both


class WorkerRecorder(Recorder):
    """What `engine worker` records, in each pool process: the attempts it ran. The metrics
    are in no registry: the files of multiprocess mode are what is served (`serve_folder`)."""

    def __init__(self) -> None:
        self.attempt_seconds = Histogram(
            "engine_worker_attempt_duration_seconds",
            "Attempts this worker ran (_count) and how long each took, by runner and outcome.",
            ["runner", "outcome"],
            buckets=SECONDS,
            registry=None,
        )

    def worker_attempt(self, runner: str, ok: bool, seconds: float) -> None:
        outcome = StepStatus.succeeded if ok else StepStatus.failed
        self.attempt_seconds.labels(runner, outcome.value).observe(seconds)


def serve_folder(folder: str, host: str, port: int) -> WSGIServer:
    """An HTTP server on a thread, answering with the sums of the multiprocess files in
    `folder`; raises RuntimeError if prometheus_client was imported before the folder was
    named in the environment (its values would then be each process's own)."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError("prometheus_client was imported before multiprocess mode was set")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server
