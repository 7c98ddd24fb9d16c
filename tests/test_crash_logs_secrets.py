"""Step logs and secret params when the process running them stalls or dies, with real
processes: a process stalled past its lease (SIGSTOP) and woken after another resumed its
instance adds no log line to the attempt it lost; a process killed (SIGKILL) mid-step leaves its
secret param sealed, and a resume with the key gives the runner the value, still never stored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENGINE = str(Path(sys.executable).parent / "engine")
KEY = "dGhpcy1pcy1hLXRlc3Qta2V5LW9mLTMyLWJ5dGVzISE="  # 32 bytes, url-safe base64: a Fernet key
TOKEN = "tok-<b>[/bold]\x1b[31m-" + "z" * 5000

RUNNERS = """
import os, time
from engine import job_handler

@job_handler("talker")
def talker(inputs, ctx):
    os.write(2, b"start\\n")  # raw: not caught into the step's log
    print(f"begun {ctx.attempt}")
    n = 0
    while not os.path.exists("stop"):
        print(f"said {ctx.attempt} {n}")
        n += 1
        time.sleep(0.005)
    return n

@job_handler("sealed")
def sealed(inputs, ctx):
    os.write(2, b"start\\n")
    print("the token is", ctx.params["token"])
    while ctx.attempt == 1 and not os.path.exists("open"):
        time.sleep(0.02)
    return {"length": len(ctx.params["token"]), "same": inputs["t"] == ctx.params["token"]}
"""


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return {**env, "ENGINE_LEASE_SECONDS": "2", **more}


def _engine(cwd: Path, db: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENGINE, *args, "--db", db],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _until(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _started(cwd: Path, db: str, definition: str, *args: str, **env: str) -> subprocess.Popen:
    """`engine run` of `definition`, once its runner has started."""
    proc = subprocess.Popen(
        [ENGINE, "run", definition, "--db", db, *args],
        cwd=cwd,
        env=_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    while (line := proc.stderr.readline()).strip() != "start":
        assert line, "the run ended before its step started"
    return proc


def _logs(cwd: Path, db: str, instance_id: int) -> list[dict]:
    done = _engine(cwd, db, "logs", str(instance_id), "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _abandoned(cwd: Path, db: str) -> bool:
    return json.loads(_engine(cwd, db, "runs", "list", "--json").stdout)[0]["abandoned"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "crash.py").write_text(RUNNERS)
    (tmp_path / "talk.yaml").write_text("name: talk\nsteps:\n  - {id: t, runner: talker}\n")
    (tmp_path / "sealed.yaml").write_text(
        "name: sealed\nparams:\n  token: {type: string, secret: true}\n"
        'steps:\n  - {id: s, runner: sealed, inputs: {t: "{{ params.token }}"}}\n'
    )
    return tmp_path


def test_a_stalled_process_woken_after_a_resume_adds_no_line_to_the_attempt_it_lost(
    folder: Path, db_url: str
) -> None:
    stalled = _started(folder, db_url, "talk.yaml")
    try:
        _until(lambda: len(_logs(folder, db_url, 1)) > 20, "lines of the first attempt stored")
        os.kill(stalled.pid, signal.SIGSTOP)
        _until(lambda: _abandoned(folder, db_url), "the stalled run's lease to expire")
        (folder / "stop").touch()
        resumed = _engine(folder, db_url, "resume", "1", "--json")
        assert resumed.returncode == 0, resumed.stderr
        first = [line for line in _logs(folder, db_url, 1) if line["attempt"] == 1]
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    _, stderr = stalled.communicate(timeout=60)

    assert stalled.returncode != 0 and "lost its lease" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    lines = _logs(folder, db_url, 1)
    assert [line for line in lines if line["attempt"] == 1] == first, "no line written after"
    said = [int(line["message"].split()[2]) for line in first[1:]]
    assert first[0]["message"] == "begun 1"
    assert said == list(range(len(said))), "the lines kept are the first ones, each once"
    assert {line["attempt"] for line in lines} == {1, 2}


def _sealed_copies(db: str) -> int:
    """How many times the token appears in the SQLite file and its write-ahead log."""
    path = Path(db.removeprefix("sqlite:///"))
    files = [p for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
    return sum(p.read_bytes().count(TOKEN.encode()) for p in files)


def test_a_run_killed_mid_step_resumes_with_its_sealed_secret_param(folder: Path, tmp_path):
    db = f"sqlite:///{tmp_path / 'engine.db'}"
    killed = _started(folder, db, "sealed.yaml", "-p", f"token={TOKEN}", ENGINE_PARAMS_KEY=KEY)
    _until(lambda: len(_logs(folder, db, 1)) == 1, "the first attempt's line stored")
    killed.kill()  # SIGKILL, mid-step
    killed.communicate(timeout=30)
    _until(lambda: _abandoned(folder, db), "the killed run's lease to expire")
    (folder / "open").touch()

    refused = _engine(folder, db, "resume", "1")
    assert refused.returncode == 2 and "ENGINE_PARAMS_KEY" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr

    resumed = _engine(folder, db, "resume", "1", "--json", ENGINE_PARAMS_KEY=KEY)
    assert resumed.returncode == 0, resumed.stderr
    shown = json.loads(resumed.stdout)
    assert shown["status"] == "succeeded" and shown["params"] == {"token": "***"}
    assert shown["steps"][-1]["result"] == {"length": len(TOKEN), "same": True}
    outputs = resumed.stdout + resumed.stderr + refused.stderr
    outputs += json.dumps(_logs(folder, db, 1)) + _engine(folder, db, "runs", "show", "1").stdout
    assert TOKEN not in outputs and TOKEN[:12] not in outputs
    assert [line["message"] for line in _logs(folder, db, 1)] == ["the token is ***"] * 2
    assert _sealed_copies(db) == 0
