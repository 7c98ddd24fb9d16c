"""Step logs through the `engine` command and the HTTP API, run as users run them: `engine run
--json` keeps stdout for the JSON whatever runners print; `engine logs` reads, filters and follows
an instance's lines, printing any text as text; `GET /batch/instances/{id}/logs` pages through
them on a real `engine serve` while they are written."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTS
from log_runners import said
from served import Server
from test_cli import ENGINE, TIMEOUT, Result, clean_env, engine, instances, no_traceback, write
from test_logs import PAGE, page_through

pytestmark = pytest.mark.timeout(180)

ODD = [
    "[/bold] closes nothing",
    "[red]not red[/red] :smile:",
    "\x1b[31mred?\x1b[0m and a bell \x07",
    "x" * 100_000,
]
"""Lines that look like Rich markup, drive a terminal, or are very long."""

RUNNERS = """
import os
import sys
import time
from pathlib import Path

from engine import job_handler

print("talkers imported")  # at import, before any step runs


def wait_for(path):
    deadline = time.monotonic() + 60
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never came")
        time.sleep(0.02)


@job_handler("noisy")
def noisy(inputs, ctx):
    print("noisy print")
    sys.stderr.write("noisy stderr\\n")
    ctx.logger.warning("noisy log")
    os.system("echo from-a-subprocess")
    return {"ok": True}


@job_handler("waits")
def waits(inputs, ctx):
    print("before the file")
    wait_for(Path(inputs["file"]))
    for i in range(3):
        print(f"after the file {i}")


@job_handler("odd")
def odd(inputs, ctx):
    for line in ODD:
        print(line)


@job_handler("chatter")
def chatter(inputs, ctx):
    lines = inputs["lines"]
    for i in range(lines):
        print(f"{ctx.step_id} {i}")
    wait_for(Path(inputs["file"]))
    for i in range(lines, 2 * lines):
        print(f"{ctx.step_id} {i}")
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("logs-cli")
    write(root / "runners" / "talkers.py", RUNNERS + f"\nODD = {ODD!r}\n")
    write(root / "noisy.yaml", "name: noisy\nsteps:\n  - {id: say, runner: noisy}\n")
    write(root / "odd.yaml", "name: odd\nsteps:\n  - {id: odd, runner: odd}\n")
    write(
        root / "waits.yaml",
        "name: waits\nparams: {file: {type: string}}\n"
        "steps:\n  - {id: w, runner: waits, inputs: {file: '{{ params.file }}'}}\n",
    )
    return root


def logs(ws: Path, instance_id: int, *args: str) -> list[dict[str, Any]]:
    """`engine logs ID --json` with `args`: one JSON object per line."""
    result = engine(ws, "logs", str(instance_id), "--json", *args)
    assert result.code == 0, result
    return [json.loads(line) for line in result.out.splitlines()]


def ran(result: Result) -> int:
    """The id of the instance that `engine run --json` ran, having checked that it succeeded."""
    assert result.code == 0, result
    assert "Traceback" not in result.err, result
    doc = result.json()
    assert doc["status"] == "succeeded", doc
    return int(doc["id"])


def test_run_json_prints_the_json_alone_however_runners_print(ws):
    """The runners' module prints as it is imported; the runner prints, writes to stderr, logs,
    and runs a subprocess writing to file descriptor 1: stdout is the instance's JSON and
    nothing else. What bypasses Python's streams goes to stderr; what the runner said is in the
    progress on stderr, and in its step's log."""
    result = engine(ws, "run", "noisy.yaml", "--json")
    instance_id = ran(result)
    assert "talkers imported" in result.err
    assert "from-a-subprocess" in result.err
    for shown in ("say stdout: noisy print", "say stderr: noisy stderr", "say warning: noisy log"):
        assert shown in result.err, result
    assert [(line["level"], line["stream"], line["message"]) for line in logs(ws, instance_id)] == [
        ("info", "stdout", "noisy print"),
        ("warning", "stderr", "noisy stderr"),
        ("warning", "log", "noisy log"),
    ]


def test_logs_json_gives_every_field_and_the_filters_read_only_what_they_name(ws):
    """A step retried and a mapped step whose item `us` is retried (the log runners): `--item`,
    `--step` and `--attempt` each keep the lines they name; text output names each line's step,
    item and attempt."""
    write(
        ws / "retried.yaml",
        """
        name: retried
        defaults: {retry: {maxAttempts: 2, delaySeconds: 0}}
        steps:
          - {id: once, runner: talk, inputs: {lines: 1, succeed_on: 2}}
          - id: fan
            runner: talk
            map: {items: [{key: eu, tries: 1}, {key: us, tries: 2}], as: row, key: "{{ row.key }}"}
            inputs: {lines: 1, succeed_on: "{{ row.tries }}"}
        """,
    )
    runners = ("--runners", str(TESTS / "worker_runners.py"))
    instance_id = ran(engine(ws, "run", "retried.yaml", "--json", *runners))

    def messages(*args: str) -> list[str]:
        return [line["message"] for line in logs(ws, instance_id, *args)]

    def expected(*attempts: str) -> list[str]:
        return [message for who in attempts for _, _, message in said(who, 1)]

    everything = logs(ws, instance_id)
    assert {tuple(line) for line in everything} == {
        ("step", "item", "attempt", "at", "level", "stream", "message")
    }
    assert [line["message"] for line in everything] == expected(
        "once#1", "once#2", "fan[eu]#1", "fan[us]#1", "fan[us]#2"
    )
    assert messages("--item", "us") == expected("fan[us]#1", "fan[us]#2")
    assert messages("--step", "fan", "--attempt", "2") == expected("fan[us]#2")
    assert messages("--step", "once", "--attempt", "1") == expected("once#1")
    assert messages("--step", "nothing") == []
    text = engine(ws, "logs", str(instance_id), "--item", "us")
    assert text.code == 0, text
    assert [line.split(maxsplit=1)[1] for line in text.out.splitlines()] == [
        "fan[us] info: fan[us]#1 log 0",
        "fan[us] stdout: fan[us]#1 print 0",
        "fan[us] stderr: fan[us]#1 stderr 0",
        "fan[us]#2 info: fan[us]#2 log 0",
        "fan[us]#2 stdout: fan[us]#2 print 0",
        "fan[us]#2 stderr: fan[us]#2 stderr 0",
    ]


def test_logs_prints_every_line_of_an_instance_however_many(ws):
    """2,500 lines, more than one page of the store: all of them, as text and as JSON."""
    write(
        ws / "many.yaml",
        """
        name: many
        steps:  # chatter waits for its file between halves: this file, here already
          - {id: m, runner: chatter, inputs: {lines: 1250, file: many.yaml}}
        """,
    )
    instance_id = ran(engine(ws, "run", "many.yaml", "--json"))
    expected = [f"m {i}" for i in range(2500)]
    assert [line["message"] for line in logs(ws, instance_id)] == expected
    text = engine(ws, "logs", str(instance_id))
    assert [line.split("m stdout: ", 1)[1] for line in text.out.splitlines()] == expected


def test_logs_prints_markup_control_characters_and_long_lines_as_text(ws):
    running = engine(ws, "run", "odd.yaml", "--json")
    instance_id = ran(running)
    assert "odd stdout: \\x1b[31mred?\\x1b[0m and a bell \\x07\n" in running.err, "progress too"
    assert [line["message"] for line in logs(ws, instance_id)] == ODD
    result = engine(ws, "logs", str(instance_id))
    assert result.code == 0, result
    no_traceback(result)
    shown = [line.split("odd stdout: ", 1)[1] for line in result.out.splitlines()]
    assert shown == [
        "[/bold] closes nothing",
        "[red]not red[/red] :smile:",
        "\\x1b[31mred?\\x1b[0m and a bell \\x07",
        "x" * 2000 + "… (98,000 more characters)",
    ]


def test_logs_follow_prints_lines_as_they_are_written_and_exits_once_the_instance_ends(
    ws, tmp_path
):
    """`engine logs --follow --json` of a running instance prints the line said so far, then
    the lines said after the runner was let go on (a file it waits for), then exits 0."""
    go = tmp_path / "go"
    running = subprocess.Popen(
        [ENGINE, "run", "waits.yaml", "-p", f"file={go}"],
        cwd=ws,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    follower = None
    try:
        assert running.stderr is not None
        first = running.stderr.readline()
        assert first.startswith("instance ") and first.endswith(" of waits started\n"), first
        instance_id = first.split()[1]
        follower = subprocess.Popen(
            [ENGINE, "logs", instance_id, "--follow", "--json"],
            cwd=ws,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["message"] == "before the file"
        assert follower.poll() is None, "the follower waits while the instance runs"
        go.touch()
        rest, errors = follower.communicate(timeout=TIMEOUT)
        assert follower.returncode == 0, errors
        assert [json.loads(line)["message"] for line in rest.splitlines()] == [
            f"after the file {i}" for i in range(3)
        ]
        assert running.wait(TIMEOUT) == 0, running.communicate()
    finally:
        for proc in (running, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_logs_of_an_unknown_instance_exits_1_and_says_so(ws):
    result = engine(ws, "logs", "999")
    assert (result.code, result.out, result.err) == (1, "", "error: no instance with id 999\n")


@pytest.mark.parametrize(
    "command", [["run", "noisy.yaml"], ["logs", "1"], ["worker"]], ids=lambda c: c[0]
)
def test_an_unusable_log_limit_is_refused_before_anything_runs(tmp_path, ws, command):
    """A worker is refused too: with it, every attempt it took would fail on its limit."""
    db = tmp_path / "engine.db"
    result = engine(ws, *command, ENGINE_LOG_LIMIT="abc", ENGINE_DATABASE_URL=f"sqlite:///{db}")
    assert (result.code, result.out) == (2, ""), result
    assert result.err == "error: ENGINE_LOG_LIMIT='abc': must be a whole number of at least 0\n"
    assert instances(db) == 0


LINES = 1000


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[Server]:
    """`engine serve` of the chatty definition (two steps at once, each printing 2 x LINES lines
    with a wait for the file `go` between), in its default process dispatcher."""
    write(tmp_path / "runners" / "talkers.py", RUNNERS + f"\nODD = {ODD!r}\n")
    write(
        tmp_path / "defs" / "chatty.yaml",
        f"""
        name: chatty
        concurrency: 2
        steps:
          - {{id: a, runner: chatter, inputs: {{lines: {LINES}, file: go}}, nextSteps: []}}
          - {{id: b, runner: chatter, inputs: {{lines: {LINES}, file: go}}, nextSteps: []}}
        """,
    )
    server = Server(tmp_path, db_url)
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def test_paging_over_http_while_the_instance_runs_neither_skips_nor_repeats_a_line(
    served, tmp_path
):
    accepted = served.client.post("/batch/run", json={"definition": "chatty"})
    assert accepted.status_code == 202, accepted.text
    route = f"/batch/instances/{accepted.json()['instance_id']}/logs"

    def fetch(after: int | None) -> tuple[list[Any], int | None]:
        query = {"limit": PAGE} | ({} if after is None else {"after": after})
        response = served.client.get(route, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        return page["lines"], page["next"]

    read = page_through(fetch, (tmp_path / "go").touch)
    whole = served.client.get(route, params={"limit": 10_000}).json()
    assert whole["next"] is None
    assert read == whole["lines"]
    assert {s: [line["message"] for line in read if line["step"] == s] for s in "ab"} == {
        s: [f"{s} {i}" for i in range(2 * LINES)] for s in "ab"
    }
    assert served.terminate() == 0
