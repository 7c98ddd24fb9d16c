"""Per-step cost of the engine beside the floor of the same durable writes, and validation time.

    .venv/bin/python bench/run.py [--steps 1000,10000] [--repeat 3] [--concurrency 1,8]
                                  [--validation-steps 10000] [--ref-steps 1000,2000] [--json FILE]

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy  # noqa: E402
import yaml  # noqa: E402
import workloads  # noqa: E402
from workloads import Sample, engine_run, floor_run, validation  # noqa: E402

from engine.definition import load_text  # noqa: E402
from engine.dispatch.direct import DirectDispatcher  # noqa: E402


@dataclass
class Case:
    """One shape at one size: the engine's and the floor's samples, interleaved run by run."""

    shape: str
    concurrency: int
    steps: int
    engine: list[Sample] = field(default_factory=list)
    floor: list[Sample] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.shape if self.shape == "linear" else f"fan-out c={self.concurrency}"

    def seconds(self, side: str, cpu: bool = False) -> float:
        return statistics.median(s.cpu_seconds if cpu else s.seconds for s in getattr(self, side))

    def ms_per_step(self, side: str, cpu: bool = False) -> float:
        return self.seconds(side, cpu) / self.steps * 1000

    def ratio(self, cpu: bool = False) -> float:
        return self.ms_per_step("engine", cpu) / self.ms_per_step("floor", cpu)

    def rss(self, side: str) -> float:
        return max(s.peak_rss_mb for s in getattr(self, side))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=_ints, default=[1000, 10000],
                        help="sizes: linear steps, and the width of the fan-out (default 1000,10000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; medians (default 3)")
    parser.add_argument("--concurrency", type=_ints, default=[1, 8],
                        help="concurrency values of the fan-out definition (default 1,8)")
    parser.add_argument("--validation-steps", type=int, default=10000,
                        help="steps of the definition whose validation is timed (0: skip)")
    parser.add_argument("--ref-steps", type=_ints, default=[1000, 2000],
                        help="sizes of the definition whose inputs also read the previous step's "
                             "result (default 1000,2000; empty: skip)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    return parser.parse_args(argv)


def run_cases(args: argparse.Namespace) -> list[Case]:
    reg = workloads.registry()
    dispatcher = DirectDispatcher(reg)  # one, as in a long-lived process; its threads are reused
    shapes = [("linear", 1)] + [("fanout", c) for c in args.concurrency]
    cases = []
    for shape, concurrency in shapes:
        for size in sorted(args.steps):
            if shape == "linear":
                text, steps = workloads.linear_yaml(size), size
            else:
                text, steps = workloads.fanout_yaml(size, concurrency), size + 2
            loaded = load_text(text, f"{shape}.yaml", reg)
            case = Case(shape, concurrency, steps)
            for _ in range(args.repeat):
                case.engine.append(engine_run(loaded, dispatcher, steps))
                case.floor.append(floor_run(steps))
            _progress(f"{case.label} {steps} steps: engine {case.ms_per_step('engine'):.3f} "
                      f"ms/step, floor {case.ms_per_step('floor'):.3f} ms/step")
            cases.append(case)
    dispatcher.close()
    return cases


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares slope (s/step) and intercept (s) of run time against steps."""
    if len(points) < 2:
        steps, seconds = points[0]
        return seconds / steps, 0.0
    slope, intercept = statistics.linear_regression([p[0] for p in points],
                                                    [p[1] for p in points])
    return slope, intercept


def steady(cases: list[Case]) -> list[dict[str, Any]]:
    """Per shape: the steady per-step cost (slope across sizes), the fixed cost per run, and how
    the plain per-step cost grows from the smallest to the largest size."""
    rows = []
    groups: dict[tuple[str, int], list[Case]] = {}
    for case in cases:
        groups.setdefault((case.shape, case.concurrency), []).append(case)
    for (shape, concurrency), group in groups.items():
        group.sort(key=lambda c: c.steps)
        row: dict[str, Any] = {"shape": shape, "concurrency": concurrency, "label": group[0].label,
                               "sizes": [c.steps for c in group]}
        for side in ("engine", "floor"):
            for cpu, kind in ((False, ""), (True, "_cpu")):
                slope, intercept = _fit([(c.steps, c.seconds(side, cpu)) for c in group])
                row[f"{side}_steady{kind}_ms_per_step"] = slope * 1000
                row[f"{side}_fixed{kind}_ms"] = intercept * 1000
            row[f"{side}_growth"] = group[-1].ms_per_step(side) / group[0].ms_per_step(side)
        for kind in ("", "_cpu"):
            row[f"ratio{kind}"] = (row[f"engine_steady{kind}_ms_per_step"]
                                   / row[f"floor_steady{kind}_ms_per_step"])
        rows.append(row)
    return rows


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def report(cases: list[Case], steady_rows: list[dict[str, Any]],
           checks: list[workloads.Validation], env: dict[str, Any], repeat: int) -> str:
    out = [
        f"engine benchmark, {env['date']}, {env['cpus']} CPUs, Python {env['python']}, "
        f"SQLAlchemy {env['sqlalchemy']}, SQLite {env['sqlite']}",
        f"no-op steps on a fresh SQLite file per run (WAL, synchronous=NORMAL); median of {repeat}",
        "floor: SQLAlchemy Core loop on the same tables and pragmas: insert+commit, call, "
        "update+commit per step",
        "",
    ]
    if cases:
        out.append("wall time (ms/step = run time / steps), and the process's CPU time beside it")
        out.append(_table(
            ["shape", "steps", "engine s", "engine ms/step", "floor ms/step", "ratio",
             "engine CPU ms/step", "floor CPU ms/step", "CPU ratio", "engine RSS MB",
             "floor RSS MB"],
            [[c.label, str(c.steps), f"{c.seconds('engine'):.3f}",
              f"{c.ms_per_step('engine'):.3f}", f"{c.ms_per_step('floor'):.3f}",
              f"{c.ratio():.2f}x", f"{c.ms_per_step('engine', True):.3f}",
              f"{c.ms_per_step('floor', True):.3f}", f"{c.ratio(True):.2f}x",
              f"{c.rss('engine'):.0f}", f"{c.rss('floor'):.0f}"] for c in cases],
        ))
        out += ["", "steady: slope of run time over sizes; fixed: the intercept (cost per run); "
                    "growth: ms/step at the largest size / at the smallest", ""]
        out.append(_table(
            ["shape", "engine steady ms/step", "floor steady ms/step", "ratio",
             "engine CPU steady", "floor CPU steady", "CPU ratio", "engine fixed ms",
             "engine growth", "floor growth"],
            [[r["label"], f"{r['engine_steady_ms_per_step']:.3f}",
              f"{r['floor_steady_ms_per_step']:.3f}", f"{r['ratio']:.2f}x",
              f"{r['engine_steady_cpu_ms_per_step']:.3f}",
              f"{r['floor_steady_cpu_ms_per_step']:.3f}", f"{r['ratio_cpu']:.2f}x",
              f"{r['engine_fixed_ms']:.0f}", f"{r['engine_growth']:.2f}x",
              f"{r['floor_growth']:.2f}x"] for r in steady_rows],
        ))
    if checks:
        out += ["", f"validation: a linear definition with inputs; libyaml (C loader) available: "
                    f"{env['libyaml']}; the engine's loader derives from {env['loader']}", ""]
        out.append(_table(
            ["definition", "KB", "load_text s", "parse_yaml s", "model_validate s",
             f"{env['loader']} s", "ratio", "yaml.safe_load s"],
            [[f"{v.steps} steps" + (", step refs" if v.step_refs else ""),
              f"{v.yaml_bytes / 1024:.0f}", f"{v.load_text:.3f}", f"{v.parse_yaml:.3f}",
              f"{v.model_validate:.3f}", f"{v.pyyaml_same_loader:.3f}",
              f"{v.load_text / v.pyyaml_same_loader:.1f}x", f"{v.pyyaml_safe_load:.3f}"]
             for v in checks],
        ))
    return "\n".join(out)


def environment() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "pyyaml": yaml.__version__,
        "libyaml": bool(yaml.__with_libyaml__),
        "loader": f"yaml.{workloads.BASE_LOADER.__name__}",
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    started = time.perf_counter()
    env = environment()
    cases = run_cases(args)
    steady_rows = steady(cases)
    reg = workloads.registry()
    checks = []
    if args.validation_steps:
        checks.append(validation(args.validation_steps, step_refs=False, reg=reg))
        _progress(f"validation of {args.validation_steps} steps: {checks[-1].load_text:.2f} s")
    for size in args.ref_steps:
        checks.append(validation(size, step_refs=True, reg=reg))
        _progress(f"validation of {size} steps with step refs: {checks[-1].load_text:.2f} s")
    print(report(cases, steady_rows, checks, env, args.repeat))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        results = {
            "environment": env,
            "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "cases": [
                {"shape": c.shape, "concurrency": c.concurrency, "steps": c.steps,
                 "engine_seconds": [s.seconds for s in c.engine],
                 "floor_seconds": [s.seconds for s in c.floor],
                 "engine_cpu_seconds": [s.cpu_seconds for s in c.engine],
                 "floor_cpu_seconds": [s.cpu_seconds for s in c.floor],
                 "engine_ms_per_step": c.ms_per_step("engine"),
                 "floor_ms_per_step": c.ms_per_step("floor"),
                 "ratio": c.ratio(),
                 "engine_cpu_ms_per_step": c.ms_per_step("engine", True),
                 "floor_cpu_ms_per_step": c.ms_per_step("floor", True),
                 "cpu_ratio": c.ratio(True),
                 "engine_peak_rss_mb": c.rss("engine"), "floor_peak_rss_mb": c.rss("floor")}
                for c in cases
            ],
            "steady": steady_rows,
            "validation": [
                {**asdict(v), "ratio": v.load_text / v.pyyaml_same_loader} for v in checks
            ],
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
