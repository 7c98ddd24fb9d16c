"""A mapped step of 10,000 items when its process is killed: `engine run` gets SIGKILL after
its first item, midway or near the end (or midway, and then its resume too), and `engine resume`
finishes it.

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
    fell in the middle of the map: at least `at_least` items had succeeded, not all of them
    (failed rows are those an earlier kill left running, ended by the resume)."""
    rows = [s for s in store.get_instance(instance_id).steps or [] if s.item is not None]
    by_status = Counter(s.status for s in rows)
    assert "running" in by_status and set(by_status) <= {"succeeded", "running", "failed"}
    assert at_least <= by_status["succeeded"] < items, "the kill landed in the middle of the map"
    return {s.item for s in rows if s.status == "running" and s.item is not None}


def check_finished_once(
    store: Store, instance_id: int, items: int, in_flight: list[set[str]], ran_txt: Path
) -> None:
    """The instance ended as if never killed: `fan` collected every item's result in item
    order, each item has one succeeded attempt, and only the items in flight at a kill
    (`in_flight`, one set per kill) ran again, each under its next attempt number (`ran_txt`, the
    runner's `ran.txt`, counts the runs)."""
    keys = [f"k{i:05d}" for i in range(items)]
    view = store.get_instance(instance_id)
    assert view.status == "succeeded"
    steps = view.steps or []
    assert not [s for s in steps if s.status == "running"], "no attempt is left running"
    assert [(s.attempt, s.status) for s in steps if s.step == "make"] == [(1, "succeeded")]
    own = [s for s in steps if s.step == "fan" and s.item is None]
    kills = len(in_flight)
    assert [(s.attempt, s.status) for s in own] == [
        *((n, "failed") for n in range(1, kills + 1)),
        (kills + 1, "succeeded"),
    ]
    assert all("abandoned" in (s.error or "") for s in own[:kills])
    assert own[-1].result == [{"key": k, "index": i, "n": i} for i, k in enumerate(keys)]

    rows = Counter((s.item, s.attempt, s.status) for s in steps if s.item is not None)
    expected: Counter[tuple[str, int, str]] = Counter()
    for k in keys:
        lost = sum(k in keys_then for keys_then in in_flight)
        expected.update((k, n, "failed") for n in range(1, lost + 1))
        expected[(k, lost + 1, "succeeded")] += 1
    assert rows == expected, "one succeeded attempt per key; in-flight keys continue at the next"

    ran = Counter(ran_txt.read_text().split("\n")[:-1])
    assert set(ran) == set(keys)
    anywhere = set().union(*in_flight)
    again = {k: n for k, n in ran.items() if n != 1 and k not in anywhere}
    assert again == {}, "an item not in flight at a kill ran twice"
    assert all(ran[k] <= 1 + sum(k in then for then in in_flight) for k in anywhere)


def kill_once(
    store: Store, cwd: Path, env: dict[str, str], command: list[str], kill_after: int
) -> int:
    """Start `engine COMMAND`, SIGKILL it once `kill_after` items have succeeded, and wait for
    its lease to expire; the instance's id."""
    run = subprocess.Popen(
        [ENGINE, *command, "--db", store.url],
        cwd=cwd,
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
    wait(lambda: store.get_instance(instance.id, items=False).abandoned, "the lease to expire")
    return instance.id


@pytest.mark.parametrize(
    "kills",
    [(3_000,), (1,), (9_000,), (2_000, 7_000)],
    ids=["midway", "at-the-first-item", "near-the-end", "and-its-resume-killed-too"],
)
def test_a_map_killed_is_resumed_running_only_what_had_not_succeeded(store, tmp_path, kills):
    """SIGKILL once `kills[0]` items have succeeded; each further entry kills the resume that
    follows once that many have; a last resume finishes."""
    items = 10_000
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "tally.py").write_text(TALLY_RUNNERS)
    (tmp_path / "tally.yaml").write_text(tally(items))
    env = {**os.environ, "ENGINE_LEASE_SECONDS": "1"}
    env.pop("ENGINE_DISPATCHER", None)
    in_flight: list[set[str]] = []
    command = ["run", "tally.yaml"]
    for kill_after in kills:
        instance_id = kill_once(store, tmp_path, env, command, kill_after)
        in_flight.append(in_flight_at_the_kill(store, instance_id, items, kill_after))
        command = ["resume", str(instance_id)]

    del env["ENGINE_LEASE_SECONDS"]
    resumed = subprocess.run(
        [ENGINE, *command, "--db", store.url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    check_finished_once(store, instance_id, items, in_flight, tmp_path / "ran.txt")
