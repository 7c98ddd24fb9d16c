"""Two `engine serve` replicas on one database: one is killed with SIGKILL while it runs and
queues instances; the other adopts every one of them and finishes it, running nothing twice."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

from served import Server

RUNNER = """
import os, time
from engine import job_handler

@job_handler("step")
def step(inputs, ctx):
    fd = os.open("calls.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{ctx.instance_id}:{ctx.step_id}\\n".encode())
    os.close(fd)
    time.sleep(0.3)
    return {"step": ctx.step_id}
"""

CHAIN = "name: chain\nsteps:\n" + "".join(f"  - {{id: s{n}, runner: step}}\n" for n in range(3))


def _calls(cwd: Path) -> list[str]:
    path = cwd / "calls.txt"
    return path.read_text().split() if path.exists() else []


def test_a_killed_replicas_instances_are_finished_by_the_other(db_url, tmp_path):
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "step.py").write_text(RUNNER)
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "chain.yaml").write_text(CHAIN)
    env = {"ENGINE_LEASE_SECONDS": "2"}
    doomed = Server(tmp_path, db_url, "--max-instances", "2", env=env)
    survivor = Server(tmp_path, db_url, "--max-instances", "2", env=env)
    try:
        ids = [
            doomed.client.post("/batch/run", json={"definition": "chain"}).json()["instance_id"]
            for _ in range(6)
        ]
        deadline = time.monotonic() + 30
        while len(_calls(tmp_path)) < 3:  # two running, four waiting in the doomed queue
            assert time.monotonic() < deadline, "the doomed replica started nothing"
            time.sleep(0.02)
        os.kill(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait(10)
        killed_at = time.monotonic()
        before = {i: survivor.client.get(f"/batch/instances/{i}").json() for i in ids}
        done_before = {
            f"{i}:{s['step']}"
            for i, doc in before.items()
            for s in doc["steps"]
            if s["status"] == "succeeded"
        }
        calls_before = len(_calls(tmp_path))
        assert any(doc["status"] == "pending" for doc in before.values())
        assert any(doc["status"] == "running" for doc in before.values())

        finals = [survivor.wait(i, "succeeded", "failed", timeout=90) for i in ids]
        recovered_in = time.monotonic() - killed_at
    finally:
        survivor.terminate()
    assert [f["status"] for f in finals] == ["succeeded"] * 6, finals
    for final in finals:
        succeeded = Counter(s["step"] for s in final["steps"] if s["status"] == "succeeded")
        assert succeeded == Counter(["s0", "s1", "s2"]), final
    calls_after = _calls(tmp_path)[calls_before:]
    assert not done_before & set(calls_after), "a step that had succeeded ran again"
    cut_short = set(_calls(tmp_path)[:calls_before]) - done_before
    for call, times in Counter(_calls(tmp_path)).items():
        assert times == 1 or (times == 2 and call in cut_short), f"{call} ran {times} times"
    print(f"all 6 instances finished {recovered_in:.1f}s after the kill (lease 2s)")
