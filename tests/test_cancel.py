"""`engine cancel ID`: a run in another process stops; one no process runs is cancelled here."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from conftest import force

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.service import BatchService
from engine.store.types import utcnow

ENGINE = str(Path(sys.executable).parent / "engine")

RUNNER = """
from pathlib import Path

from engine import job_handler

@job_handler("wait")
def wait(inputs, ctx):
    print("started", flush=True)
    if ctx.cancel_event.wait(60):
        Path("told").write_text("cancelled")
    return "late"

@job_handler("after")
def after(inputs, ctx):
    Path("after-ran").touch()
"""


def test_cancel_stops_a_run_in_another_process(db_url, tmp_path):
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "jobs.py").write_text(RUNNER)
    (tmp_path / "w.yaml").write_text(
        "name: w\nsteps:\n  - {id: a, runner: wait}\n  - {id: b, runner: after}\n"
    )
    run = subprocess.Popen(
        [ENGINE, "run", "w.yaml", "--db", db_url, "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stderr is not None
    for line in run.stderr:  # the runner's print, shown live among the progress lines
        if "a stdout: started" in line:
            break
    listed = subprocess.run(
        [ENGINE, "runs", "list", "--json", "--db", db_url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    instance_id = json.loads(listed.stdout)[0]["id"]

    cancel = subprocess.run(
        [ENGINE, "cancel", str(instance_id), "--db", db_url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert cancel.returncode == 0 and "cancel requested" in cancel.stderr
    out, err = run.communicate(timeout=30)
    assert run.returncode == 1, err
    doc = json.loads(out)
    assert (doc["status"], doc["error"]) == ("cancelled", "cancelled by engine cancel")
    assert [(s["step"], s["status"]) for s in doc["steps"]] == [("a", "cancelled")]
    assert (tmp_path / "told").read_text() == "cancelled"
    assert not (tmp_path / "after-ran").exists()

    again = subprocess.run(
        [ENGINE, "cancel", str(instance_id), "--db", db_url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and "already ended cancelled" in again.stderr
    unknown = subprocess.run(
        [ENGINE, "cancel", "999", "--db", db_url], cwd=tmp_path, capture_output=True, text=True
    )
    assert unknown.returncode == 1 and "no instance with id 999" in unknown.stderr


def test_an_abandoned_instance_is_cancelled_directly(store, registry):
    registry.add("noop", lambda inputs, ctx: None)
    view = BatchService(store, DirectDispatcher(registry)).run(
        BatchService.prepare(
            load_text("name: x\nsteps:\n  - {id: a, runner: noop}\n", "x.yaml", registry), {}
        )
    )
    force(store, view.id, status="running", lease_expires_at=utcnow() - timedelta(1))
    assert store.get_instance(view.id).abandoned
    assert store.leases.request_cancel(view.id) == f"instance {view.id} cancelled"
    after = store.get_instance(view.id)
    assert after.status == "cancelled" and not after.abandoned
