"""A mapped step in the `engine` command's output: `run` and `runs show` give it one row with its
item counts, `runs show --items` a row per item attempt as `step[key]`, `--json` an `item` in
every entry; `graph` marks it `(map)`. `engine cancel` stops its items in flight, and `engine
resume` runs the items that did not succeed."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from test_cli import ENGINE, TIMEOUT, Result, clean_env, engine, write

RUNNERS = """
from pathlib import Path
from engine import job_handler

@job_handler("rows")
def rows(inputs, ctx):
    return ["a", "b", "c"]

@job_handler("item")
def item(inputs, ctx):
    if inputs["row"] == "c" and ctx.attempt < inputs["succeed_on"]:
        raise RuntimeError("c fails")
    return {"row": inputs["row"], "index": ctx.item_index}

@job_handler("hold")
def hold(inputs, ctx):
    if Path("go").exists():
        return ctx.item_key
    Path(f"held-{ctx.item_key}").touch()
    if ctx.cancel_event.wait(60):
        Path(f"told-{ctx.item_key}").touch()
    return "late"
"""

MAPPED = """
    name: mapped
    params:
      succeed_on: {type: integer, default: 99, description: "the attempt of item c that succeeds"}
    steps:
      - {id: rows, runner: rows}
      - id: fan
        runner: item
        map: {items: "{{ steps.rows.result }}", as: row, key: "{{ row }}"}
        inputs: {row: "{{ row }}", succeed_on: "{{ params.succeed_on }}"}
      - {id: after, runner: rows}
"""

HELD = """
    name: held
    steps:
      - id: fan
        runner: hold
        map: {items: [a, b, c, d], as: row, key: "{{ row }}", concurrency: 2}
      - {id: after, runner: rows}
"""

COUNTS = "3 items: 1 failed, 2 succeeded"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("map-cli")
    write(root / "runners" / "steps.py", RUNNERS)
    write(root / "mapped.yaml", MAPPED)
    write(root / "held.yaml", HELD)
    return root


@pytest.fixture(scope="module")
def ran(ws: Path) -> Result:
    """`engine run` of the mapped definition, whose item `c` fails."""
    return engine(ws, "run", "mapped.yaml", "--json", "--db", f"sqlite:///{ws}/e.db")


def show(ws: Path, ran: Result, *args: str) -> Result:
    """`engine runs show` of the instance `ran` started."""
    result = engine(
        ws, "runs", "show", str(ran.json()["id"]), *args, "--db", f"sqlite:///{ws}/e.db"
    )
    assert result.code == 0, result
    return result


def table(text: str) -> list[list[str]]:
    """The cells of each body row of the tables in `text`."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.startswith("│")
    ]


def test_run_reports_failed_items_and_sums_up_the_mapped_step(ran):
    assert ran.code == 1, ran
    assert "✗ fan[c] failed (attempt 1): RuntimeError: c fails" in ran.err
    assert "fan[a]" not in ran.err and "fan[b]" not in ran.err, "succeeded items are not printed"
    assert [row[:2] + row[4:] for row in table(ran.err)] == [
        ["rows", "succeeded", '["a", "b", "c"]'],
        ["fan", "failed", f"{COUNTS} · 1 of 3 items failed: 'c'"],
        ["after", "skipped", ""],
    ]


def test_runs_show_prints_a_mapped_step_as_one_row_with_its_item_counts(ws, ran):
    rows = table(show(ws, ran).out)
    assert [(row[0], row[1], row[2], row[5]) for row in rows] == [
        ("rows", "1", "succeeded", '["a", "b", "c"]'),
        ("fan", "1", "failed", f"{COUNTS} · 1 of 3 items failed: 'c'"),
        ("after", "1", "skipped", ""),
    ]


def test_runs_show_items_lists_each_item_attempt_as_step_and_key_after_the_table(ws, ran):
    shown = show(ws, ran, "--items").out
    assert table(shown) == table(show(ws, ran).out), "the steps' table is the same"
    heading, *lines = shown.split("\n\n", 1)[1].strip("\n").splitlines()
    assert heading == "attempt  status     started   duration  item  result / error"
    assert [line.split(None, 5)[:2] + line.split(None, 5)[4:] for line in lines] == [
        ["1", "succeeded", "fan[a]", '{"row": "a", "index": 0}'],
        ["1", "succeeded", "fan[b]", '{"row": "b", "index": 1}'],
        ["1", "failed", "fan[c]", "RuntimeError: c fails"],
    ]


def test_runs_show_json_gives_every_entry_its_item(ws, ran):
    doc = show(ws, ran, "--json").json()
    assert [(s["step"], s["item"], s["status"]) for s in doc["steps"]] == [
        ("rows", None, "succeeded"),
        ("fan", None, "failed"),
        ("fan", "a", "succeeded"),
        ("fan", "b", "succeeded"),
        ("fan", "c", "failed"),
        ("after", None, "skipped"),
    ]
    assert doc == ran.json(), "run --json prints the instance as runs show --json does"


def test_after_a_resume_an_earlier_attempt_of_the_mapped_step_keeps_its_own_outcome(ws):
    db = ["--db", f"sqlite:///{ws}/resumed.db"]
    first = engine(ws, "run", "mapped.yaml", "-p", "succeed_on=2", "--json", *db)
    assert first.code == 1, first
    instance_id = str(first.json()["id"])
    resumed = engine(ws, "resume", instance_id, *db)
    assert resumed.code == 0, resumed
    assert [row[:3] + row[4:] for row in table(resumed.err)] == [
        ["rows", "succeeded", "1", '["a", "b", "c"]'],
        ["fan", "succeeded", "2", "3 items: 3 succeeded"],
        ["after", "succeeded", "2", '["a", "b", "c"]'],
    ]
    rows = table(engine(ws, "runs", "show", instance_id, *db).out)
    fan = [(row[1], row[2], row[5]) for row in rows if row[0] == "fan"]
    assert [attempt[:2] for attempt in fan] == [("1", "failed"), ("2", "succeeded")]
    assert fan[1][2] == "3 items: 3 succeeded"
    assert fan[0][2].endswith("1 of 3 items failed: 'c'")
    assert "3 succeeded" not in fan[0][2], "the failed attempt does not read as all items done"


def test_graph_marks_a_mapped_step(ws):
    mermaid = engine(ws, "graph", "mapped.yaml")
    assert mermaid.code == 0, mermaid
    assert mermaid.out.splitlines()[1:4] == [
        '    rows["rows"]',
        '    fan[["fan (map)"]]',
        '    after["after"]',
    ]
    dot = engine(ws, "graph", "mapped.yaml", "--format", "dot")
    assert dot.code == 0, dot
    assert dot.out.splitlines()[2:5] == [
        '    "rows";',
        '    "fan" [shape=box3d, label="fan (map)"];',
        '    "after";',
    ]


def test_cancel_stops_the_items_in_flight_and_resume_runs_every_item_left(ws):
    db = f"sqlite:///{ws}/held.db"
    run = subprocess.Popen(
        [ENGINE, "run", "held.yaml", "--json", "--db", db],
        cwd=ws,
        env=clean_env(ENGINE_LEASE_SECONDS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    while len(held := {p.name for p in ws.glob("held-*")}) < 2:
        assert run.poll() is None and time.monotonic() < deadline, "the items did not start"
        time.sleep(0.02)
    assert held == {"held-a", "held-b"}, "two items at once, in item order"
    (instance,) = engine(ws, "runs", "list", "--json", "--db", db).json()
    cancel = engine(ws, "cancel", str(instance["id"]), "--db", db)
    assert cancel.code == 0 and "cancel requested" in cancel.err, cancel
    out, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == 1, err

    doc = json.loads(out)
    assert (doc["status"], doc["error"]) == ("cancelled", "cancelled by engine cancel")
    assert [(s["step"], s["item"], s["status"]) for s in doc["steps"]] == [
        ("fan", None, "cancelled"),
        ("fan", "a", "cancelled"),
        ("fan", "b", "cancelled"),
    ], "no item starts after the cancel, nor the next step"
    assert {p.name for p in ws.glob("told-*")} == {"told-a", "told-b"}

    (ws / "go").touch()
    resumed = engine(ws, "resume", str(instance["id"]), "--json", "--db", db)
    assert resumed.code == 0, resumed
    steps = resumed.json()["steps"]
    assert [(s["step"], s["item"], s["attempt"], s["status"]) for s in steps[3:]] == [
        ("fan", None, 2, "succeeded"),
        ("fan", "a", 2, "succeeded"),
        ("fan", "b", 2, "succeeded"),
        ("fan", "c", 1, "succeeded"),
        ("fan", "d", 1, "succeeded"),
        ("after", None, 1, "succeeded"),
    ]
    assert steps[3]["result"] == ["a", "b", "c", "d"]
