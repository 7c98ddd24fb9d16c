"""What step logs cost: a runner printing through `engine run` beside the same runner printing
to /dev/null, and the per-step cost of runners that say nothing, before and after logs landed.

    .venv/bin/python bench/logs.py [--lines 10000,100000] [--repeat 3] [--dispatcher direct]
                                   [--log-limit BYTES] [--before SHA] [--after HEAD]
                                   [--steps 5000] [--rounds 5] [--skip printing|overhead]
                                   [--json FILE]

Printing: `engine run` subprocesses (the installed `engine`, a fresh SQLite file each run, stdout
on /dev/null, the progress on stderr into a file) of one step whose runner prints N short lines,
each run beside the same step printing them to a file opened on /dev/null: the ratios of wall and
CPU time, and the engine process's peak RSS (`wait4`). ENGINE_LOG_LIMIT (1 MiB by default) caps
what is kept, shown as lines kept.

Overhead: `bench/run.py` (no-op steps, which say nothing) of the commit before step logs (by
default the parent of the commit that added engine/dispatch/capture.py) and of `--after`, each in
a git worktree of its own under /tmp (removed afterwards), run in alternate order, `--rounds`
times each, with the same arguments: the ratio of their ms/step. One size by default: the slope
between two sizes, on a shared machine, scatters more than the 5% it is meant to show.

docs/performance.md ("Step logs") gives the figures and where the time goes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import ints, table  # a sibling module: bench/ is not a package

REPO = Path(__file__).resolve().parent.parent
ENGINE = str(Path(sys.executable).with_name("engine"))
CAPTURE = "engine/dispatch/capture.py"
"""The module whose first commit brought step logs in."""

RUNNER = '''
import os

from engine import job_handler


@job_handler("printer")
def printer(inputs, ctx):
    """Prints `lines` lines of about 30 bytes: to stdout, or to a file on /dev/null."""
    if inputs["devnull"]:
        with open(os.devnull, "w") as out:
            for i in range(inputs["lines"]):
                print(f"line {i} of the benchmark, said", file=out)
    else:
        for i in range(inputs["lines"]):
            print(f"line {i} of the benchmark, said")
    return inputs["lines"]
'''
DEFINITION = """
name: printer
params:
  lines: {type: integer}
  devnull: {type: boolean}
steps:
  - id: say
    runner: printer
    inputs: {lines: "{{ params.lines }}", devnull: "{{ params.devnull }}"}
"""


# -- printing ---------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    """User and system time of the engine process, every thread: less disturbed than wall time
    by other work on the machine."""
    peak_rss_mb: float
    kept: int
    """Lines stored."""


@dataclass
class Printing:
    """One number of lines: runs printing to stdout and to /dev/null, interleaved."""

    lines: int
    printed: list[Run] = field(default_factory=list)
    devnull: list[Run] = field(default_factory=list)

    def runs(self, side: str) -> list[Run]:
        return self.printed if side == "printed" else self.devnull

    def seconds(self, side: str, cpu: bool = False) -> float:
        return statistics.median(r.cpu_seconds if cpu else r.seconds for r in self.runs(side))

    def rss(self, side: str) -> float:
        return max(r.peak_rss_mb for r in self.runs(side))

    def ratio(self, cpu: bool = False) -> float:
        """The median of each printing run's time over its /dev/null neighbour's."""
        pairs = zip(self.printed, self.devnull, strict=True)
        if cpu:
            return statistics.median(p.cpu_seconds / d.cpu_seconds for p, d in pairs)
        return statistics.median(p.seconds / d.seconds for p, d in pairs)

    @property
    def kept(self) -> int:
        return min(r.kept for r in self.printed)

    @property
    def us_per_line(self) -> float:
        """What each line printed adds to the run, in microseconds."""
        return (self.seconds("printed") - self.seconds("devnull")) / self.lines * 1e6

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out |= {"ratio": self.ratio(), "cpu_ratio": self.ratio(cpu=True)}
        out |= {"kept": self.kept, "us_per_line": self.us_per_line}
        for side in ("printed", "devnull"):
            out[f"{side}_seconds"] = self.seconds(side)
            out[f"{side}_cpu_seconds"] = self.seconds(side, cpu=True)
            out[f"{side}_peak_rss_mb"] = self.rss(side)
        return out


def engine_run(folder: Path, lines: int, devnull: bool, env: dict[str, str]) -> Run:
    """`engine run` of the printer on a fresh database: its wall time and peak RSS."""
    db = folder / "bench.db"
    for stale in folder.glob("bench.db*"):
        stale.unlink()
    command = [ENGINE, "run", "printer.yaml", "-p", f"lines={lines}"]
    command += ["-p", f"devnull={str(devnull).lower()}"]
    progress = folder / "progress.txt"
    with progress.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            cwd=folder,
            env={**env, "ENGINE_DATABASE_URL": f"sqlite:///{db}"},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = progress.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{tail}")
    with sqlite3.connect(db) as conn:
        kept = conn.execute("SELECT count(*) FROM batch_step_log").fetchone()[0]
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, kept)


def printing(args: argparse.Namespace) -> list[Printing]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env["ENGINE_DISPATCHER"] = args.dispatcher
    if args.log_limit is not None:
        env["ENGINE_LOG_LIMIT"] = str(args.log_limit)
    cases = [Printing(lines) for lines in args.lines]
    with tempfile.TemporaryDirectory(prefix="engine-bench-logs-") as name:
        folder = Path(name)
        (folder / "runners").mkdir()
        (folder / "runners" / "printer.py").write_text(RUNNER)
        (folder / "printer.yaml").write_text(DEFINITION)
        engine_run(folder, 10, False, env)  # warm the file cache and bytecode: not counted
        for case in cases:
            for _ in range(args.repeat):
                case.devnull.append(engine_run(folder, case.lines, True, env))
                case.printed.append(engine_run(folder, case.lines, False, env))
            _progress(
                f"{case.lines:,} lines: {case.seconds('printed'):.2f} s printed, "
                f"{case.seconds('devnull'):.2f} s to /dev/null ({case.ratio():.2f}x, CPU "
                f"{case.ratio(cpu=True):.2f}x)"
            )
    return cases


# -- overhead ---------------------------------------------------------------------------------


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def before_logs() -> str:
    """The parent of the commit that added the capture module."""
    added = git("log", "--diff-filter=A", "--format=%H", "--", CAPTURE).splitlines()
    if not added:
        raise SystemExit(f"no commit adds {CAPTURE}: pass --before")
    return git("rev-parse", f"{added[-1]}^")


@dataclass
class Version:
    label: str
    commit: str
    tree: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    """The --json documents of its bench/run.py runs."""

    def steady(self, shape: str, key: str) -> float:
        """The median over runs of `key` of the steady row of `shape`."""
        rows = [row for run in self.runs for row in run["steady"] if row["label"] == shape]
        return statistics.median(float(row[key]) for row in rows)

    def largest(self, shape: str, best: bool = False) -> float:
        """The engine's ms/step at the largest size of `shape`: the median over runs of their
        medians, or (`best`) the least of every sample, which other work on the machine can
        only make larger."""
        cases = [case for run in self.runs for case in run["cases"] if _label(case) == shape]
        size: int = max(case["steps"] for case in cases)
        cases = [case for case in cases if case["steps"] == size]
        if best:
            return min(float(s) for case in cases for s in case["engine_seconds"]) / size * 1000
        return statistics.median(float(case["engine_ms_per_step"]) for case in cases)


def _label(case: dict[str, Any]) -> str:
    """A bench/run.py case's shape as its steady rows name it."""
    return "linear" if case["shape"] == "linear" else f"fan-out c={case['concurrency']}"


def overhead(args: argparse.Namespace) -> list[Version]:
    """bench/run.py of each version, alternately; the worktrees are removed in any case."""
    commits = [("before", args.before or before_logs()), ("after", git("rev-parse", args.after))]
    versions: list[Version] = []
    try:
        for label, commit in commits:
            tree = Path(tempfile.mkdtemp(prefix=f"engine-{label}-{commit[:7]}-"))
            tree.rmdir()
            git("worktree", "add", "--detach", str(tree), commit)
            versions.append(Version(label, commit, tree))
            _check_imports(tree)
        for round_ in range(args.rounds):
            for version in versions if round_ % 2 == 0 else versions[::-1]:
                version.runs.append(_bench_run(version, args))
                linear = version.runs[-1]["steady"][0]
                _progress(
                    f"round {round_ + 1}, {version.label} ({version.commit[:7]}): linear "
                    f"{linear['engine_steady_ms_per_step']:.3f} ms/step, {linear['ratio']:.2f}x "
                    "floor"
                )
    finally:
        for version in versions:
            subprocess.run(["git", "worktree", "remove", "--force", str(version.tree)], cwd=REPO)
    return versions


def _env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return env | {"PYTHONPATH": str(tree)}


def _check_imports(tree: Path) -> None:
    """The worktree's own engine, not the installed one, is what its benchmark imports."""
    where = subprocess.run(
        [sys.executable, "-c", "import engine; print(engine.__file__)"],
        cwd=tree / "bench",
        env=_env(tree),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not where.startswith(str(tree)):
        raise SystemExit(f"{tree}: imports engine from {where}")


def _bench_run(version: Version, args: argparse.Namespace) -> dict[str, Any]:
    out = version.tree / "bench-run.json"
    command = [sys.executable, str(version.tree / "bench" / "run.py")]
    command += ["--steps", ",".join(map(str, args.steps)), "--repeat", str(args.repeat)]
    command += ["--concurrency", "1", "--validation-steps", "0", "--json", str(out)]
    subprocess.run(
        command, cwd=version.tree, env=_env(version.tree), check=True, stdout=subprocess.DEVNULL
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# -- the report -------------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def report(env: dict[str, Any], cases: list[Printing], versions: list[Version]) -> str:
    out = [
        f"step logs benchmark, {env['date']}; {env['cpus']} CPUs, Python {env['python']}; "
        f"load average at start {env['load_average'][0]:.1f}",
    ]
    if cases:
        limit = env["log_limit"] or "1 MiB (default)"
        out += [
            "",
            f"Printing: engine run ({env['dispatcher']} dispatcher, ENGINE_LOG_LIMIT {limit}), "
            f"median of {env['repeat']}; ratio: median of each printing run over its /dev/null "
            "neighbour; RSS: peak of the engine process",
            table(
                [
                    ("lines", lambda c: f"{c.lines:,}"),
                    ("kept", lambda c: f"{c.kept:,}"),
                    ("printed s", lambda c: f"{c.seconds('printed'):.2f}"),
                    ("/dev/null s", lambda c: f"{c.seconds('devnull'):.2f}"),
                    ("ratio", lambda c: f"{c.ratio():.2f}x"),
                    ("printed CPU s", lambda c: f"{c.seconds('printed', cpu=True):.2f}"),
                    ("/dev/null CPU s", lambda c: f"{c.seconds('devnull', cpu=True):.2f}"),
                    ("CPU ratio", lambda c: f"{c.ratio(cpu=True):.2f}x"),
                    ("µs/line", lambda c: f"{c.us_per_line:.1f}"),
                    ("printed RSS MB", lambda c: f"{c.rss('printed'):.0f}"),
                    ("/dev/null RSS MB", lambda c: f"{c.rss('devnull'):.0f}"),
                ],
                cases,
            ),
        ]
    if versions:
        before, after = versions
        shapes = [row["label"] for row in before.runs[0]["steady"]]
        out += [
            "",
            f"Overhead: bench/run.py --steps {','.join(map(str, env['steps']))} --repeat "
            f"{env['repeat']} --concurrency 1 --validation-steps 0, {env['rounds']} rounds "
            f"alternating; before {before.commit[:7]}, after {after.commit[:7]}; medians of the "
            "rounds' steady ms/step; best: the least ms/step of any run at the largest size",
            table(
                [
                    ("shape", lambda s: s),
                    ("before ms/step", lambda s: f"{before.steady(s, STEADY):.3f}"),
                    ("after ms/step", lambda s: f"{after.steady(s, STEADY):.3f}"),
                    ("after/before", lambda s: f"{_change(versions, s, STEADY):.3f}x"),
                    ("CPU after/before", lambda s: f"{_change(versions, s, STEADY_CPU):.3f}x"),
                    ("largest size after/before", lambda s: f"{_largest(versions, s):.3f}x"),
                    ("best before", lambda s: f"{before.largest(s, best=True):.3f}"),
                    ("best after", lambda s: f"{after.largest(s, best=True):.3f}"),
                    ("best after/before", lambda s: f"{_largest(versions, s, True):.3f}x"),
                    ("before/floor", lambda s: f"{before.steady(s, 'ratio'):.2f}x"),
                    ("after/floor", lambda s: f"{after.steady(s, 'ratio'):.2f}x"),
                ],
                shapes,
            ),
        ]
    return "\n".join(out)


STEADY, STEADY_CPU = "engine_steady_ms_per_step", "engine_steady_cpu_ms_per_step"
"""The keys of bench/run.py's steady rows compared."""


def _largest(versions: list[Version], shape: str, best: bool = False) -> float:
    before, after = versions
    return after.largest(shape, best) / before.largest(shape, best)


def _change(versions: list[Version], shape: str, key: str) -> float:
    before, after = versions
    return after.steady(shape, key) / before.steady(shape, key)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add = parser.add_argument
    add("--lines", type=ints, default=[10_000, 100_000], help="lines the runner prints")
    add("--repeat", type=int, default=3, help="runs of each measurement; medians are shown")
    add("--dispatcher", default="direct", help="ENGINE_DISPATCHER of the printing runs")
    add("--log-limit", type=int, help="ENGINE_LOG_LIMIT of the printing runs (default: unset)")
    add("--before", help="the commit before step logs (default: found from git history)")
    add("--after", default="HEAD", help="the commit to compare with it")
    add("--steps", type=ints, default=[5000], help="bench/run.py --steps")
    add("--rounds", type=int, default=5, help="bench/run.py runs of each version")
    add("--skip", choices=["printing", "overhead"], action="append", default=[])
    add("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    started = time.perf_counter()
    env = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "commit": git("rev-parse", "HEAD"),
        "dispatcher": args.dispatcher,
        "log_limit": args.log_limit,
        "repeat": args.repeat,
        "steps": args.steps,
        "rounds": args.rounds,
    }
    cases = printing(args) if "printing" not in args.skip else []
    versions = overhead(args) if "overhead" not in args.skip else []
    env["seconds"] = time.perf_counter() - started
    print(report(env, cases, versions))
    print(f"\n(benchmark took {env['seconds']:.0f} s; load average now {os.getloadavg()[0]:.1f})")
    if args.json:
        results = {
            "environment": env,
            "printing": [c.as_json() for c in cases],
            "overhead": [{"label": v.label, "commit": v.commit, "runs": v.runs} for v in versions],
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
