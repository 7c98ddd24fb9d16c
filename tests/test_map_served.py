"""A mapped step over HTTP, on a real `engine serve`: the instance JSON of its items, a resume
that runs again only the item that failed, and a replica finishing the map of a killed one."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from served import Server
from test_map_crash import (
    TALLY_RUNNERS,
    check_finished_once,
    in_flight_at_the_kill,
    succeeded_items,
    tally,
    wait,
)

RUNNERS = """
import os
from pathlib import Path
from engine import job_handler

def ran(ctx):
    name = ctx.step_id if ctx.item_key is None else f"{ctx.step_id}[{ctx.item_key}]"
    fd = os.open("ran.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{name}\\n".encode())
    finally:
        os.close(fd)

@job_handler("regions")
def regions(inputs, ctx):
    ran(ctx)
    return [{"name": "north", "orders": 3}, {"name": "south", "orders": 5}, {"name": "east"}]

@job_handler("report")
def report(inputs, ctx):
    ran(ctx)
    if Path(f"broken-{ctx.item_key}").exists():
        raise RuntimeError(f"{ctx.item_key} is broken")
    return {"region": inputs["name"], "orders": inputs["orders"], "index": ctx.item_index}

@job_handler("total")
def total(inputs, ctx):
    ran(ctx)
    return sum(r["orders"] for r in inputs["reports"])
"""

REGIONS = """
name: regions
steps:
  - {id: list, runner: regions}
  - id: report
    runner: report
    map: {items: "{{ steps.list.result }}", as: region, key: "{{ region.name }}"}
    inputs: {name: "{{ region.name }}", orders: "{{ region.orders | default(0) }}"}
  - {id: done, runner: total, inputs: {reports: "{{ steps.report.result }}"}}
"""


TALLY_ITEMS = 300


@pytest.fixture
def serve(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Server]]:
    """`serve(env=...)` starts `engine serve` on the definitions `regions` and `tally`; every
    server still running is killed at the end."""
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "jobs.py").write_text(RUNNERS)
    (tmp_path / "runners" / "tally.py").write_text(TALLY_RUNNERS)
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "regions.yaml").write_text(REGIONS)
    (tmp_path / "defs" / "tally.yaml").write_text(tally(TALLY_ITEMS))
    servers: list[Server] = []

    def start(env: dict[str, str] | None = None) -> Server:
        servers.append(Server(tmp_path, db_url, env=env))
        return servers[-1]

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def _rows(doc: dict) -> list[tuple]:
    return [(s["step"], s["item"], s["attempt"], s["status"]) for s in doc["steps"]]


def test_instance_json_lists_items_and_a_resume_runs_only_the_failed_item(serve, tmp_path):
    server = serve()
    (tmp_path / "broken-south").touch()
    accepted = server.client.post("/batch/run", json={"definition": "regions"})
    assert accepted.status_code == 202, accepted.text
    instance_id = accepted.json()["instance_id"]

    doc = server.wait(instance_id, "succeeded", "failed")
    assert doc["status"] == "failed"
    assert all("item" in s for s in doc["steps"])
    assert _rows(doc) == [
        ("list", None, 1, "succeeded"),
        ("report", None, 1, "failed"),
        ("report", "north", 1, "succeeded"),
        ("report", "south", 1, "failed"),
        ("report", "east", 1, "succeeded"),
        ("done", None, 1, "skipped"),
    ]
    by_item = {s["item"]: s for s in doc["steps"] if s["step"] == "report"}
    assert by_item[None]["error"] == "1 of 3 items failed: 'south'"
    assert by_item[None]["result"] is None
    assert by_item["south"]["error"] == "RuntimeError: south is broken", "no traceback over HTTP"
    assert by_item["north"]["result"] == {"region": "north", "orders": 3, "index": 0}

    (tmp_path / "broken-south").unlink()
    resumed = server.client.post(f"/batch/instances/{instance_id}/resume")
    assert resumed.status_code == 202, resumed.text
    doc = server.wait(instance_id, "succeeded", "failed")
    assert doc["status"] == "succeeded", doc
    assert _rows(doc)[6:] == [
        ("report", None, 2, "succeeded"),
        ("report", "south", 2, "succeeded"),
        ("done", None, 2, "succeeded"),
    ]
    own = doc["steps"][6]
    assert own["result"] == [
        {"region": "north", "orders": 3, "index": 0},
        {"region": "south", "orders": 5, "index": 1},
        {"region": "east", "orders": 0, "index": 2},
    ]
    assert doc["steps"][-1]["result"] == 8
    ran = Counter((tmp_path / "ran.txt").read_text().split())
    assert ran == Counter(
        {"list": 1, "report[north]": 1, "report[south]": 2, "report[east]": 1, "done": 1}
    ), "the resume ran the failed item and what followed, nothing that had succeeded"
    assert server.terminate() == 0


def test_a_replica_finishes_the_map_of_a_killed_one_running_no_succeeded_item_again(
    serve, store, tmp_path
):
    env = {"ENGINE_LEASE_SECONDS": "2"}
    doomed = serve(env)
    accepted = doomed.client.post("/batch/run", json={"definition": "tally"})
    assert accepted.status_code == 202, accepted.text
    instance_id = accepted.json()["instance_id"]
    kill_after = TALLY_ITEMS // 3
    wait(lambda: succeeded_items(store, instance_id) >= kill_after, "items to succeed")
    os.kill(doomed.proc.pid, signal.SIGKILL)
    doomed.proc.wait(10)
    in_flight = in_flight_at_the_kill(store, instance_id, TALLY_ITEMS, kill_after)

    survivor = serve(env)
    assert survivor.wait(instance_id, "succeeded", "failed")["status"] == "succeeded"
    check_finished_once(store, instance_id, TALLY_ITEMS, [in_flight], tmp_path / "ran.txt")
    assert survivor.terminate() == 0
