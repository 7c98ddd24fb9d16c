"""A mapped step under a hostile user: keys and errors that look like markup or carry control
characters, and its process stalled past its lease while items run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ENGINE = str(Path(sys.executable).parent / "engine")
KEYS = ["[/bold]", "[red]x[/red]", ":smile:", "plain"]

RUNNER = """
import os, time
from engine import job_handler

@job_handler("gated_item")
def gated_item(inputs, ctx):
    os.write(2, f"start {ctx.item_index}\\n".encode())  # raw: not caught into the step's log
    with open("calls.txt", "a") as f:
        f.write(f"{ctx.item_index}\\n")
    while not os.path.exists("open"):
        time.sleep(0.02)
    if ctx.item_key == "plain" and ctx.attempt == 1:
        raise RuntimeError("[/bold] \\x1b[31m closes nothing")
    return ctx.item_key
"""

DEFINITION = f"""
name: hostile
defaults: {{retry: {{maxAttempts: 2}}}}
steps:
  - id: fan
    runner: gated_item
    map: {{items: {json.dumps(KEYS)}, key: "{{{{ item }}}}", concurrency: 2}}
"""


def engine(cwd: Path, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENGINE_LEASE_SECONDS": "2"}
    return subprocess.run(
        [ENGINE, *args, "--db", db], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_map_stalled_past_its_lease_is_finished_once_elsewhere_and_its_keys_print_as_text(
    tmp_path,
):
    db = f"sqlite:///{tmp_path / 'engine.db'}"
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "gated.py").write_text(RUNNER)
    (tmp_path / "hostile.yaml").write_text(DEFINITION)
    env = {**os.environ, "ENGINE_LEASE_SECONDS": "2"}
    stalled = subprocess.Popen(
        [ENGINE, "run", "hostile.yaml", "--db", db],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert stalled.stderr is not None
    try:
        while (line := stalled.stderr.readline()).strip() != "start 1":
            assert line, "the run ended before its items started"
        os.kill(stalled.pid, signal.SIGSTOP)

        def runs() -> list[dict]:
            return json.loads(engine(tmp_path, db, "runs", "list", "--json").stdout)

        wait_for(lambda: runs()[0]["abandoned"], "the stalled run's lease to expire")
        (tmp_path / "open").touch()
        instance_id = str(runs()[0]["id"])
        resumed = engine(tmp_path, db, "resume", instance_id, "--json")
        assert resumed.returncode == 0, resumed.stderr
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    _, stderr = stalled.communicate(timeout=60)
    assert stalled.returncode != 0 and "lost its lease" in stderr, stderr
    assert "Traceback" not in stderr, stderr

    final = json.loads(engine(tmp_path, db, "runs", "show", instance_id, "--json").stdout)
    assert final["status"] == "succeeded", "the woken process must not overwrite the outcome"
    fan = [s for s in final["steps"] if s["item"] is None]
    assert fan[-1]["status"] == "succeeded" and fan[-1]["result"] == KEYS
    succeeded = Counter(
        s["item"] for s in final["steps"] if s["item"] and s["status"] == "succeeded"
    )
    assert succeeded == Counter(KEYS), "each item succeeds exactly once"
    assert not [s for s in final["steps"] if s["status"] == "running"]
    failed = next(s for s in final["steps"] if s["item"] == "plain" and s["status"] == "failed")
    assert failed["error"].startswith("RuntimeError: [/bold] \x1b[31m closes nothing")

    shown = engine(tmp_path, db, "runs", "show", instance_id, "--items")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown
    for key in KEYS:
        assert f"fan[{key}]" in shown.stdout, shown.stdout
    assert "\x1b" not in shown.stdout and "\\x1b[31m" in shown.stdout
