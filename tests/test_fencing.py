"""Fencing with real processes: a process that stalls past its lease (SIGSTOP; in life a VM
pause, a laptop sleep, a database outage) and wakes after another process resumed its instance
writes nothing more and exits non-zero. And a live process never loses its lease to slow work of
its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import force

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.errors import LeaseLost, ResumeRefused
from engine.lease import Lease
from engine.service import BatchService
from engine.status import InstanceStatus
from engine.store import Store

ENGINE = str(Path(sys.executable).parent / "engine")

RUNNER = """
import os, sys, time
from engine import job_handler

@job_handler("gated")
def gated(inputs, ctx):
    os.write(2, f"start {ctx.step_id}\\n".encode())  # raw: not caught into the step's log
    with open("calls.txt", "a") as f:
        f.write(ctx.step_id + "\\n")
    while not os.path.exists("open"):
        time.sleep(0.02)
    return {"step": ctx.step_id}
"""


def _engine(cwd: Path, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENGINE_LEASE_SECONDS": "2"}
    return subprocess.run(
        [ENGINE, *args, "--db", db], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_stalled_process_woken_after_a_resume_writes_nothing_and_exits_non_zero(db_url, tmp_path):
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "gated.py").write_text(RUNNER)
    (tmp_path / "two.yaml").write_text(
        "name: two\nsteps:\n  - {id: a, runner: gated}\n  - {id: b, runner: gated}\n"
    )
    env = {**os.environ, "ENGINE_LEASE_SECONDS": "2"}
    stalled = subprocess.Popen(
        [ENGINE, "run", "two.yaml", "--db", db_url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert stalled.stderr is not None
    try:
        while (line := stalled.stderr.readline()).strip() != "start a":
            assert line, "the run ended before its first step started"
        os.kill(stalled.pid, signal.SIGSTOP)

        def runs() -> list[dict]:
            return json.loads(_engine(tmp_path, db_url, "runs", "list", "--json").stdout)

        _wait_for(lambda: runs()[0]["abandoned"], "the stalled run's lease to expire")
        (tmp_path / "open").touch()
        instance_id = str(runs()[0]["id"])
        resumed = _engine(tmp_path, db_url, "resume", instance_id, "--json")
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["status"] == "succeeded"
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    _, stderr = stalled.communicate(timeout=60)

    assert stalled.returncode != 0, "the stalled process must not report success"
    assert "lost its lease" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    final = json.loads(_engine(tmp_path, db_url, "runs", "show", instance_id, "--json").stdout)
    assert final["status"] == "succeeded", "the woken process must not overwrite the outcome"
    succeeded = Counter(s["step"] for s in final["steps"] if s["status"] == "succeeded")
    assert succeeded == Counter(["a", "b"]), "each step succeeds exactly once"
    first = next(s for s in final["steps"] if (s["step"], s["attempt"]) == ("a", 1))
    assert first["status"] == "failed" and "abandoned" in first["error"]
    assert Counter((tmp_path / "calls.txt").read_text().split())["b"] == 1, "b ran once"


def test_an_executor_blocked_in_its_listener_keeps_its_lease(registry, db_url, monkeypatch):
    """The lease is renewed on a thread of its own: a listener blocked for several leases
    (a progress display on a full pipe) does not make the instance claimable elsewhere."""
    monkeypatch.setenv("ENGINE_LEASE_SECONDS", "0.6")
    registry.add("noop", lambda inputs, ctx: {"ok": True})
    loaded = load_text("name: slow\nsteps:\n  - {id: a, runner: noop}\n", "slow.yaml", registry)
    store = Store(db_url)
    other = Store(db_url)
    service = BatchService(store, DirectDispatcher(registry))
    refusals: list[str] = []
    blocked = threading.Event()

    def listener(event) -> None:
        if blocked.is_set():
            return
        blocked.set()
        time.sleep(2.0)  # several leases long: the claims below run meanwhile
        if len(refusals) < 3:
            refusals.append("listener woke before the claims ran")

    def claim_repeatedly(instance_id: int) -> None:
        blocked.wait(10)
        for _ in range(3):
            time.sleep(0.5)
            try:
                other.leases.take(instance_id, "intruder", Lease(other, instance_id).expiry())
            except ResumeRefused as refused:
                refusals.append(str(refused))
            else:
                refusals.append("CLAIMED")

    try:
        prepared = service.prepare(loaded, {})
        instance_id = service.start(prepared)
        claimer = threading.Thread(target=claim_repeatedly, args=(instance_id,))
        claimer.start()
        view = service.execute(prepared, instance_id, listener)
        claimer.join(10)
    finally:
        store.close()
        other.close()
    assert view.status == "succeeded"
    assert len(refusals) == 3 and all("live process" in r for r in refusals), refusals


@pytest.mark.parametrize("status", [InstanceStatus.succeeded, InstanceStatus.failed])
def test_a_process_that_lost_its_lease_cannot_renew_it_or_finish_the_instance(
    registry, store, status
):
    """The final write and the renewal are fenced like the attempt writes."""
    loaded = load_text("name: f\nsteps:\n  - {id: a, runner: x}\n", "f.yaml")
    service = BatchService(store, DirectDispatcher(registry))
    instance_id = service.start(service.prepare(loaded, {}))
    store.leases.start(instance_id, "first", Lease(store, instance_id).expiry())
    force(store, instance_id, lease_owner="second")
    with pytest.raises(LeaseLost, match="process second runs it now"):
        store.leases.finish(instance_id, "first", status, None)
    with pytest.raises(LeaseLost, match=r"\(first\) lost its lease"):
        store.leases.renew(instance_id, "first", Lease(store, instance_id).expiry())
    assert store.get_instance(instance_id).status == "running"
