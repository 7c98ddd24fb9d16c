"""Mapped steps (`map`) through the real `engine run`: cost and memory per item beside a chain's
per step, at several sizes, and through Celery.

    .venv/bin/python bench/map.py [--items 1000,10000,100000] [--concurrency 1,8] [--chain 10000]
        [--repeat 3] [--celery-items 100000] [--celery-concurrency 8] [--celery-repeat N]
        [--workers 2] [--worker-concurrency 4] [--broker redis://127.0.0.1:6379/0] [--json FILE]

Every measurement is a fresh `engine run` subprocess on a fresh SQLite file, in a temporary working
directory whose runners/ holds a no-op runner and a producer returning `list(range(n))`; the
mapped step runs the no-op once per item of that list. In the same rounds, interleaved with the
mapped runs: `engine run` of a one-step definition (the fixed cost, subtracted from every time), a
mapped step of one item (the memory baseline, subtracted from every peak RSS), and a chain of
`--chain` no-op steps (the per-step cost the per-item cost is compared with). Then, unless
`--celery-items 0`, the same mapped step with ENGINE_DISPATCHER=celery on `--workers` `engine
worker` subprocesses, beside one item through the same path (its fixed cost).
docs/performance.md gives the figures and what they mean.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads  # sibling modules: bench/ is not a package
from report import Column, ints, table
from workers import ENGINE, workers

from engine.config import BROKER_URL_ENV, DATABASE_ENV, DISPATCHER_ENV

RUNNERS = f'''
from engine import job_handler


@job_handler("{workloads.RUNNER}")
def noop(inputs, ctx):
    return {{"ok": 1}}


@job_handler("produce")
def produce(inputs, ctx):
    return list(range(inputs["n"]))
'''


def map_yaml(items: int, concurrency: int, queue: str | None = None) -> str:
    """`make` returns `list(range(items))`; `fan` is mapped over it. Concurrency 1 is left out:
    it is the default."""
    spec = '{items: "{{ steps.make.result }}"'
    spec += "}" if concurrency == 1 else f", concurrency: {concurrency}}}"
    lines = ["name: bench-map"]
    if queue is not None:
        lines.append(f"defaults: {{queue: {queue}}}")
    lines += [
        "steps:",
        f"  - {{id: make, runner: produce, inputs: {{n: {items}}}}}",
        f"  - {{id: fan, runner: {workloads.RUNNER}, map: {spec}}}",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Sample:
    """One `engine run` child, from spawning it to reaping it."""

    seconds: float
    cpu_seconds: float
    """The child's own user + system time (from wait4)."""
    peak_rss_kb: int
    """The child's own peak RSS (from wait4): RUSAGE_CHILDREN would give the largest child's."""


@dataclass
class Case:
    """One definition file, run once per round."""

    label: str
    size: int
    """Items of the mapped step; steps of a chain."""
    file: Path
    rows: int
    """Attempt rows a successful run leaves, all succeeded: the check that it ran in full."""
    env: dict[str, str]
    samples: list[Sample] = field(default_factory=list)

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(s, name) for s in self.samples))


def engine_run(case: Case, folder: Path) -> Sample:
    """`engine run` of the case in a fresh child, on a fresh SQLite file (deleted after)."""
    db = folder / f"{uuid.uuid4().hex}.db"
    log = folder / "run.log"
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [ENGINE, "run", str(case.file)],
            cwd=folder,
            env={**case.env, DATABASE_ENV: f"sqlite:///{db}"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    try:
        with closing(sqlite3.connect(db)) as conn:
            query = "SELECT count(*) FROM batch_step_result WHERE status = 'succeeded'"
            rows = conn.execute(query).fetchone()[0]
    finally:
        for path in folder.glob(f"{db.name}*"):
            path.unlink()
    if proc.returncode != 0 or rows != case.rows:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(
            f"{case.label}: exit {proc.returncode}, {rows} of {case.rows} rows succeeded\n{tail}"
        )
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(seconds, cpu, usage.ru_maxrss * scale // 1024)


def _case(folder: Path, label: str, size: int, text: str, rows: int, env: dict[str, str]) -> Case:
    file = folder / f"{re.sub(r'[^a-z0-9=]+', '-', label).strip('-')}.yaml"
    file.write_text(text)
    return Case(label, size, file, rows, env)


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _rounds(cases: list[Case], repeat: int, folder: Path) -> None:
    """Each case once per round, so that a burst of load on the machine hits all of them."""
    for round_ in range(1, repeat + 1):
        for case in cases:
            case.samples.append(engine_run(case, folder))
            _progress(f"round {round_}: {case.label}: {case.samples[-1].seconds:.2f} s")


def medians(case: Case) -> dict[str, Any]:
    """The case's median time, CPU time and peak RSS, and its samples."""
    return {
        "label": case.label,
        "size": case.size,
        "seconds": case.median("seconds"),
        "cpu_seconds": case.median("cpu_seconds"),
        "peak_rss_mb": case.median("peak_rss_kb") / 1024,
        "samples": [asdict(s) for s in case.samples],
    }


def per_unit(case: Case, fixed: Case, memory: Case) -> dict[str, Any]:
    """`medians`, and per item (or step): time and CPU beyond `fixed`'s, peak RSS beyond
    `memory`'s."""
    row = medians(case)
    row["ms"] = (row["seconds"] - fixed.median("seconds")) / case.size * 1000
    row["cpu_ms"] = (row["cpu_seconds"] - fixed.median("cpu_seconds")) / case.size * 1000
    row["kb"] = (case.median("peak_rss_kb") - memory.median("peak_rss_kb")) / case.size
    return row


def _env(**values: str) -> dict[str, str]:
    """This process's environment without its ENGINE_* settings, with `values`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return base | values


def local(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """The default dispatcher (direct): start-up, the chain, and the mapped step at each size
    and concurrency; rows with the per-unit figures, the map's beside the chain's."""
    env = _env()
    startup = _case(folder, "start-up (1 step)", 1, workloads.linear_yaml(1), 1, env)
    chain_text = workloads.linear_yaml(args.chain)
    chain = _case(folder, f"chain of {args.chain:,}", args.chain, chain_text, args.chain, env)
    one = _case(folder, "map of 1 item", 1, map_yaml(1, 1), 3, env)
    maps = [
        _case(folder, f"map c={c}, {n:,} items", n, map_yaml(n, c), n + 2, env)
        for c in args.concurrency
        for n in sorted(args.items)
    ]
    _rounds([startup, chain, one, *maps], args.repeat, folder)
    baseline = per_unit(chain, startup, startup)
    rows = [medians(startup), medians(one), baseline]
    for case in maps:
        row = per_unit(case, startup, one)
        row["ratio"] = row["ms"] / baseline["ms"]
        row["cpu_ratio"] = row["cpu_ms"] / baseline["cpu_ms"]
        rows.append(row)
    return rows


def celery(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """The mapped step on Celery workers, beside one item on the same path (its fixed cost:
    start-up, connecting, and the producer's round trip)."""
    queue = "bench-map-" + uuid.uuid4().hex[:8]
    env = _env(**{DISPATCHER_ENV: "celery", BROKER_URL_ENV: args.broker})
    c, n = args.celery_concurrency, args.celery_items
    one = _case(folder, "celery, 1 item", 1, map_yaml(1, c, queue), 3, env)
    fan = _case(folder, f"celery c={c}, {n:,} items", n, map_yaml(n, c, queue), n + 2, env)
    with workers(args.broker, queue, args.workers, args.worker_concurrency, folder):
        _rounds([one, fan], args.celery_repeat or args.repeat, folder)
    row = per_unit(fan, one, one)
    row["items_per_second"] = 1000 / row["ms"]
    return [medians(one), row]


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add = parser.add_argument
    add("--items", type=ints, default=[1000, 10000, 100000], help="items of the mapped step")
    add("--concurrency", type=ints, default=[1, 8], help="the map's concurrency (1: default)")
    add("--chain", type=int, default=10000, help="steps of the chain compared with")
    add("--repeat", type=int, default=3, help="rounds; medians are shown")
    add("--celery-items", type=int, default=100000, help="items on Celery (0: no Celery)")
    add("--celery-concurrency", type=int, default=8, help="the map's concurrency on Celery")
    add("--celery-repeat", type=int, help="rounds on Celery (default: --repeat)")
    add("--workers", type=int, default=2, help="`engine worker` processes")
    add("--worker-concurrency", type=int, default=4, help="pool processes per worker")
    add("--broker", default="redis://127.0.0.1:6379/0", help="the Celery broker URL")
    add("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    return parser.parse_args(argv)


def _fixed(digits: int, key: str, suffix: str = "") -> Column:
    """A figure of each row that has it (the reference runs have no per-item figures)."""
    return key, lambda r: f"{r[key]:.{digits}f}{suffix}" if key in r else ""


def report(env: dict[str, Any], rows: list[dict[str, Any]], on_celery: list[dict[str, Any]]) -> str:
    out = [
        f"map benchmark, {env['date']}; {env['cpus']} CPUs, Python {env['python']}; "
        f"median of {env['repeat']} rounds; load average {env['load_average'][0]:.1f} at start",
        "each figure: a fresh `engine run` child on a fresh SQLite file (WAL, synchronous=NORMAL).",
        "ms, cpu_ms: (wall or CPU time - the 1-step run's) / items (steps for the chain);",
        "kb: (peak RSS - the 1-item map's peak RSS (the 1-step run's for the chain)) / items;",
        "ratio: ms per item / the chain's ms per step.",
        "",
        table(
            [
                ("run", lambda r: r["label"]),
                _fixed(2, "seconds"),
                _fixed(2, "cpu_seconds"),
                _fixed(1, "peak_rss_mb"),
                _fixed(3, "ms"),
                _fixed(3, "cpu_ms"),
                _fixed(2, "kb"),
                _fixed(2, "ratio", "x"),
                _fixed(2, "cpu_ratio", "x"),
            ],
            rows,
        ),
    ]
    if on_celery:
        out += [
            "",
            f"Celery on {env['broker']}, {env['workers']} workers x {env['worker_concurrency']}; "
            f"median of {env['celery_repeat']} rounds; ms: (wall - the 1-item run's) / items",
            table(
                [
                    ("run", lambda r: r["label"]),
                    _fixed(2, "seconds"),
                    _fixed(1, "peak_rss_mb"),
                    _fixed(3, "ms"),
                    _fixed(0, "items_per_second"),
                ],
                on_celery,
            ),
        ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    started = time.perf_counter()
    env = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "repeat": args.repeat,
        "celery_repeat": args.celery_repeat or args.repeat,
        "broker": args.broker,
        "workers": args.workers,
        "worker_concurrency": args.worker_concurrency,
    }
    with tempfile.TemporaryDirectory(prefix="engine-bench-map-") as tmp:
        folder = Path(tmp)
        (folder / "runners").mkdir()
        (folder / "runners" / "bench.py").write_text(RUNNERS)
        rows = local(args, folder)
        on_celery = celery(args, folder) if args.celery_items > 0 else []
    env["seconds"] = time.perf_counter() - started
    env["load_average_end"] = os.getloadavg()
    print(report(env, rows, on_celery))
    print(f"\n(benchmark took {env['seconds']:.0f} s; load average now {os.getloadavg()[0]:.1f})")
    if args.json:
        results = {"environment": env, "local": rows, "celery": on_celery}
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
