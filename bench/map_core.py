"""The executor alone: a mapped step's cost per item beside a chain's per step, in this one
process, with no CLI and no progress output around either.

    .venv/bin/python bench/map_core.py [--items 100000] [--chain 10000] [--concurrency 1,8]
                                       [--repeat 3] [--json FILE]

`bench/map.py` compares the two through `engine run`, where a chain's step also prints two
progress lines and a summary row and an item prints nothing: that baseline flatters the map.
Here both go through `BatchService` and one direct dispatcher on a fresh SQLite file each run,
as `bench/run.py` measures the chain, interleaved round by round so that load on the machine
hits both. The map's definition is `make` (returning `list(range(items))`) then `fan`, the
no-op mapped over it; one item of the same definition is its fixed cost.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads  # sibling modules: bench/ is not a package
from map import map_yaml
from report import ints, table

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add = parser.add_argument
    add("--items", type=int, default=100_000, help="items of the mapped step")
    add("--chain", type=int, default=10_000, help="steps of the chain compared with")
    add("--concurrency", type=ints, default=[1, 8], help="the map's concurrency")
    add("--repeat", type=int, default=3, help="rounds; medians are shown")
    add("--json", type=Path, metavar="FILE", help="also write every sample as JSON")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, list[workloads.Sample]]:
    """Per case, its samples: the chain, then per concurrency one item and `--items` items."""
    reg = workloads.registry()
    reg.add("produce", lambda inputs, ctx: list(range(inputs["n"])))
    cases = {f"chain of {args.chain:,}": (workloads.linear_yaml(args.chain), args.chain)}
    for c in args.concurrency:
        cases[f"map c={c}, 1 item"] = (map_yaml(1, c), 2)
        cases[f"map c={c}, {args.items:,} items"] = (map_yaml(args.items, c), 2)
    loaded = {
        label: (load_text(text, "bench.yaml", reg), rows) for label, (text, rows) in cases.items()
    }
    samples: dict[str, list[workloads.Sample]] = {label: [] for label in cases}
    dispatcher = DirectDispatcher(reg)  # one, as in a long-lived process: its threads are reused
    try:
        for round_ in range(1, args.repeat + 1):
            for label, (definition, rows) in loaded.items():
                samples[label].append(workloads.engine_run(definition, dispatcher, rows))
                seconds = samples[label][-1].seconds
                print(f"  .. round {round_}: {label}: {seconds:.2f} s", file=sys.stderr)
    finally:
        dispatcher.close()
    return samples


def figures(
    args: argparse.Namespace, samples: dict[str, list[workloads.Sample]]
) -> list[dict[str, Any]]:
    """Medians; per step of the chain and per item of each map beyond its one-item run; ratios."""

    def median(label: str, name: str) -> float:
        return statistics.median(getattr(s, name) for s in samples[label])

    chain = f"chain of {args.chain:,}"
    per_step = {k: median(chain, k) / args.chain * 1000 for k in ("seconds", "cpu_seconds")}
    rows = [{"run": chain, "ms": per_step["seconds"], "cpu_ms": per_step["cpu_seconds"]}]
    for c in args.concurrency:
        one, many = f"map c={c}, 1 item", f"map c={c}, {args.items:,} items"
        row: dict[str, Any] = {"run": many}
        for key, name in (("ms", "seconds"), ("cpu_ms", "cpu_seconds")):
            row[key] = (median(many, name) - median(one, name)) / (args.items - 1) * 1000
            row[key.replace("ms", "ratio")] = row[key] / per_step[name]
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    samples = measure(args)
    rows = figures(args, samples)
    print(
        f"map in process, {date}; {os.cpu_count()} CPUs; median of {args.repeat} rounds; load "
        f"average {load:.1f} at start, {os.getloadavg()[0]:.1f} at the end\n"
        "ms: per step of the chain; per item of a map beyond its 1-item run. ratio: to the chain."
    )
    print(
        table(
            [
                ("run", lambda r: r["run"]),
                ("ms", lambda r: f"{r['ms']:.3f}"),
                ("cpu_ms", lambda r: f"{r['cpu_ms']:.3f}"),
                ("ratio", lambda r: f"{r['ratio']:.2f}x" if "ratio" in r else ""),
                ("cpu_ratio", lambda r: f"{r['cpu_ratio']:.2f}x" if "cpu_ratio" in r else ""),
            ],
            rows,
        )
    )
    if args.json:
        dumped = {label: [asdict(s) for s in runs] for label, runs in samples.items()}
        args.json.write_text(json.dumps({"figures": rows, "samples": dumped}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
