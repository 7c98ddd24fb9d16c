"""`engine run` stopped by SIGTERM or Ctrl-C: the instance ends cancelled, nothing is left
running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = str(Path(sys.executable).parent / "engine")

RUNNER = """
import os
from engine import job_handler

@job_handler("wait")
def wait(inputs, ctx):
    os.write(2, b"waiting\\n")  # a raw write, which the engine leaves alone: the test's signal
    ctx.cancel_event.wait(60)
    return {"cancelled": ctx.cancelled}

@job_handler("after")
def after(inputs, ctx):
    return "ran"
"""

DEFINITION = """
name: stoppable
steps:
  - {id: a, runner: wait}
  - {id: b, runner: after}
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_ends_cancelled_and_starts_nothing_more(tmp_path: Path, signum: int) -> None:
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "wait.py").write_text(RUNNER)
    (tmp_path / "stoppable.yaml").write_text(DEFINITION)
    db = f"sqlite:///{tmp_path / 'engine.db'}"
    proc = subprocess.Popen(
        [ENGINE, "run", "stoppable.yaml", "--db", db, "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    while (line := proc.stderr.readline()).strip() != "waiting":  # the runner is inside step a
        assert line, "the run ended before its step started"
    os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    instance = json.loads(out)
    assert instance["status"] == "cancelled"
    assert [(s["step"], s["status"]) for s in instance["steps"]] == [("a", "cancelled")]

    shown = subprocess.run(
        [ENGINE, "runs", "show", str(instance["id"]), "--db", db, "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)["status"] == "cancelled"
