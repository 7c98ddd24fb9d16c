"""`engine.shell`: real commands, their exit codes, output in the step's log, and nothing of
them left running after a timeout or a cancel (the direct and the process dispatcher)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from builtin_steps import gone, log_of, one_step, wait_for
from executing import WAIT, run

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.dispatch.process import ProcessDispatcher
from engine.execution import Cancellation
from engine.registry import JobRegistry
from engine.runners.shell import TAIL_BYTES
from engine.service import BatchService

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def registry(registry: JobRegistry) -> JobRegistry:
    return registry.add_builtins()


def shell(store, registry, command, **inputs):
    settings = {k: inputs.pop(k) for k in ("timeoutSeconds", "params") if k in inputs}
    return one_step(store, registry, "engine.shell", {"command": command, **inputs}, **settings)


def test_a_string_runs_in_sh_and_the_result_keeps_the_last_4_kib_of_stdout(sqlite_store, registry):
    view = shell(sqlite_store, registry, "for i in $(seq 1000); do echo line $i; done")
    [attempt] = view.steps
    assert attempt.status == "succeeded"
    stdout = attempt.result["stdout"]
    assert attempt.result["exitCode"] == 0
    assert len(stdout.encode()) == TAIL_BYTES and stdout.endswith("line 999\nline 1000\n")


def test_a_cut_through_a_character_keeps_no_half_of_it(sqlite_store, registry):
    # 4,097 bytes: the last 4,096 begin with the second byte of the first "é"
    view = shell(sqlite_store, registry, ["python3", "-c", "print('é' * 2048 + 'a', end='')"])
    assert view.steps[0].result["stdout"] == "é" * 2047 + "a"


def test_a_non_zero_exit_fails_with_the_code_and_the_end_of_stderr(sqlite_store, registry):
    command = "for i in $(seq 2000); do echo oops $i >&2; done; echo done; exit 3"
    [attempt] = shell(sqlite_store, registry, command).steps
    assert attempt.status == "failed"
    head = attempt.error.split("\n\n")[0]
    assert head.startswith("StepFailed: the command exited with code 3; stderr ends with:\n")
    assert head.endswith("oops 1999\noops 2000") and "oops 1\n" not in head
    assert len(head) < TAIL_BYTES + 100


def test_an_exit_with_nothing_on_stderr_says_so(sqlite_store, registry):
    [attempt] = shell(sqlite_store, registry, ["false"]).steps
    assert attempt.error.startswith("StepFailed: the command exited with code 1; stderr was empty")


def test_a_command_killed_by_a_signal_says_which(sqlite_store, registry):
    [attempt] = shell(sqlite_store, registry, "kill -9 $$").steps
    assert attempt.error.startswith("StepFailed: the command was killed by SIGKILL")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["no-such-program-here"], "No such file or directory: 'no-such-program-here'"),
        ("true", "No such file or directory: 'no/such/dir'"),
    ],
)
def test_a_command_that_cannot_start_fails_saying_why(sqlite_store, registry, command, message):
    cwd = None if isinstance(command, list) else "no/such/dir"
    [attempt] = shell(sqlite_store, registry, command, cwd=cwd).steps
    assert attempt.status == "failed"
    assert attempt.error.startswith("StepFailed: cannot start the command: ")
    assert message in attempt.error.split("\n")[0]


def test_env_is_added_to_the_environment_and_cwd_is_where_it_runs(sqlite_store, registry, tmp_path):
    view = shell(
        sqlite_store,
        registry,
        'echo "$GREETING $COUNT $FLAG"; pwd; test -n "$PATH" && echo inherited',
        env={"GREETING": "hello", "COUNT": 5, "FLAG": True},
        cwd=str(tmp_path),
    )
    assert view.steps[0].result["stdout"] == f"hello 5 true\n{tmp_path}\ninherited\n"


def test_a_list_runs_without_a_shell_and_a_string_pastes_templates_into_shell_code(
    sqlite_store, registry, tmp_path
):
    hostile = "; touch pwned #"
    listed = shell(
        sqlite_store,
        registry,
        ["printf", "%s|", "{{ params.name }}", "$HOME", 7],
        cwd=str(tmp_path),
        params={"name": hostile},
    )
    assert listed.steps[0].result["stdout"] == f"{hostile}|$HOME|7|"
    assert not (tmp_path / "pwned").exists()

    by_env = shell(
        sqlite_store,
        registry,
        'printf "%s" "$NAME"',
        env={"NAME": "{{ params.name }}"},
        cwd=str(tmp_path),
        params={"name": hostile},
    )
    assert by_env.steps[0].result["stdout"] == hostile
    assert not (tmp_path / "pwned").exists()

    pasted = shell(
        sqlite_store,
        registry,
        "echo {{ params.name }}",
        cwd=str(tmp_path),
        params={"name": hostile},
    )
    assert pasted.steps[0].status == "succeeded"
    assert (tmp_path / "pwned").exists(), "what docs/dsl.md warns of: the value became code"


def test_json_true_makes_stdout_parsed_the_result(sqlite_store, registry):
    command = ["python3", "-c", "import json; print(json.dumps({'rows': [1, 2], 'ok': True}))"]
    [attempt] = shell(sqlite_store, registry, command, json=True).steps
    assert attempt.result == {"rows": [1, 2], "ok": True}


def test_json_true_with_stdout_that_is_not_json_fails_showing_it(sqlite_store, registry):
    [attempt] = shell(sqlite_store, registry, "echo rows: 3", json=True).steps
    assert attempt.status == "failed"
    assert attempt.error.startswith("StepFailed: stdout is not JSON (")
    assert "'rows: 3\\n'" in attempt.error.split("\n")[0]


def test_output_lines_go_to_the_steps_log_by_stream(sqlite_store, registry):
    command = "echo one; echo warn >&2; echo two; printf 'no newline'"
    view = shell(sqlite_store, registry, command)
    lines = log_of(sqlite_store, view.id)
    assert [m for s, m in lines if s == "stdout"] == ["one", "two", "no newline"]
    assert [m for s, m in lines if s == "stderr"] == ["warn"]


def test_output_lines_reach_the_log_while_the_command_runs(sqlite_store, registry, tmp_path):
    go = tmp_path / "go"
    command = f"echo waiting; while [ ! -e {go} ]; do sleep 0.02; done; echo went"
    views = []
    running = threading.Thread(
        target=lambda: views.append(shell(sqlite_store, registry, command)), daemon=True
    )
    running.start()

    def said_waiting() -> bool:
        instances = sqlite_store.list_instances()
        return bool(instances) and ("stdout", "waiting") in log_of(sqlite_store, instances[0].id)

    wait_for(said_waiting, "the first line in the log")
    go.touch()
    running.join(WAIT)
    assert log_of(sqlite_store, views[0].id) == [("stdout", "waiting"), ("stdout", "went")]


def test_what_the_command_leaves_in_the_background_ends_with_it(sqlite_store, registry, tmp_path):
    pidfile = tmp_path / "bg.pid"
    view = shell(sqlite_store, registry, f"sleep 300 & echo $! > {pidfile}; echo started")
    assert view.steps[0].status == "succeeded"
    pid = int(pidfile.read_text())
    wait_for(lambda: gone(pid), "the background sleep to end")


GROUP = "sleep 300 & echo $! > {dir}/child.pid; echo $$ > {dir}/shell.pid; wait"
"""A shell and a grandchild of the runner, each writing its pid."""


def pids(folder: Path) -> list[int]:
    return [int((folder / f"{name}.pid").read_text()) for name in ("shell", "child")]


def written(folder: Path) -> bool:
    return all((folder / f"{name}.pid").is_file() for name in ("shell", "child"))


@pytest.fixture
def process_dispatcher(registry: JobRegistry) -> Iterator[ProcessDispatcher]:
    dispatcher = ProcessDispatcher(registry)
    yield dispatcher
    dispatcher.close()


def in_workers(store, dispatcher, registry, text: str):
    """Run `text` through the process dispatcher, which stays open (as `engine serve`'s does):
    closing it would kill a worker still ending its command's group."""
    loaded = load_text(text, "p.yaml", registry)
    return BatchService(store, dispatcher).run(BatchService.prepare(loaded, {}))


def group_step(folder: Path, command: str = GROUP, **settings: object) -> str:
    step = {"id": "s", "runner": "engine.shell", **settings}
    step["inputs"] = {"command": command.format(dir=folder)}
    return json.dumps({"name": "g", "steps": [step]})


def test_a_timeout_ends_the_whole_process_group(sqlite_store, registry, tmp_path):
    view = run(sqlite_store, registry, group_step(tmp_path, timeoutSeconds=1))
    [attempt] = view.steps
    assert attempt.status == "failed" and attempt.error.startswith("timeout")
    for pid in pids(tmp_path):
        wait_for(lambda pid=pid: gone(pid), f"process {pid} to end")


def test_a_timeout_in_a_worker_process_ends_the_whole_process_group(
    sqlite_store, registry, process_dispatcher, tmp_path
):
    view = in_workers(
        sqlite_store, process_dispatcher, registry, group_step(tmp_path, timeoutSeconds=1)
    )
    assert view.steps[0].error.startswith("timeout")
    for pid in pids(tmp_path):
        wait_for(lambda pid=pid: gone(pid), f"process {pid} to end")


def test_a_command_ignoring_sigterm_is_killed(sqlite_store, registry, tmp_path):
    stubborn = "trap '' TERM; " + GROUP.replace("sleep 300 &", "(trap '' TERM; sleep 300) &")
    view = run(sqlite_store, registry, group_step(tmp_path, stubborn, timeoutSeconds=1))
    assert view.steps[0].error.startswith("timeout")
    for pid in pids(tmp_path):
        wait_for(lambda pid=pid: gone(pid), f"process {pid} to be killed")


def test_a_cancel_ends_the_whole_process_group(sqlite_store, registry, tmp_path):
    cancellation = Cancellation()

    def cancel_once_running() -> None:
        wait_for(lambda: written(tmp_path), "the pids")
        cancellation.cancel("stopped by the test")

    threading.Thread(target=cancel_once_running, daemon=True).start()
    service = BatchService(sqlite_store, DirectDispatcher(registry))
    prepared = service.prepare(load_text(group_step(tmp_path), "c.yaml", registry), {})
    view = service.execute(prepared, service.start(prepared), cancellation=cancellation)
    assert view.status == "cancelled"
    assert [s.status for s in view.steps] == ["cancelled"]
    for pid in pids(tmp_path):
        wait_for(lambda pid=pid: gone(pid), f"process {pid} to end")


def test_it_runs_in_a_worker_process_with_its_lines_in_the_log(
    sqlite_store, registry, process_dispatcher
):
    text = (
        "name: p\nsteps:\n  - id: s\n    runner: engine.shell\n"
        "    inputs: {command: 'echo from $PPID; echo err >&2'}\n"
    )
    view = in_workers(sqlite_store, process_dispatcher, registry, text)
    [attempt] = view.steps
    assert attempt.status == "succeeded"
    parent = int(attempt.result["stdout"].split()[1])
    assert parent != os.getpid(), "the command's parent is a worker process"
    assert log_of(sqlite_store, view.id) == [("stdout", f"from {parent}"), ("stderr", "err")]
