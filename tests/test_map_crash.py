"""A mapped step of 10,000 items when its process is killed: `engine run` gets SIGKILL mid-map,
`engine resume` finishes it.

The runner notes every item it ran to its end in a file outside the database, so that the test
sees what ran, not only what was recorded: an item whose success was committed before the kill
never runs again; one in flight at the kill may have run (its success lost with the process), and
then runs once more, under the next attempt number. An item that had not started before the kill
runs once: its row is committed before it is handed to a runner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.store import Store

pytestmark = pytest.mark.timeout(180)

ENGINE = str(Path(sys.executable).parent / "engine")

TALLY_RUNNERS = """
import os
import time
from engine import job_handler

@job_handler("make")
def make(inputs, ctx):
    return [{"code": f"k{i:05d}", "n": i} for i in range(inputs["n"])]

@job_handler("tally")
def tally(inputs, ctx):
    time.sleep(0.002)  # the item's work
    # One write(2) on an O_APPEND file: the line is whole or absent, whenever the kill lands.
    fd = os.open("ran.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.item_key}\\n".encode())
    finally:
        os.close(fd)
    return {"key": ctx.item_key, "index": ctx.item_index, "n": inputs["x"]["n"]}
"""


def tally(items: int) -> str:
    """The definition `tally`: a step making `items` items, then `fan` mapped over them."""
    return f"""
name: tally
steps:
  - {{id: make, runner: make, inputs: {{n: {items}}}}}
  - id: fan
    runner: tally
    map:
      items: "{{{{ steps.make.result }}}}"
      as: item
      key: "{{{{ item.code }}}}"
      concurrency: 8
    inputs: {{x: "{{{{ item }}}}"}}
"""


def wait(condition: Callable[[], Any], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def succeeded_items(store: Store, instance_id: int) -> int:
    return store.item_counts(instance_id).get("fan", {}).get("succeeded", 0)


def in_flight_at_the_kill(store: Store, instance_id: int, items: int, at_least: int) -> set[str]:
    """The keys of the items left running by the killed process, having checked that the kill
    fell in the middle of the map: at least `at_least` items had succeeded, not all of them."""
    rows = [s for s in store.get_instance(instance_id).steps or [] if s.item is not None]
    by_status = Counter(s.status for s in rows)
    assert set(by_status) == {"succeeded", "running"}, by_status
    assert at_least <= by_status["succeeded"] < items, "the kill landed in the middle of the map"
    return {s.item for s in rows if s.status == "running" and s.item is not None}


def check_finished_once(
    store: Store, instance_id: int, items: int, in_flight: set[str], ran_txt: Path
) -> None:
    """The instance ended as if never killed: `fan` collected every item's result in item
    order, each item has one succeeded attempt, and only the items in flight at the kill ran
    again, under attempt 2 (`ran_txt`, the runner's `ran.txt`, counts the runs)."""
    keys = [f"k{i:05d}" for i in range(items)]
    view = store.get_instance(instance_id)
    assert view.status == "succeeded"
    steps = view.steps or []
    assert not [s for s in steps if s.status == "running"], "no attempt is left running"
    assert [(s.attempt, s.status) for s in steps if s.step == "make"] == [(1, "succeeded")]
    own = [s for s in steps if s.step == "fan" and s.item is None]
    assert [(s.attempt, s.status) for s in own] == [(1, "failed"), (2, "succeeded")]
    assert "abandoned" in (own[0].error or "")
    assert own[1].result == [{"key": k, "index": i, "n": i} for i, k in enumerate(keys)]

    rows = Counter((s.item, s.attempt, s.status) for s in steps if s.item is not None)
    expected = Counter(
        [(k, 1, "failed") for k in in_flight]
        + [(k, 2 if k in in_flight else 1, "succeeded") for k in keys]
    )
    assert rows == expected, "one succeeded attempt per key; in-flight keys continue at 2"

    ran = Counter(ran_txt.read_text().split("\n")[:-1])
    assert set(ran) == set(keys)
    again = {k: n for k, n in ran.items() if n != 1 and k not in in_flight}
    assert again == {}, "an item not in flight at the kill ran twice"
    assert max(ran[k] for k in in_flight) <= 2


def test_a_map_killed_midway_is_resumed_running_only_what_had_not_succeeded(store, tmp_path):
    items, kill_after = 10_000, 3_000
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "tally.py").write_text(TALLY_RUNNERS)
    (tmp_path / "tally.yaml").write_text(tally(items))
    env = {**os.environ, "ENGINE_LEASE_SECONDS": "1"}
    env.pop("ENGINE_DISPATCHER", None)
    run = subprocess.Popen(
        [ENGINE, "run", "tally.yaml", "--db", store.url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait(lambda: store.list_instances("tally"), "the instance")
        (instance,) = store.list_instances("tally")
        wait(
            lambda: succeeded_items(store, instance.id) >= kill_after or run.poll() is not None,
            "items to succeed",
        )
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(10)
    assert run.returncode == -signal.SIGKILL, "the run ended before it was killed"
    in_flight = in_flight_at_the_kill(store, instance.id, items, kill_after)

    wait(lambda: store.get_instance(instance.id, items=False).abandoned, "the lease to expire")
    del env["ENGINE_LEASE_SECONDS"]
    resumed = subprocess.run(
        [ENGINE, "resume", str(instance.id), "--db", store.url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    check_finished_once(store, instance.id, items, in_flight, tmp_path / "ran.txt")
