"""Per-step cost of the engine beside the floor of the same durable writes, and validation time.

    .venv/bin/python bench/run.py [--steps 1000,10000] [--repeat 3] [--concurrency 1,8]
                                  [--validation-steps 1000,10000] [--json FILE]

Everything runs in this one process; docs/performance.md says what is measured and why.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads  # sibling modules: bench/ is not a package
from report import ints, table

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher


@dataclass
class Case:
    """One shape at one size: the engine's and the floor's samples, interleaved run by run."""

    shape: str
    concurrency: int
    steps: int
    engine: list[workloads.Sample] = field(default_factory=list)
    floor: list[workloads.Sample] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.shape if self.shape == "linear" else f"fan-out c={self.concurrency}"

    def samples(self, side: str) -> list[workloads.Sample]:
        return self.engine if side == "engine" else self.floor

    def seconds(self, side: str, cpu: bool = False) -> float:
        return statistics.median(s.cpu_seconds if cpu else s.seconds for s in self.samples(side))

    def ms_per_step(self, side: str, cpu: bool = False) -> float:
        return self.seconds(side, cpu) / self.steps * 1000

    def ratio(self, cpu: bool = False) -> float:
        return self.ms_per_step("engine", cpu) / self.ms_per_step("floor", cpu)

    def rss(self, side: str) -> float:
        return max(s.peak_rss_mb for s in self.samples(side))

    def start_rss(self, side: str) -> float:
        return min(s.start_rss_mb for s in self.samples(side))

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": self.shape, "concurrency": self.concurrency}
        out["steps"] = self.steps
        for side in ("engine", "floor"):
            samples = self.samples(side)
            out[f"{side}_seconds"] = [s.seconds for s in samples]
            out[f"{side}_cpu_seconds"] = [s.cpu_seconds for s in samples]
            out[f"{side}_ms_per_step"] = self.ms_per_step(side)
            out[f"{side}_cpu_ms_per_step"] = self.ms_per_step(side, cpu=True)
            out[f"{side}_start_rss_mb"] = self.start_rss(side)
            out[f"{side}_peak_rss_mb"] = self.rss(side)
        out["ratio"], out["cpu_ratio"] = self.ratio(), self.ratio(cpu=True)
        return out


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add = parser.add_argument
    add("--steps", type=ints, default=[1000, 10000], help="linear steps and fan-out widths")
    add("--repeat", type=int, default=3, help="runs of each measurement; medians are shown")
    add("--concurrency", type=ints, default=[1, 8], help="concurrency of the fan-out definition")
    add("--validation-steps", type=ints, default=[1000, 10000], help="sizes to validate (0: none)")
    add("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    return parser.parse_args(argv)


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def run_cases(args: argparse.Namespace) -> list[Case]:
    reg = workloads.registry()
    dispatcher = DirectDispatcher(reg)  # one, as in a long-lived process: its threads are reused
    shapes = [("linear", 1)] + [("fanout", c) for c in args.concurrency]
    cases = []
    try:
        for shape, concurrency in shapes:
            for size in sorted(args.steps):
                if shape == "linear":
                    text, steps = workloads.linear_yaml(size), size
                else:
                    text, steps = workloads.fanout_yaml(size, concurrency), size + 2
                loaded = load_text(text, f"{shape}.yaml", reg)
                case = Case(shape, concurrency, steps)
                for _ in range(args.repeat):
                    case.engine.append(workloads.engine_run(loaded, dispatcher, steps))
                    case.floor.append(workloads.floor_run(steps))
                engine, floor = case.ms_per_step("engine"), case.ms_per_step("floor")
                _progress(f"{case.label}, {steps} steps: {engine:.3f} / {floor:.3f} ms/step")
                cases.append(case)
    finally:
        dispatcher.close()
    return cases


def steady(cases: list[Case]) -> list[dict[str, Any]]:
    """Per shape: the steady per-step cost (least-squares slope of run time over the sizes), the
    fixed cost per run (the intercept), and how ms/step grows from the smallest size to the
    largest."""
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.label, []).append(case)
    rows = []
    for label, group in groups.items():
        group.sort(key=lambda c: c.steps)
        row: dict[str, Any] = {"label": label, "sizes": [c.steps for c in group]}
        for side in ("engine", "floor"):
            for cpu, kind in ((False, ""), (True, "_cpu")):
                points = [(c.steps, c.seconds(side, cpu)) for c in group]
                slope, intercept = _fit(points)
                row[f"{side}_steady{kind}_ms_per_step"] = slope * 1000
                row[f"{side}_fixed{kind}_ms"] = intercept * 1000
            row[f"{side}_growth"] = group[-1].ms_per_step(side) / group[0].ms_per_step(side)
        for kind in ("", "_cpu"):
            engine = row[f"engine_steady{kind}_ms_per_step"]
            row[f"ratio{kind}"] = engine / row[f"floor_steady{kind}_ms_per_step"]
        rows.append(row)
    return rows


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    if len(points) < 2:
        steps, seconds = points[0]
        return seconds / steps, 0.0
    return statistics.linear_regression([p[0] for p in points], [p[1] for p in points])


def validations(args: argparse.Namespace) -> list[workloads.Validation]:
    reg = workloads.registry()
    out = []
    for size in sorted(s for s in args.validation_steps if s > 0):
        runs = [workloads.validation(size, reg, pure=i == 0) for i in range(args.repeat)]
        median = {
            name: statistics.median(getattr(r, name) for r in runs)
            for name in ("load_text", "parse_yaml", "model_validate", "pyyaml")
        }
        out.append(workloads.Validation(**{**asdict(runs[0]), **median}))
        _progress(f"validation of {size} steps: {median['load_text']:.2f} s")
    return out


def _ms(value: float) -> str:
    return f"{value:.3f}"


def report(
    env: dict[str, Any],
    cases: list[Case],
    steady_rows: list[dict[str, Any]],
    checks: list[workloads.Validation],
) -> str:
    out = [
        f"engine benchmark, {env['date']}; {env['cpus']} CPUs, Python {env['python']}, "
        f"SQLAlchemy {env['sqlalchemy']}, SQLite {env['sqlite']}; median of {env['repeat']}; "
        f"load average at start {env['load_average'][0]:.1f}",
        "no-op steps, a fresh SQLite file per run (WAL, synchronous=NORMAL).",
        "floor: SQLAlchemy Core on the same tables and pragmas, per step: insert+commit, call,",
        "update+commit.",
        "ms/step: wall time / steps. CPU: the process's CPU time (all threads) / steps.",
        "RSS: the whole process's, at the start of a run -> its peak during the run; memory",
        "freed by earlier runs is reused before RSS grows "
        f"(process baseline {env['baseline_rss_mb']:.0f} MB).",
    ]
    if cases:
        out += ["", "Per run"]
        out.append(
            table(
                [
                    ("shape", lambda c: c.label),
                    ("steps", lambda c: str(c.steps)),
                    ("engine s", lambda c: _ms(c.seconds("engine"))),
                    ("engine ms/step", lambda c: _ms(c.ms_per_step("engine"))),
                    ("floor ms/step", lambda c: _ms(c.ms_per_step("floor"))),
                    ("ratio", lambda c: f"{c.ratio():.2f}x"),
                    ("engine CPU", lambda c: _ms(c.ms_per_step("engine", cpu=True))),
                    ("floor CPU", lambda c: _ms(c.ms_per_step("floor", cpu=True))),
                    ("CPU ratio", lambda c: f"{c.ratio(cpu=True):.2f}x"),
                    (
                        "engine RSS MB",
                        lambda c: f"{c.start_rss('engine'):.0f}->{c.rss('engine'):.0f}",
                    ),
                    ("floor RSS MB", lambda c: f"{c.start_rss('floor'):.0f}->{c.rss('floor'):.0f}"),
                ],
                cases,
            )
        )
        out += [
            "",
            "Steady: slope of run time over the sizes (ms/step); fixed: intercept (ms per run); "
            "growth: ms/step at the largest size / at the smallest",
        ]
        out.append(
            table(
                [
                    ("shape", lambda r: r["label"]),
                    ("engine steady", lambda r: _ms(r["engine_steady_ms_per_step"])),
                    ("floor steady", lambda r: _ms(r["floor_steady_ms_per_step"])),
                    ("ratio", lambda r: f"{r['ratio']:.2f}x"),
                    ("engine CPU steady", lambda r: _ms(r["engine_steady_cpu_ms_per_step"])),
                    ("floor CPU steady", lambda r: _ms(r["floor_steady_cpu_ms_per_step"])),
                    ("CPU ratio", lambda r: f"{r['ratio_cpu']:.2f}x"),
                    ("engine fixed ms", lambda r: f"{r['engine_fixed_ms']:.0f}"),
                    ("engine growth", lambda r: f"{r['engine_growth']:.2f}x"),
                    ("floor growth", lambda r: f"{r['floor_growth']:.2f}x"),
                ],
                steady_rows,
            )
        )
    if checks:
        loader = env["loader"]
        out += [
            "",
            f"Validation of a linear definition with inputs (wall seconds); libyaml available: "
            f"{env['libyaml']}; the engine's loader derives from {loader}",
        ]
        out.append(
            table(
                [
                    ("steps", lambda v: str(v.steps)),
                    ("KB", lambda v: f"{v.yaml_bytes / 1024:.0f}"),
                    ("load_text", lambda v: _ms(v.load_text)),
                    ("of it parse_yaml", lambda v: _ms(v.parse_yaml)),
                    ("model_validate", lambda v: _ms(v.model_validate)),
                    (f"yaml.load {loader}", lambda v: _ms(v.pyyaml)),
                    ("ratio", lambda v: f"{v.load_text / v.pyyaml:.1f}x"),
                    ("yaml.safe_load (pure)", lambda v: _ms(v.pyyaml_pure or 0.0)),
                ],
                checks,
            )
        )
        if len(checks) > 1:
            first, last = checks[0], checks[-1]
            growth = (last.load_text / last.steps) / (first.load_text / first.steps)
            pyyaml = (last.pyyaml / last.steps) / (first.pyyaml / first.steps)
            out.append(
                f"growth of seconds/step from {first.steps} to {last.steps} steps: load_text "
                f"{growth:.2f}x, yaml.load {pyyaml:.2f}x"
            )
    return "\n".join(out)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "pyyaml": yaml.__version__,
        "libyaml": bool(yaml.__with_libyaml__),
        "loader": f"{workloads.BASE_LOADER.__name__}",
        "repeat": args.repeat,
        "baseline_rss_mb": workloads.max_rss_mb(),
        "peak_rss_per_run": workloads.PEAK_RSS_RESETS,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    started = time.perf_counter()
    env = environment(args)
    cases = run_cases(args)
    steady_rows = steady(cases)
    checks = validations(args)
    env["seconds"] = time.perf_counter() - started
    print(report(env, cases, steady_rows, checks))
    print(f"\n(benchmark took {env['seconds']:.0f} s; load average now {os.getloadavg()[0]:.1f})")
    if args.json:
        results = {
            "environment": env,
            "cases": [c.as_json() for c in cases],
            "steady": steady_rows,
            "validation": [asdict(v) | {"ratio": v.load_text / v.pyyaml} for v in checks],
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
