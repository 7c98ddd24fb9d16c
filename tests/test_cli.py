"""The `engine` command, run as users run it: the installed executable, in a subprocess.

Each test runs the commands it asserts on, named in tables (`commands`; `queries`, which read the
history that the `history` fixture's three runs leave), so that any test runs alone.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

ENGINE = str(Path(sys.executable).with_name("engine"))
TIMEOUT = 120


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)

    def __str__(self) -> str:
        command = " ".join(self.args)
        return f"engine {command} -> {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env.pop("PYTHONPATH", None)
    env.update({"COLUMNS": "200", "NO_COLOR": "1", **extra})
    return env


def engine(cwd: Path, *args: str, **env: str) -> Result:
    proc = subprocess.run(
        [ENGINE, *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return Result(args, proc.returncode, proc.stdout, proc.stderr)


def instances(db: Path) -> int:
    """Instance rows in a SQLite database (0 when it was never created)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "batch_instance" not in tables:
            return 0
        return conn.execute("SELECT count(*) FROM batch_instance").fetchone()[0]


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.err, str(result)
    assert "Traceback" not in result.out, str(result)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# -- the workspace ----------------------------------------------------------------------------

RUNNERS = """
from engine import job_handler

_calls = {}

@job_handler("echo")
def echo(inputs, ctx):
    return {"inputs": inputs, "step": ctx.step_id, "params": ctx.params}

@job_handler("boom")
def boom(inputs, ctx):
    raise RuntimeError("kaboom")

@job_handler("flaky")
def flaky(inputs, ctx):
    _calls[ctx.step_id] = _calls.get(ctx.step_id, 0) + 1
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return {"attempt": ctx.attempt}
"""

GOOD = """
    name: good
    params:
      n: {type: integer, default: 1}
      ids: {type: array, default: []}
      day: {type: string, default: "{{ run.logical_date[:10] }}"}
    steps:
      - id: first
        runner: echo
        inputs: {n: "{{ params.n }}", ids: "{{ params.ids }}", day: "{{ params.day }}"}
        nextSteps: [second, {step: cleanup, on: failure}]
      - id: second
        runner: echo
        inputs: {from_first: "{{ steps.first.result.inputs.n }}", nested: ["{{ params.n }}"]}
      - id: cleanup
        runner: echo
"""

FAIL = """
    name: fail
    steps:
      - {id: a, runner: boom}
      - {id: b, runner: echo}
"""

FLAKY = """
    name: flaky
    steps:
      - id: try
        runner: flaky
        retry: {maxAttempts: 2, delaySeconds: 0}
"""

ONE = """
    name: one
    steps:
      - id: a
        runner: echo
        nextStep: [b]
      - id: b
        runner: nope
        condition: "steps.a.result >"
"""

TWO = """
    name: two
    cron: "99 * * * *"
    steps: [{id: a, runner: echo}]
"""

PARAM_DEFAULT = """
    name: pdefault
    params:
      day: {default: "{{ run.logical_date[:10 }}"}
    steps: [{id: a, runner: echo}]
"""

EXTRA = """
    name: extra
    steps:
      - {id: a, runner: extra_path}
"""

BOTH = """
    name: both
    steps:
      - {id: a, runner: extra_path}
      - {id: b, runner: extra_module}
"""

PLUGIN_PATH = """
from engine import job_handler

@job_handler("extra_path")
def extra_path(inputs, ctx):
    return {"from": "path"}
"""

PLUGIN_MODULE = """
from engine import job_handler

@job_handler("extra_module")
def extra_module(inputs, ctx):
    return {"from": "module"}
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    write(root / "runners" / "steps.py", RUNNERS)
    write(root / "defs" / "good.yaml", GOOD)
    write(root / "defs" / "fail.yaml", FAIL)
    write(root / "defs" / "sub" / "flaky.yml", FLAKY)
    write(root / "defs" / "notes.txt", "not a definition: ignored by folder walks\n")
    write(root / "bad" / "one.yaml", ONE)
    write(root / "bad" / "nested" / "two.yml", TWO)
    write(root / "bad" / "fine.yaml", FAIL.replace("name: fail", "name: fine"))
    write(root / "pdefault" / "a_pdefault.yaml", PARAM_DEFAULT)
    write(root / "pdefault" / "b_two.yaml", TWO)
    write(
        root / "pdefault" / "c_empty_condition.yaml",
        "name: empty\nsteps:\n"
        "  - {id: a, runner: echo}\n  - {id: b, runner: echo, condition: ''}\n",
    )
    deep = "[" * 600 + "]" * 600
    write(
        root / "deep.yaml",
        f"name: deep\nsteps:\n  - {{id: a, runner: echo, inputs: {{v: {deep}}}}}\n",
    )
    # a second workspace: no runners/ folder, runners only through --runners / ENGINE_RUNNERS
    plain = root / "plain"
    write(plain / "extra.yaml", EXTRA)
    write(plain / "both.yaml", BOTH)
    write(plain / "plugins" / "extra_path.py", PLUGIN_PATH)
    write(plain / "lib" / "extra_module_pkg.py", PLUGIN_MODULE)
    write(plain / "broken" / "broken.py", "import no_such_dependency_zz\n")
    (root / "fresh").mkdir()
    return root


def commands(ws: Path) -> dict[str, tuple]:
    """name -> (cwd, args, env); each runs on a database of its own unless it says otherwise."""
    plain = ws / "plain"
    lib = str(plain / "lib")
    return {
        "validate_ok": (ws, ["validate", "defs"], {}),
        "validate_bad": (ws, ["validate", "bad", "defs/good.yaml", "nowhere.yaml"], {}),
        "validate_pdefault": (ws, ["validate", "pdefault"], {}),
        "validate_deep": (ws, ["validate", "deep.yaml"], {}),
        "run_invalid": (ws, ["run", "bad/one.yaml", "--db", f"sqlite:///{ws}/refused.db"], {}),
        "run_bad_params": (
            ws,
            [
                "run",
                "defs/good.yaml",
                "-p",
                "n=abc",
                "-p",
                "zz=1",
                "--db",
                f"sqlite:///{ws}/refused.db",
            ],
            {},
        ),
        "run_param_syntax": (
            ws,
            ["run", "defs/good.yaml", "-p", "novalue", "--db", f"sqlite:///{ws}/refused.db"],
            {},
        ),
        "dry_run": (
            ws,
            ["run", "defs/good.yaml", "--dry-run", "-p", "n=7", "--db", f"sqlite:///{ws}/dry.db"],
            {},
        ),
        "graph_mermaid": (ws, ["graph", "defs/good.yaml", "--format", "mermaid"], {}),
        "graph_dot": (ws, ["graph", "defs/good.yaml", "--format", "dot"], {}),
        "runners_path": (
            plain,
            ["validate", "extra.yaml", "--runners", "plugins/extra_path.py"],
            {},
        ),
        "runners_env": (
            plain,
            ["validate", "both.yaml"],
            {"ENGINE_RUNNERS": "plugins,extra_module_pkg", "PYTHONPATH": lib},
        ),
        "runners_broken": (plain, ["validate", "extra.yaml", "--runners", "broken"], {}),
        "bad_db": (ws, ["runs", "list", "--db", f"sqlite:///{ws}/no/such/dir/x.db"], {}),
        "list_empty": (
            ws,
            ["runs", "list", "--json"],
            {"ENGINE_DATABASE_URL": f"sqlite:///{ws}/empty.db"},
        ),
        "default_db": (ws / "fresh", ["runs", "list", "--json"], {}),
    }


def runs(ws: Path) -> dict[str, tuple]:
    """Three runs on one database, at once: their ids are known only from their output."""
    db = ["--db", f"sqlite:///{ws}/history.db"]
    return {
        "run_good": (
            ws,
            ["run", "defs/good.yaml", "--json", "-p", "n=5", "-p", "ids=[3, 4]", *db],
            {},
        ),
        "run_fail": (ws, ["run", "defs/fail.yaml", "--json", *db], {}),
        "run_flaky": (ws, ["run", "defs/sub/flaky.yml", "--json", *db], {}),
    }


def queries(ws: Path, flaky_id: int) -> dict[str, tuple]:
    """The history queries, once the runs have ended."""
    db = ["--db", f"sqlite:///{ws}/history.db"]
    return {
        "list_all": (ws, ["runs", "list", "--json", *db], {}),
        "list_fail": (ws, ["runs", "list", "--json", "--definition", "fail", *db], {}),
        "list_succeeded": (
            ws,
            ["runs", "list", "--json", "--status", "succeeded", "--limit", "1", *db],
            {},
        ),
        "show_flaky": (ws, ["runs", "show", str(flaky_id), "--json", *db], {}),
        "show_unknown": (ws, ["runs", "show", "999", *db], {}),
    }


RACERS = 4


def race(ws: Path) -> dict[str, Result]:
    """Commands that open one fresh database at the same moment, as two schedulers might."""
    args = ["runs", "list", "--json", "--db", f"sqlite:///{ws}/race.db"]
    procs = [
        subprocess.Popen(
            [ENGINE, *args],
            cwd=ws,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(RACERS)
    ]
    results = {}
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=TIMEOUT)
        results[f"race_{i}"] = Result(tuple(args), proc.returncode, out, err)
    return results


def command(ws: Path, name: str) -> Result:
    """Run the command `name` of the `commands` table."""
    cwd, args, env = commands(ws)[name]
    return engine(cwd, *args, **env)


@pytest.fixture(scope="module")
def history(ws) -> dict[str, Result]:
    """The three `runs`, at once, on one database that the history queries then read."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        started = {
            name: pool.submit(engine, cwd, *args, **env)
            for name, (cwd, args, env) in runs(ws).items()
        }
        return {name: future.result() for name, future in started.items()}


def query(ws: Path, history: dict[str, Result], name: str) -> Result:
    """Run the history query `name` once the runs of `history` have ended."""
    try:
        flaky_id = history["run_flaky"].json()["id"]
    except ValueError:
        flaky_id = 0
    cwd, args, env = queries(ws, flaky_id)[name]
    return engine(cwd, *args, **env)


def ids(history: dict[str, Result]) -> dict[str, int]:
    return {name: history[f"run_{name}"].json()["id"] for name in ("good", "fail", "flaky")}


# -- validate ---------------------------------------------------------------------------------


def test_validate_exits_0_for_a_folder_of_valid_definitions(ws):
    r = command(ws, "validate_ok")
    assert r.code == 0, r
    no_traceback(r)
    assert "3 of 3" in r.err  # good.yaml, fail.yaml and sub/flaky.yml; notes.txt is no definition


def test_validate_exits_1_and_prints_every_error_of_every_file_as_file_line_col(ws):
    r = command(ws, "validate_bad")
    assert r.code == 1, r
    no_traceback(r)
    lines = [line for line in r.err.splitlines() if re.match(r"^\S+:\d+:\d+: ", line)]
    located = {tuple(line.split(":", 3)[:3]) for line in lines}
    assert located == {
        ("bad/one.yaml", "5", "5"),  # nextStep: unknown key, at the key
        ("bad/one.yaml", "7", "13"),  # runner: nope
        ("bad/one.yaml", "8", "16"),  # condition does not parse
        ("bad/nested/two.yml", "2", "7"),  # cron
        ("nowhere.yaml", "1", "1"),  # cannot be read
    }, r.err
    assert any("did you mean 'nextSteps'" in line for line in lines)
    assert any("known runners" in line and "echo" in line for line in lines)
    assert re.search(r"^nowhere\.yaml:1:1: ", r.err, re.M)
    assert "2 of 5" in r.err  # bad/fine.yaml and defs/good.yaml are valid
    assert r.out == ""


def test_validate_reports_expression_faults_as_file_line_col_and_goes_on(ws):
    r = command(ws, "validate_pdefault")
    no_traceback(r)
    assert r.code == 1, r
    assert re.search(r"^pdefault/a_pdefault\.yaml:3:\d+: ", r.err, re.M), r.err
    assert re.search(r"^pdefault/b_two\.yaml:2:7: ", r.err, re.M), "the next file was not checked"
    assert re.search(r"^pdefault/c_empty_condition\.yaml:4:\d+: ", r.err, re.M), r.err


def test_validate_never_prints_a_traceback_for_a_deeply_nested_file(ws):
    r = command(ws, "validate_deep")
    no_traceback(r)
    assert r.code in (0, 1), r


# -- run --------------------------------------------------------------------------------------

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")
INSTANCE_KEYS = {
    "id",
    "definition",
    "version",
    "status",
    "trigger",
    "params",
    "scheduled_for",
    "started_at",
    "finished_at",
    "steps",
}
STEP_KEYS = {"step", "item", "attempt", "status", "result", "error", "started_at", "finished_at"}


def check_instance(doc: dict) -> None:
    assert set(doc) >= INSTANCE_KEYS, doc.keys()
    assert set(doc) <= INSTANCE_KEYS | {"error", "abandoned"}, doc.keys()
    assert isinstance(doc["id"], int)
    assert re.fullmatch(r"[0-9a-f]{64}", doc["version"]) or doc["version"]
    assert doc["trigger"] == "cli" and doc["scheduled_for"] is None
    for key in ("started_at", "finished_at"):
        assert ISO_UTC.match(doc[key]), doc[key]
    assert datetime.fromisoformat(doc["started_at"]) <= datetime.fromisoformat(doc["finished_at"])
    for attempt in doc["steps"]:
        assert set(attempt) == STEP_KEYS, attempt.keys()
        assert attempt["status"] in {"running", "succeeded", "failed", "skipped", "cancelled"}
        if attempt["started_at"] is not None:
            assert ISO_UTC.match(attempt["started_at"]), attempt
        if attempt["finished_at"] is not None:
            assert ISO_UTC.match(attempt["finished_at"]), attempt


def test_run_exits_0_and_prints_exactly_one_json_instance(history):
    r = history["run_good"]
    assert r.code == 0, r
    no_traceback(r)
    doc = r.json()  # the whole of stdout is one JSON document
    check_instance(doc)
    assert (doc["definition"], doc["status"]) == ("good", "succeeded")
    assert doc["params"]["n"] == 5 and doc["params"]["ids"] == [3, 4]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", doc["params"]["day"])
    steps = {s["step"]: s for s in doc["steps"]}
    assert set(steps) == {"first", "second", "cleanup"}
    assert steps["first"]["result"]["inputs"] == {
        "n": 5,
        "ids": [3, 4],
        "day": doc["params"]["day"],
    }
    assert steps["second"]["result"]["inputs"] == {"from_first": 5, "nested": [5]}
    assert steps["cleanup"]["status"] == "skipped"
    assert steps["first"]["attempt"] == 1 and steps["first"]["error"] is None


def test_run_prints_progress_on_stderr(history):
    err = history["run_good"].err
    assert "first" in err and "second" in err


def test_run_exits_1_when_the_instance_fails(history):
    r = history["run_fail"]
    assert r.code == 1, r
    doc = r.json()
    check_instance(doc)
    assert doc["status"] == "failed"
    steps = {s["step"]: s for s in doc["steps"]}
    assert steps["a"]["status"] == "failed" and "kaboom" in steps["a"]["error"]
    assert steps["b"]["status"] == "skipped"
    assert "Traceback" not in r.err  # the runner's traceback is stored, not printed


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("run_invalid", "bad/one.yaml:5:5: "),
        ("run_bad_params", "params.n"),
        ("run_bad_params", "params.zz"),  # every bad param, at once
        ("run_param_syntax", "novalue"),
    ],
)
def test_a_refused_run_exits_2_says_why_and_creates_no_instance(ws, name, says):
    r = command(ws, name)
    assert r.code == 2, r
    no_traceback(r)
    assert says in r.err
    assert r.out == ""
    assert instances(ws / "refused.db") == 0


def test_dry_run_prints_the_plan_and_runs_nothing(ws):
    r = command(ws, "dry_run")
    assert r.code == 0, r
    no_traceback(r)
    text = r.out + r.err
    for step in ("first", "second", "cleanup"):
        assert step in text
    assert "7" in text  # the resolved param
    assert instances(ws / "dry.db") == 0


# -- runs -------------------------------------------------------------------------------------


def test_runs_list_json_is_an_array_newest_first(ws, history):
    r = query(ws, history, "list_all")
    assert r.code == 0, r
    docs = r.json()
    by_id = {i: name for name, i in ids(history).items()}
    assert [d["id"] for d in docs] == sorted(by_id, reverse=True)
    assert [d["definition"] for d in docs] == [by_id[d["id"]] for d in docs]
    status = {"good": "succeeded", "fail": "failed", "flaky": "succeeded"}
    assert [d["status"] for d in docs] == [status[by_id[d["id"]]] for d in docs]
    for d in docs:
        assert set(d) >= INSTANCE_KEYS - {"steps"}


def test_runs_list_of_an_empty_history_is_an_empty_array_and_reads_engine_database_url(ws):
    r = command(ws, "list_empty")
    assert r.code == 0, r
    assert r.json() == []
    assert not (ws / "engine.db").exists(), "ENGINE_DATABASE_URL was ignored"


def test_commands_opening_one_fresh_database_at_once_all_succeed(ws):
    raced = race(ws)
    for i in range(RACERS):
        r = raced[f"race_{i}"]
        assert r.code == 0, r
        assert r.json() == []


def test_runs_list_filters_by_definition_status_and_limit(ws, history):
    run = ids(history)
    assert [d["id"] for d in query(ws, history, "list_fail").json()] == [run["fail"]]
    assert [d["id"] for d in query(ws, history, "list_succeeded").json()] == [
        max(run["good"], run["flaky"])
    ]


def test_runs_show_lists_every_attempt(ws, history):
    r = query(ws, history, "show_flaky")
    assert r.code == 0, r
    doc = r.json()
    check_instance(doc)
    assert [(s["step"], s["attempt"], s["status"]) for s in doc["steps"]] == [
        ("try", 1, "failed"),
        ("try", 2, "succeeded"),
    ]
    assert "first attempt fails" in doc["steps"][0]["error"]
    assert doc["steps"][1]["result"] == {"attempt": 2}
    assert doc == history["run_flaky"].json()


def test_runs_show_of_an_unknown_id_exits_1_with_a_clear_message(ws, history):
    r = query(ws, history, "show_unknown")
    assert r.code == 1, r
    no_traceback(r)
    assert "999" in r.err
    assert r.out == ""


def test_the_default_database_is_engine_db_in_the_working_directory(ws):
    r = command(ws, "default_db")
    assert r.code == 0, r
    assert r.json() == []
    assert (ws / "fresh" / "engine.db").is_file()


def test_an_unusable_database_is_a_clear_error(ws):
    r = command(ws, "bad_db")
    assert r.code != 0, r
    no_traceback(r)
    assert "database" in r.err.lower()


# -- graph (`engine schema` is checked in test_schema.py) ------------------------------------


def test_graph_as_mermaid(ws):
    r = command(ws, "graph_mermaid")
    assert r.code == 0, r
    assert r.out.startswith("flowchart")
    assert "first --> second" in r.out
    assert 'first -->|"failure"| cleanup' in r.out


def test_graph_as_dot(ws):
    r = command(ws, "graph_dot")
    assert r.code == 0, r
    assert r.out.startswith('digraph "good"') and r.out.rstrip().endswith("}")
    assert '"first" -> "second"' in r.out
    assert '"first" -> "cleanup" [label="failure"]' in r.out


# -- runner discovery -------------------------------------------------------------------------


def test_runners_given_as_a_path(ws):
    r = command(ws, "runners_path")
    assert r.code == 0, r
    no_traceback(r)


def test_engine_runners_takes_folders_and_modules_comma_separated(ws):
    r = command(ws, "runners_env")
    assert r.code == 0, r
    no_traceback(r)


def test_a_runner_import_error_is_a_clear_message_not_a_traceback(ws):
    r = command(ws, "runners_broken")
    assert r.code == 2, r
    no_traceback(r)
    assert "broken.py" in r.err and "no_such_dependency_zz" in r.err
