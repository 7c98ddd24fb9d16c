"""`engine resume`: only what did not succeed runs again, in the same instance, once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import force

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.errors import ResumeRefused
from engine.service import BatchService
from engine.store.types import utcnow

ENGINE = str(Path(sys.executable).parent / "engine")

CHAIN = """
name: chain
params:
  n: {type: integer, default: 1}
steps:
  - {id: a, runner: count}
  - {id: b, runner: flaky, inputs: {n: "{{ params.n }}", from_a: "{{ steps.a.result }}"}}
  - {id: c, runner: count}
"""


def test_a_failed_instance_resumes_only_what_did_not_succeed(store, registry):
    calls: list[str] = []
    fail = {"b": True}

    @registry.handler("count")
    def count(inputs, ctx):
        calls.append(ctx.step_id)
        return {"step": ctx.step_id}

    @registry.handler("flaky")
    def flaky(inputs, ctx):
        calls.append(ctx.step_id)
        if fail["b"]:
            raise RuntimeError("not yet")
        return {"n": inputs["n"], "from_a": inputs["from_a"], "attempt": ctx.attempt}

    service = BatchService(store, DirectDispatcher(registry))
    first = service.run(BatchService.prepare(load_text(CHAIN, "chain.yaml", registry), {"n": 7}))
    assert first.status == "failed" and calls == ["a", "b"]

    fail["b"] = False
    resumed = service.resume(first.id, registry)
    assert resumed.id == first.id and resumed.status == "succeeded"
    assert calls == ["a", "b", "b", "c"], "a succeeded before and must not run again"
    rows = [(s.step, s.attempt, s.status) for s in resumed.steps]
    assert rows == [
        ("a", 1, "succeeded"),
        ("b", 1, "failed"),
        ("c", 1, "skipped"),
        ("b", 2, "succeeded"),
        ("c", 2, "succeeded"),
    ]
    b = resumed.steps[3]
    assert b.result == {"n": 7, "from_a": {"step": "a"}, "attempt": 2}


def test_a_succeeded_instance_or_a_live_one_is_not_resumed(store, registry):
    registry.add("count", lambda inputs, ctx: 1)
    registry.add("flaky", lambda inputs, ctx: 2)
    service = BatchService(store, DirectDispatcher(registry))
    done = service.run(BatchService.prepare(load_text(CHAIN, "chain.yaml", registry), {}))
    with pytest.raises(ResumeRefused, match="succeeded: nothing to resume"):
        service.resume(done.id, registry)

    force(store, done.id, status="running", lease_expires_at=utcnow().replace(year=2100))
    with pytest.raises(ResumeRefused, match="live process"):
        service.resume(done.id, registry)


def test_of_two_simultaneous_claims_exactly_one_wins(store, registry):
    registry.add("count", lambda inputs, ctx: 1)
    registry.add("flaky", lambda inputs, ctx: 1 / 0)
    failed = BatchService(store, DirectDispatcher(registry)).run(
        BatchService.prepare(load_text(CHAIN, "chain.yaml", registry), {})
    )
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def claim(i: int) -> None:
        barrier.wait()
        try:
            store.leases.take(failed.id, f"claimant-{i}", utcnow().replace(year=2100))
            outcomes.append("won")
        except ResumeRefused:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]


# -- through the CLI, with real processes ---------------------------------------------------

RUNNERS = """
import os, time
from pathlib import Path
from engine import job_handler

def note(ctx):
    with open("calls.txt", "a") as f:
        f.write(ctx.step_id + "\\n")

@job_handler("count")
def count(inputs, ctx):
    note(ctx)
    return {"step": ctx.step_id, "label": inputs.get("label")}

@job_handler("gate")
def gate(inputs, ctx):
    note(ctx)
    if Path("hold").exists():  # stands still until the test kills the process
        os.write(1, b"gate\\n")  # a raw write, which the engine leaves alone: the test's signal
        time.sleep(60)
    if not Path("open").exists():
        raise RuntimeError("gate closed")
    time.sleep(float(inputs.get("linger", 0)))
    return "passed"
"""

PIPELINE = """
name: pipeline
steps:
  - {id: first, runner: count, inputs: {label: old}}
  - {id: gate, runner: gate, inputs: {linger: 1.5}}
  - {id: last, runner: count, inputs: {label: old}}
"""


def _project(tmp_path: Path) -> None:
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "jobs.py").write_text(RUNNERS)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)


def _engine(tmp_path: Path, db: str, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENGINE, *args, "--db", db], cwd=tmp_path, capture_output=True, text=True, **kw
    )


def test_resume_uses_the_version_it_started_with_and_continues_attempts(db_url, tmp_path):
    _project(tmp_path)
    first = _engine(tmp_path, db_url, "run", "pipeline.yaml", "--json")
    assert first.returncode == 1, first.stderr
    instance = json.loads(first.stdout)

    (tmp_path / "pipeline.yaml").write_text(PIPELINE.replace("old", "new"))  # edited since
    (tmp_path / "open").touch()
    resumed = _engine(tmp_path, db_url, "resume", str(instance["id"]), "--json")
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["id"] == instance["id"] and doc["version"] == instance["version"]
    steps = [(s["step"], s["attempt"], s["status"]) for s in doc["steps"]]
    assert steps == [
        ("first", 1, "succeeded"),
        ("gate", 1, "failed"),
        ("last", 1, "skipped"),
        ("gate", 2, "succeeded"),
        ("last", 2, "succeeded"),
    ]
    assert doc["steps"][-1]["result"]["label"] == "old"
    assert (tmp_path / "calls.txt").read_text().split() == ["first", "gate", "gate", "last"]

    again = _engine(tmp_path, db_url, "resume", str(instance["id"]))
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def test_two_resumes_at_once_one_runs_the_other_is_refused(db_url, tmp_path):
    _project(tmp_path)
    first = _engine(tmp_path, db_url, "run", "pipeline.yaml", "--json")
    instance_id = str(json.loads(first.stdout)["id"])
    (tmp_path / "open").touch()
    procs = [
        subprocess.Popen(
            [ENGINE, "resume", instance_id, "--db", db_url],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(60), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "cannot be resumed twice" in refused
    assert (tmp_path / "calls.txt").read_text().split() == ["first", "gate", "gate", "last"]


def test_a_run_killed_mid_step_is_resumed_to_success(db_url, tmp_path):
    _project(tmp_path)
    (tmp_path / "hold").touch()
    env = {**os.environ, "ENGINE_LEASE_SECONDS": "8"}
    proc = subprocess.Popen(
        [ENGINE, "run", "pipeline.yaml", "--db", db_url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "gate"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    (tmp_path / "hold").unlink()
    (tmp_path / "open").touch()

    listed = json.loads(_engine(tmp_path, db_url, "runs", "list", "--json", env=env).stdout)
    instance_id = str(listed[0]["id"])
    early = _engine(tmp_path, db_url, "resume", instance_id, env=env)
    assert early.returncode == 2 and "live process" in early.stderr  # its lease still runs
    while not json.loads(_engine(tmp_path, db_url, "runs", "list", "--json").stdout)[0][
        "abandoned"
    ]:
        time.sleep(0.2)
    resumed = _engine(tmp_path, db_url, "resume", instance_id, "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    steps = [(s["step"], s["attempt"], s["status"]) for s in doc["steps"]]
    assert steps == [
        ("first", 1, "succeeded"),
        ("gate", 1, "failed"),
        ("gate", 2, "succeeded"),
        ("last", 1, "succeeded"),
    ]
    assert "abandoned" in doc["steps"][1]["error"]
    assert (tmp_path / "calls.txt").read_text().split() == ["first", "gate", "gate", "last"]
