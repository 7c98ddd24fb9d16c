"""Odd but ordinary command lines: each gets a clear error and the right exit code, never a
traceback or a hang."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = str(Path(sys.executable).with_name("engine"))

NOOP = """
from engine import job_handler

@job_handler("noop")
def noop(inputs, ctx):
    return 1
"""


def _engine(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    done = subprocess.run(
        [ENGINE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "noop.py").write_text(NOOP)
    return tmp_path


@pytest.mark.parametrize("command", ["runs show", "resume", "cancel"])
@pytest.mark.parametrize("instance_id", ["9223372036854775808", "0", "-5"])
def test_an_id_no_database_can_hold_is_an_unknown_id(workdir, command, instance_id):
    done = _engine(workdir, *command.split(), "--", instance_id)
    assert done.returncode == 1, done.stderr
    assert f"no instance with id {instance_id}" in done.stderr


def test_validate_refuses_what_is_not_a_regular_file_without_reading_it(workdir):
    os.mkfifo(workdir / "pipe.yaml")
    done = _engine(workdir, "validate", "/dev/zero", "pipe.yaml")
    assert done.returncode == 1
    assert "/dev/zero:1:1: cannot read: not a regular file" in done.stderr
    assert "pipe.yaml:1:1: cannot read: not a regular file" in done.stderr


def test_validate_reports_two_files_defining_one_name(workdir):
    (workdir / "defs").mkdir()
    for file in ("a.yaml", "b.yaml"):
        (workdir / "defs" / file).write_text("name: same\nsteps:\n  - {id: s, runner: noop}\n")
    done = _engine(workdir, "validate", "defs")
    assert done.returncode == 1
    assert "defs/b.yaml:1:1: name 'same' is defined in defs/a.yaml too" in done.stderr
    assert "1 of 2 definitions valid" in done.stderr


def test_validate_checks_the_names_expressions_read(workdir):
    (workdir / "t.yaml").write_text(
        "name: t\nparams:\n  full: {type: boolean, default: false}\nsteps:\n"
        '  - id: a\n    runner: noop\n    condition: "parms.full"\n'
        '    inputs: {v: "{{ params.ful }}",\n'
        "             ok: \"{{ params['full'] }} {{ range(2) | list }}\"}\n"
    )
    done = _engine(workdir, "validate", "t.yaml")
    assert done.returncode == 1
    assert (
        "t.yaml:7:16: unknown name 'parms': expressions see params, steps, run, secrets; "
        "did you mean 'params'?"
    ) in done.stderr
    assert (
        "t.yaml:8:17: unknown param 'ful' in params.ful (declared: full); did you mean 'full'?"
        in done.stderr
    )
    assert done.stderr.count("unknown") == 2, done.stderr


@pytest.mark.parametrize(
    ("setting", "located"),
    [
        ("retry: {maxAttempts: 2, delaySeconds: 1.0e+308}", "retry.delaySeconds"),
        ("retry: {maxAttempts: 2, maxDelaySeconds: 1.0e+9}", "retry.maxDelaySeconds"),
        ("retry: {maxAttempts: 2, backoff: 1.0e+9}", "retry.backoff"),
        ("timeoutSeconds: 1.0e+308", "timeoutSeconds"),
    ],
)
def test_delays_and_timeouts_are_bounded(workdir, setting, located):
    (workdir / "d.yaml").write_text(f"name: d\nsteps:\n  - {{id: a, runner: noop, {setting}}}\n")
    done = _engine(workdir, "validate", "d.yaml")
    assert done.returncode == 1
    assert located in done.stderr and "less than or equal to" in done.stderr, done.stderr


def test_no_runners_folder_says_where_runners_are_found(tmp_path):
    (tmp_path / "n.yaml").write_text("name: n\nsteps:\n  - {id: a, runner: noop}\n")
    done = _engine(tmp_path, "validate", "n.yaml")
    assert done.returncode == 1
    assert "no runners are registered" in done.stderr
    assert "--runners or ENGINE_RUNNERS" in done.stderr


def test_the_first_schedule_on_a_new_database_prints_no_alembic_lines(workdir):
    (workdir / "c.yaml").write_text(
        "name: c\ncron: '0 0 * * *'\nsteps:\n  - {id: a, runner: noop}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    proc = subprocess.Popen(
        [ENGINE, "schedule", "c.yaml"], cwd=workdir, env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    lines = []
    while "started for c" not in (line := proc.stderr.readline()):
        assert line, "".join(lines)
        lines.append(line)
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0
    assert "alembic" not in "".join(lines) + rest


def test_a_write_the_database_refuses_mid_run_is_an_error_and_a_resume_runs_the_step_again(
    workdir,
):
    """A real refusal (a SQLite trigger aborting the write of one step's end): the run stops
    with the database's reason, exit 1, and no step after it starts; once the database takes it
    again, a resume runs that step again and not the one stored before it."""
    (workdir / "three.yaml").write_text(
        "name: three\nsteps:\n  - {id: a, runner: noop}\n  - {id: boom, runner: noop}\n"
        "  - {id: c, runner: noop}\n"
    )
    assert _engine(workdir, "db", "upgrade").returncode == 0
    refuse = (
        "CREATE TRIGGER refuse BEFORE UPDATE ON batch_step_result WHEN NEW.step_key = 'boom' "
        "AND NEW.status = 'succeeded' BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
    )
    with sqlite3.connect(workdir / "engine.db") as conn:
        conn.execute(refuse)
    ran = _engine(workdir, "run", "three.yaml")
    assert ran.returncode == 1, ran.stderr
    assert ran.stderr.endswith(
        "error: the database refused to record the run's attempts: boom refused\n"
    ), ran.stderr
    with sqlite3.connect(workdir / "engine.db") as conn:
        conn.execute("DROP TRIGGER refuse")
        (status,) = conn.execute("SELECT status FROM batch_instance").fetchone()
        stored = conn.execute("SELECT step_key FROM batch_step_result ORDER BY id").fetchall()
    assert status == "failed"
    assert stored == [("a",), ("boom",)], "c must not start before boom's end is stored"

    resumed = _engine(workdir, "resume", "1", "--json")
    assert resumed.returncode == 0, resumed.stderr
    steps = [(s["step"], s["attempt"], s["status"]) for s in json.loads(resumed.stdout)["steps"]]
    assert ("a", 1, "succeeded") in steps and ("a", 2, "succeeded") not in steps
    assert ("boom", 2, "succeeded") in steps and ("c", 1, "succeeded") in steps
