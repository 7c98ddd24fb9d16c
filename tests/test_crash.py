"""Crash safety with real processes: `engine run` killed with SIGKILL at many points, then resumed.

Every time, the instance ends succeeded; a step recorded as succeeded before the kill never runs
again; every step has exactly one succeeded attempt, and attempt numbers have no duplicates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ENGINE = str(Path(sys.executable).parent / "engine")
STEPS = ["s0", "s1", "s2", "s3", "s4"]

RUNNER = """
import os, time
from engine import job_handler

@job_handler("work")
def work(inputs, ctx):
    os.write(2, f"start {ctx.step_id}\\n".encode())  # raw: not caught into the step's log
    with open("calls.txt", "a") as f:
        f.write(ctx.step_id + "\\n")
    time.sleep(0.05)
    return {"step": ctx.step_id}
"""

KILL_POINTS = [(k, delay) for k in range(4) for delay in (0.0, 0.03, 0.07)]
"""(the step whose start is awaited, then seconds until the kill): inside a step, between its
start and end rows, and between steps."""


def _engine(cwd: Path, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENGINE_LEASE_SECONDS": "1"}
    return subprocess.run(
        [ENGINE, *args, "--db", db], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(("after_start", "delay"), KILL_POINTS)
def test_a_run_killed_anywhere_is_resumed_to_success(db_url, tmp_path, after_start, delay):
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "work.py").write_text(RUNNER)
    steps = "".join(f"  - {{id: {s}, runner: work}}\n" for s in STEPS)
    (tmp_path / "chain.yaml").write_text("name: chain\nsteps:\n" + steps)
    env = {**os.environ, "ENGINE_LEASE_SECONDS": "1"}
    run = subprocess.Popen(
        [ENGINE, "run", "chain.yaml", "--db", db_url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stderr is not None
    while (line := run.stderr.readline()).strip() != f"start s{after_start}":
        assert line, "the run ended before the step to kill it in"
    time.sleep(delay)
    os.kill(run.pid, signal.SIGKILL)
    run.wait(10)

    (instance,) = json.loads(_engine(tmp_path, db_url, "runs", "list", "--json").stdout)
    before = json.loads(
        _engine(tmp_path, db_url, "runs", "show", str(instance["id"]), "--json").stdout
    )
    done_before = {s["step"] for s in before["steps"] if s["status"] == "succeeded"}
    calls = tmp_path / "calls.txt"  # not there yet when the kill came before the first write
    calls_before = len(calls.read_text().split()) if calls.exists() else 0

    for _ in range(20):  # wait out the dead process's lease, then resume
        resumed = _engine(tmp_path, db_url, "resume", str(instance["id"]), "--json")
        if resumed.returncode != 2:
            break
        time.sleep(0.3)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout)
    assert final["status"] == "succeeded"

    succeeded = Counter(s["step"] for s in final["steps"] if s["status"] == "succeeded")
    assert succeeded == Counter(STEPS), "each step succeeds exactly once"
    attempts = [(s["step"], s["attempt"]) for s in final["steps"]]
    assert len(attempts) == len(set(attempts)), "no attempt row twice"
    assert not any(s["status"] == "running" for s in final["steps"])
    calls_after = (tmp_path / "calls.txt").read_text().split()[calls_before:]
    assert not done_before & set(calls_after), "a step that had succeeded ran again"
