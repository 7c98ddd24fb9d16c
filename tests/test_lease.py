"""Leases: a killed process leaves an instance the engine itself sees as abandoned; a live one
never looks abandoned, however long its steps take."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.service import BatchService

ENGINE = str(Path(sys.executable).parent / "engine")

RUNNER = """
import os, time
from engine import job_handler

@job_handler("hang")
def hang(inputs, ctx):
    os.write(1, b"started\\n")  # a raw write, which the engine leaves alone: the test's signal
    time.sleep(60)
"""


def test_a_killed_run_is_shown_abandoned_once_its_lease_expires(db_url, tmp_path):
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "hang.py").write_text(RUNNER)
    (tmp_path / "hang.yaml").write_text("name: hang\nsteps:\n  - {id: a, runner: hang}\n")
    env = {**os.environ, "ENGINE_LEASE_SECONDS": "1"}
    proc = subprocess.Popen(
        [ENGINE, "run", "hang.yaml", "--db", db_url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"

    def runs() -> list[dict]:
        listed = subprocess.run(
            [ENGINE, "runs", "list", "--json", "--db", db_url],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=True,
        )
        return json.loads(listed.stdout)

    assert [(r["status"], r["abandoned"]) for r in runs()] == [("running", False)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 10
    while not runs()[0]["abandoned"] and time.monotonic() < deadline:
        time.sleep(0.2)
    (instance,) = runs()
    assert (instance["status"], instance["abandoned"]) == ("running", True)
    shown = subprocess.run(
        [ENGINE, "runs", "show", str(instance["id"]), "--db", db_url],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert "running (abandoned)" in shown.stdout


def test_a_live_run_renews_its_lease_through_a_long_step(sqlite_store, registry, monkeypatch):
    monkeypatch.setenv("ENGINE_LEASE_SECONDS", "0.6")  # renewed every 0.2 s: a loaded machine
    # may stall a thread for a tenth of a second, not for the rest of a lease
    started = threading.Event()
    finish = threading.Event()

    @registry.handler("long")
    def long_step(inputs, ctx):
        started.set()
        finish.wait(10)
        return "done"

    seen: list[bool] = []

    def watch() -> None:
        started.wait(10)
        for _ in range(24):  # 2.4 s: four leases
            (instance,) = sqlite_store.list_instances()
            seen.append(instance.abandoned)
            time.sleep(0.1)
        finish.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    view = BatchService(sqlite_store, DirectDispatcher(registry)).run(
        BatchService.prepare(
            load_text("name: long\nsteps:\n  - {id: a, runner: long}\n", "long.yaml", registry), {}
        )
    )
    watcher.join()
    assert view.status == "succeeded" and not view.abandoned
    assert len(seen) == 24 and not any(seen), seen
