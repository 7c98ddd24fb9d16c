"""Dispatch overhead of the direct, the process and the Celery dispatchers, on I/O-bound steps.

    .venv/bin/python bench/dispatch.py [--steps 64] [--sleep 0.2] [--concurrency 16]
        [--workers 2] [--worker-concurrency 8] [--chain 50] [--repeat 3]
        [--broker redis://127.0.0.1:6379/0] [--broker amqp://guest:guest@127.0.0.1:5672//]

A fan-out of `--steps` steps that each sleep `--sleep` seconds, at `concurrency: --concurrency`,
runs through `BatchService.run` on a fresh SQLite file: in-process (direct), in worker processes
of the engine's own (process), and once per
broker through `engine worker` subprocesses (`--workers` of `--worker-concurrency` processes each,
started before and stopped after, on a queue of their own). A chain of `--chain` no-op steps shows
the round trip of one step alone. docs/performance.md gives the figures and what they mean.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dispatch_runners  # sibling modules: bench/ is not a package
from report import table
from workers import workers

from engine.definition import load_text
from engine.dispatch.base import Dispatcher
from engine.dispatch.direct import DirectDispatcher
from engine.dispatch.process import ProcessDispatcher
from engine.service import BatchService
from engine.store import Store

HERE = Path(__file__).resolve().parent


def fanout_yaml(steps: int, sleep: float, concurrency: int, queue: str) -> str:
    """Independent steps: `nextSteps: []` on the first switches to DAG mode without edges."""
    lines = [f"name: fanout\nconcurrency: {concurrency}\ndefaults: {{queue: {queue}}}\nsteps:"]
    lines += [
        f"  - {{id: s{i}, runner: io_sleep, inputs: {{seconds: {sleep}}}"
        + (", nextSteps: []}" if i == 0 else "}")
        for i in range(steps)
    ]
    return "\n".join(lines) + "\n"


def chain_yaml(steps: int, queue: str) -> str:
    lines = [f"name: chain\ndefaults: {{queue: {queue}}}\nsteps:"]
    lines += [f"  - {{id: c{i}, runner: noop}}" for i in range(steps)]
    return "\n".join(lines) + "\n"


def timed_run(text: str, dispatcher: Dispatcher, folder: Path) -> float:
    """Seconds of `BatchService.run` (the whole instance) on a fresh SQLite file."""
    loaded = load_text(text, "bench.yaml", dispatch_runners.registry)
    store = Store(f"sqlite:///{folder / (uuid.uuid4().hex + '.db')}")
    try:
        start = time.perf_counter()
        view = BatchService(store, dispatcher).run(BatchService.prepare(loaded, {}))
        seconds = time.perf_counter() - start
    finally:
        store.close()
    if view.status != "succeeded":
        raise SystemExit(f"the benchmark run {view.status}: {view.error}")
    return seconds


def measure(
    name: str, make: Callable[[], Dispatcher], args: argparse.Namespace, queue: str, folder: Path
) -> dict[str, Any]:
    """One dispatcher for every run, as a long-running `engine serve` keeps one: the first
    run warms it (imports, worker processes, connections) and is not counted."""
    fanout = fanout_yaml(args.steps, args.sleep, args.concurrency, queue)
    chain = chain_yaml(args.chain, queue)
    dispatcher = make()
    try:
        cold = timed_run(fanout, dispatcher, folder)
        walls = [timed_run(fanout, dispatcher, folder) for _ in range(args.repeat)]
        chains = [timed_run(chain, dispatcher, folder) for _ in range(args.repeat)]
    finally:
        dispatcher.close()
    wall = statistics.median(walls)
    ideal = args.steps * args.sleep / args.concurrency
    row = {
        "dispatcher": name,
        "wall": wall,
        "ideal": ideal,
        "ratio": wall / ideal,
        # each of the `concurrency` slots runs steps/concurrency steps back to back
        "slot_overhead_ms": (wall * args.concurrency / args.steps - args.sleep) * 1000,
        "chain_ms": statistics.median(chains) / args.chain * 1000,
        "cold": cold,
    }
    print(f"  .. {name}: {', '.join(f'{w:.3f}' for w in walls)} s", file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add = parser.add_argument
    add("--steps", type=int, default=64)
    add("--sleep", type=float, default=0.2)
    add("--concurrency", type=int, default=16, help="the definition's concurrency")
    add("--workers", type=int, default=2)
    add("--worker-concurrency", type=int, default=8)
    add("--chain", type=int, default=50, help="no-op steps in the chain (0: none)")
    add("--repeat", type=int, default=3)
    add("--broker", action="append", help="a Celery broker URL; repeat for more")
    args = parser.parse_args(argv)
    brokers = args.broker or ["redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672//"]
    queue = "bench-" + uuid.uuid4().hex[:8]
    rows = []
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        folder = Path(tmp)
        rows.append(
            measure(
                "direct",
                lambda: DirectDispatcher(dispatch_runners.registry),
                args,
                queue,
                folder,
            )
        )
        rows.append(
            measure(
                "process",
                lambda: ProcessDispatcher(dispatch_runners.registry),
                args,
                queue,
                folder,
            )
        )
        from engine.dispatch.celery import CeleryDispatcher

        for broker in brokers:
            kind = broker.partition("://")[0]
            name = f"celery {kind} {args.workers}x{args.worker_concurrency}"
            runners = [str(HERE / "dispatch_runners.py")]
            with workers(broker, queue, args.workers, args.worker_concurrency, folder, runners):
                rows.append(
                    measure(
                        name,
                        functools.partial(
                            CeleryDispatcher, dispatch_runners.registry, broker=broker
                        ),
                        args,
                        queue,
                        folder,
                    )
                )
    print(
        f"fan-out of {args.steps} steps sleeping {args.sleep:g} s at concurrency "
        f"{args.concurrency}; chain of {args.chain} no-op steps; median of {args.repeat}; "
        f"{os.cpu_count()} CPUs; load average at end {os.getloadavg()[0]:.1f}"
    )
    columns = [
        ("dispatcher", lambda r: r["dispatcher"]),
        ("cold fan-out s", lambda r: f"{r['cold']:.3f}"),
        ("fan-out s", lambda r: f"{r['wall']:.3f}"),
        ("ideal s", lambda r: f"{r['ideal']:.3f}"),
        ("ratio", lambda r: f"{r['ratio']:.2f}x"),
        ("overhead ms/step", lambda r: f"{r['slot_overhead_ms']:.1f}"),
        ("chain ms/step", lambda r: f"{r['chain_ms']:.1f}"),
    ]
    print(table(columns, rows))


if __name__ == "__main__":
    main()
