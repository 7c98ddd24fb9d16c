"""`engine run` and `engine resume` exit 0 only when the instance succeeded, whatever a runner
does to its process, under either in-process dispatcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = str(Path(sys.executable).with_name("engine"))

RUNNERS = """
import os, signal
from pathlib import Path
from engine import job_handler

@job_handler("bail")
def bail(inputs, ctx):
    if not Path("fixed").exists():
        os._exit(0)
    return "fine"

@job_handler("crash")
def crash(inputs, ctx):
    if not Path("fixed").exists():
        os.kill(os.getpid(), signal.SIGSEGV)
    return "fine"
"""


def _engine(cwd: Path, *args: str, dispatcher: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENGINE_DISPATCHER": dispatcher}
    return subprocess.run(
        [ENGINE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("dispatcher", "runner", "error"),
    [
        ("direct", "bail", "SystemExit: os._exit(0) called by the runner"),
        ("process", "bail", "worker process exited with code 0"),
        ("process", "crash", "worker process exited with code -11 (killed by SIGSEGV)"),
    ],
)
def test_a_runner_ending_its_process_fails_the_run_and_resume_finishes_it(
    tmp_path, dispatcher, runner, error
):
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "bad.py").write_text(RUNNERS)
    (tmp_path / "bad.yaml").write_text(f"name: bad\nsteps:\n  - {{id: a, runner: {runner}}}\n")
    ran = _engine(tmp_path, "run", "bad.yaml", "--json", dispatcher=dispatcher)
    assert ran.returncode == 1, ran.stderr
    doc = json.loads(ran.stdout)
    assert doc["status"] == "failed"
    assert doc["steps"][0]["error"].startswith(error)
    assert "Traceback" not in ran.stderr

    (tmp_path / "fixed").touch()
    resumed = _engine(tmp_path, "resume", str(doc["id"]), "--json", dispatcher=dispatcher)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"
