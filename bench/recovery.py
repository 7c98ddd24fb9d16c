"""Recovery time: how long after `kill -9` of one of two `engine serve` replicas the other adopts
its running instance, and when that instance has succeeded.

    .venv/bin/python bench/recovery.py [--lease 30] [--lease 5]

Each lease runs in a fresh folder and SQLite file: replica A starts a 2-step instance (2 s, then
1 s), is killed with SIGKILL 0.5 s into it, and B's log says when it resumed it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from served import Server  # the test suite's `engine serve` subprocess

RUNNER = """
from engine import job_handler

@job_handler("slow")
def slow(inputs, ctx):
    ctx.cancel_event.wait(inputs["seconds"])
"""
SLOW = """name: slow
steps:
  - {id: a, runner: slow, inputs: {seconds: 2}}
  - {id: b, runner: slow, inputs: {seconds: 1}}
"""


def measure(lease: float) -> tuple[float, float]:
    """(seconds until adopted, seconds until succeeded), both from the kill."""
    with tempfile.TemporaryDirectory(prefix="engine-recovery-") as tmp:
        folder = Path(tmp)
        (folder / "runners").mkdir()
        (folder / "runners" / "slow.py").write_text(RUNNER)
        (folder / "defs").mkdir()
        (folder / "defs" / "slow.yaml").write_text(SLOW)
        db, env = f"sqlite:///{folder / 'engine.db'}", {"ENGINE_LEASE_SECONDS": str(lease)}
        doomed, survivor = Server(folder, db, env=env), Server(folder, db, env=env)
        try:
            run = doomed.client.post("/batch/run", json={"definition": "slow"})
            instance_id = run.json()["instance_id"]
            doomed.wait(instance_id, "running")
            time.sleep(0.5)
            os.kill(doomed.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            while "recovery: resuming instance" not in survivor.lines.get(timeout=lease + 30):
                pass
            adopted = time.monotonic() - killed
            survivor.wait(instance_id, "succeeded", timeout=lease + 30)
            return adopted, time.monotonic() - killed
        finally:
            survivor.terminate()
            doomed.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--lease", type=float, action="append")
    for lease in parser.parse_args().lease or [30.0, 5.0]:
        adopted, done = measure(lease)
        print(
            f"ENGINE_LEASE_SECONDS={lease:g}: adopted {adopted:.1f} s after kill -9, "
            f"succeeded {done:.1f} s after (its remaining 3 s of steps included)"
        )


if __name__ == "__main__":
    main()
