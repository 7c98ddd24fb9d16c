"""`engine serve` as a real process over TCP: the smoke path, SIGTERM, refusals, load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from served import Server

from engine.store.types import utcnow

ENGINE = str(Path(sys.executable).parent / "engine")

RUNNERS = """
import os
import time
from pathlib import Path
from engine import job_handler

@job_handler("add")
def add(inputs, ctx):
    return {"sum": inputs["a"] + inputs["b"]}

@job_handler("boom")
def boom(inputs, ctx):
    raise ValueError("no row for day 3")

@job_handler("bail")
def bail(inputs, ctx):
    os._exit(0)

@job_handler("hold")
def hold(inputs, ctx):
    Path(f"held-{ctx.instance_id}").touch()
    while not Path("go").exists():
        if ctx.cancel_event.wait(0.05):
            return "cancelled"
    return "went"
"""

SUM = """
name: sum
params:
  a: {type: integer}
steps:
  - {id: add, runner: add, inputs: {a: "{{ params.a }}", b: 1}}
  - {id: again, runner: add, inputs: {a: "{{ steps.add.result.sum }}", b: 1}}
"""

BAIL = """
name: bail
steps:
  - {id: bail, runner: bail}
"""

HOLD = """
name: hold
steps:
  - {id: hold, runner: hold}
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "jobs.py").write_text(RUNNERS)
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "sum.yaml").write_text(SUM)
    (tmp_path / "defs" / "hold.yaml").write_text(HOLD)
    (tmp_path / "defs" / "bail.yaml").write_text(BAIL)
    return tmp_path


@pytest.fixture
def serve(workdir: Path, db_url: str) -> Iterator[Any]:
    servers: list[Server] = []

    def start(*args: str, **kwargs: Any) -> Server:
        servers.append(Server(workdir, db_url, *args, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def engine(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ENGINE, *args], cwd=workdir, capture_output=True, text=True)


def first_round(server: Server) -> Any:
    """`/healthz` once the scheduler has completed a round."""
    deadline = time.monotonic() + 30
    while (health := server.client.get("/healthz").json())["scheduler"]["last_round"] is None:
        assert time.monotonic() < deadline, health
        time.sleep(0.05)
    return health


def test_trigger_poll_and_read_the_results(serve: Any) -> None:
    server = serve()
    health = first_round(server)
    assert datetime.fromisoformat(health["scheduler"].pop("last_round")) <= utcnow()
    assert health == {
        "status": "ok",
        "running": 0,
        "waiting": 0,
        "scheduler": {"alive": True, "failing": []},
    }
    accepted = server.client.post("/batch/run", json={"definition": "sum", "params": {"a": 40}})
    assert accepted.status_code == 202
    doc = server.wait(accepted.json()["instance_id"], "succeeded")
    assert [(s["step"], s["result"]) for s in doc["steps"]] == [
        ("add", {"sum": 41}),
        ("again", {"sum": 42}),
    ]
    assert server.terminate() == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_malformed_json_is_400_and_another_content_type_415(serve: Any) -> None:
    server = serve()
    sent = [
        (b'{"definition": ', "application/json"),
        (b'{"definition": "sum", "params": {"a": 1}}', "text/plain"),
    ]
    codes = [
        server.client.post("/batch/run", content=body, headers={"Content-Type": kind})
        for body, kind in sent
    ]
    assert [r.status_code for r in codes] == [400, 415]
    assert codes[0].json()["detail"].startswith("the body is not valid JSON: Expecting value")
    assert server.client.get("/batch/instances").json() == []
    assert server.terminate() == 0


def test_a_runner_ending_its_process_fails_its_instance_and_the_server_lives_on(
    serve: Any,
) -> None:
    server = serve()
    bailed = server.client.post("/batch/run", json={"definition": "bail"}).json()["instance_id"]
    doc = server.wait(bailed, "succeeded", "failed")
    assert doc["status"] == "failed"
    assert doc["steps"][0]["error"].startswith("worker process exited with code 0")
    ran = server.client.post("/batch/run", json={"definition": "sum", "params": {"a": 1}})
    assert server.wait(ran.json()["instance_id"], "succeeded", "failed")["status"] == "succeeded"
    assert server.proc.poll() is None
    assert server.terminate() == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sigterm_lets_running_instances_finish_and_leaves_waiting_ones_resumable(
    serve: Any, workdir: Path
) -> None:
    server = serve("--max-instances", "1", "--grace", "30")
    first = server.client.post("/batch/run", json={"definition": "hold"}).json()["instance_id"]
    second = server.client.post("/batch/run", json={"definition": "hold"}).json()["instance_id"]
    server.wait(first, "running")
    while not (workdir / f"held-{first}").exists():
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.proc.poll() is None, "it waits for the running instance"
    (workdir / "go").touch()
    assert server.proc.wait(30) == 0
    assert not (workdir / f"held-{second}").exists()

    shown = engine(workdir, "runs", "list", "--json", "--db", server.db)
    assert '"status": "succeeded"' in shown.stdout and '"status": "pending"' in shown.stdout
    resumed = engine(workdir, "resume", str(second), "--db", server.db)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sigterm_cancels_what_outlives_the_grace_period(serve: Any, workdir: Path) -> None:
    server = serve("--grace", "1")
    instance_id = server.client.post("/batch/run", json={"definition": "hold"}).json()[
        "instance_id"
    ]
    while not (workdir / f"held-{instance_id}").exists():
        time.sleep(0.05)
    started = time.monotonic()
    assert server.terminate() == 0
    assert time.monotonic() - started < 15
    shown = engine(workdir, "runs", "show", str(instance_id), "--json", "--db", server.db)
    assert '"status": "cancelled"' in shown.stdout
    assert "stopped: not finished within 1s of shutdown" in shown.stdout
    (workdir / "go").touch()
    resumed = engine(workdir, "resume", str(instance_id), "--db", server.db)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_token_is_required_beyond_loopback_and_over_http(
    serve: Any, workdir: Path, db_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_API_TOKEN"}
    refused = subprocess.run(
        [ENGINE, "serve", "defs", "--db", db_url, "--host", "0.0.0.0", "--port", "0"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token: set ENGINE_API_TOKEN" in refused.stderr

    server = serve(env={"ENGINE_API_TOKEN": "tok-123"})
    assert server.client.get("/definitions").status_code == 401
    good = server.client.get("/definitions", headers={"Authorization": "Bearer tok-123"})
    assert good.status_code == 200
    assert server.terminate() == 0
    assert "tok-123" not in "".join(server.log)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_a_token_a_rebound_host_or_another_origin_is_refused(serve: Any) -> None:
    """DNS rebinding: a page whose domain now resolves to 127.0.0.1 sends its own Host; a page
    posting to the loopback address itself sends its own Origin."""
    server = serve("--host", "127.0.0.2")
    port = server.url.rsplit(":", 1)[1]
    body = {"definition": "sum", "params": {"a": 1}}
    rebound = server.client.post("/batch/run", json=body, headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 421
    assert server.client.get("/healthz", headers={"Host": "evil.example"}).status_code == 200
    forged = server.client.post(
        "/batch/instances/1/cancel", headers={"Origin": "http://evil.example"}
    )
    assert forged.status_code == 403, "a page of another site posting to 127.0.0.2 itself"
    for host in (f"localhost:{port}", "127.0.0.1", "127.0.0.2", f"127.0.0.2:{port}"):
        assert server.client.get("/batch/instances", headers={"Host": host}).json() == [], host
    assert server.terminate() == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_step_errors_over_http_lose_their_traceback_unless_asked(
    serve: Any, workdir: Path, db_url: str
) -> None:
    (workdir / "defs" / "boom.yaml").write_text("name: boom\nsteps:\n  - {id: b, runner: boom}\n")
    env = {**os.environ, "ENGINE_API_TRACEBACKS": "maybe"}
    refused = subprocess.run(
        [ENGINE, "serve", "defs", "--db", db_url, "--port", "0"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stderr == "error: ENGINE_API_TRACEBACKS='maybe': must be 0, 1, true or false\n"

    server = serve()
    failed = server.client.post("/batch/run", json={"definition": "boom"}).json()["instance_id"]
    doc = server.wait(failed, "failed")
    assert doc["steps"][0]["error"] == "ValueError: no row for day 3"
    assert server.terminate() == 0
    shown = engine(workdir, "runs", "show", str(failed), "--json", "--db", db_url)
    assert "Traceback (most recent call last)" in shown.stdout
    assert str(workdir / "runners" / "jobs.py") in shown.stdout

    server = serve(env={"ENGINE_API_TRACEBACKS": "1"})
    error = server.client.get(f"/batch/instances/{failed}").json()["steps"][0]["error"]
    assert error.startswith("ValueError: no row for day 3\n\nTraceback (most recent call last)")
    assert str(workdir / "runners" / "jobs.py") in error
    assert server.terminate() == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_invalid_definition_stops_the_start(workdir: Path, db_url: str) -> None:
    (workdir / "defs" / "bad.yaml").write_text("name: bad\nsteps:\n  - {id: a, nextStep: [b]}\n")
    (workdir / "defs" / "dup.yaml").write_text(SUM)
    result = engine(workdir, "serve", "defs", "--db", db_url, "--port", "0")
    assert result.returncode == 2
    assert "defs/bad.yaml:3:13: steps[0].nextStep: unknown key 'nextStep'" in result.stderr
    assert "defs/sum.yaml:1:1: name 'sum' is defined in defs/dup.yaml too" in result.stderr


def test_only_serve_imports_fastapi_and_uvicorn(workdir: Path) -> None:
    probe = (
        "import sys\n"
        "from engine.cli import main\n"
        "sys.argv = ['engine', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = {'fastapi', 'uvicorn', 'starlette'} & set(sys.modules)\n"
        "print('HEAVY', sorted(heavy), file=sys.stderr)\n"
    )
    db = f"sqlite:///{workdir / 'e.db'}"
    run = ["run", "defs/sum.yaml", "-p", "a=1", "--db", db]
    for args in (["--help"], ["validate", "defs"], run):
        result = subprocess.run(
            [sys.executable, "-c", probe, *args], cwd=workdir, capture_output=True, text=True
        )
        assert "HEAVY []" in result.stderr, (args, result.stderr)


def test_64_concurrent_runs_are_all_kept_and_all_succeed(serve: Any, db_url: str) -> None:
    server = serve()
    limits = httpx.Limits(max_connections=64)
    client = httpx.Client(base_url=server.url, timeout=60, limits=limits)
    started = time.monotonic()

    def post(n: int) -> int:
        response = client.post("/batch/run", json={"definition": "sum", "params": {"a": n}})
        assert response.status_code == 202, response.text
        return int(response.json()["instance_id"])

    with ThreadPoolExecutor(64) as pool:
        ids = list(pool.map(post, range(64)))
    accepted = time.monotonic() - started
    client.close()
    assert len(set(ids)) == 64
    for n, instance_id in enumerate(ids):
        doc = server.wait(instance_id, "succeeded", "failed")
        assert doc["status"] == "succeeded"
        assert doc["steps"][-1]["result"] == {"sum": n + 2}
    done = time.monotonic() - started
    listed = server.client.get("/batch/instances?definition=sum&limit=100").json()
    assert sorted(d["id"] for d in listed) == sorted(ids)
    print(
        f"\n64 concurrent POST /batch/run on {db_url.split(':')[0]}: all accepted in "
        f"{accepted:.2f}s, all succeeded after {done:.2f}s"
    )
    assert server.terminate() == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_scheduler_runs_in_the_same_process(serve: Any, workdir: Path) -> None:
    """A never-scheduled definition's latest tick within the misfire grace is due at once."""
    (workdir / "defs" / "minutely.yaml").write_text(
        'name: minutely\ncron: "* * * * *"\n'
        "steps:\n  - {id: add, runner: add, inputs: {a: 1, b: 1}}\n"
    )
    server = serve()
    deadline = time.monotonic() + 30
    while not (listed := server.client.get("/batch/instances?definition=minutely").json()):
        assert time.monotonic() < deadline, "the scheduler fired no tick"
        time.sleep(0.1)
    doc = server.wait(listed[0]["id"], "succeeded")
    assert doc["trigger"] == "cron" and doc["scheduled_for"] is not None
    assert doc["steps"][0]["result"] == {"sum": 2}
    assert server.terminate() == 0
    assert "scheduler stopping" in "".join(server.log)


def test_without_the_api_extra_serve_names_it(workdir: Path) -> None:
    probe = (
        "import sys\n"
        "sys.modules['uvicorn'] = None  # as if the api extra were not installed\n"
        "from engine.cli import main\n"
        "sys.argv = ['engine', 'serve', 'defs']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=workdir, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "engine serve needs the api extra (uvicorn is missing)" in result.stderr
    assert "pip install 'engine[api]'" in result.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_cron_definition_needing_params_stops_the_start(workdir: Path, db_url: str) -> None:
    (workdir / "defs" / "sum.yaml").write_text('cron: "0 * * * *"\n' + SUM)
    result = engine(workdir, "serve", "defs", "--db", db_url, "--port", "0")
    assert result.returncode == 2
    assert "defs/sum.yaml: a cron run gets no params: params.a: Field required" in result.stderr


SCHEDULER_DIES = """
import engine.scheduler

def run(self, stop):
    raise RuntimeError("the scheduler thread dies")

engine.scheduler.Scheduler.run = run  # a bug the scheduler's own guards cannot catch
"""

BROKEN_CRON = """
import engine.cron

before = engine.cron.CronSchedule.before

def broken(self, moment):
    if self.zone.key == "Europe/Paris":
        raise RuntimeError("no tick in Paris")
    return before(self, moment)

engine.cron.CronSchedule.before = broken
"""


def every_second(workdir: Path, name: str, timezone: str = "UTC") -> None:
    (workdir / "defs" / f"{name}.yaml").write_text(
        f'name: {name}\ncron: "* * * * * *"\ntimezone: {timezone}\noverlap: allow\n'
        "steps:\n  - {id: add, runner: add, inputs: {a: 1, b: 1}}\n"
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_healthz_answers_503_once_the_scheduler_thread_died(serve: Any, workdir: Path) -> None:
    (workdir / "runners" / "dies.py").write_text(SCHEDULER_DIES)
    server = serve()
    deadline = time.monotonic() + 30
    while (answer := server.client.get("/healthz")).status_code == 200:
        assert time.monotonic() < deadline, answer.json()
        time.sleep(0.05)
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "unhealthy",
        "running": 0,
        "waiting": 0,
        "scheduler": {"alive": False, "last_round": None, "failing": []},
    }
    ran = server.client.post("/batch/run", json={"definition": "sum", "params": {"a": 1}})
    assert server.wait(ran.json()["instance_id"], "succeeded")["status"] == "succeeded"
    assert server.terminate() == 0
    assert "RuntimeError: the scheduler thread dies" in "".join(server.log)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_definition_whose_ticks_raise_is_listed_and_the_others_fire(
    serve: Any, workdir: Path
) -> None:
    (workdir / "runners" / "broken.py").write_text(BROKEN_CRON)
    every_second(workdir, "paris", "Europe/Paris")
    every_second(workdir, "utc")
    server = serve()
    deadline = time.monotonic() + 30
    while len(server.client.get("/batch/instances?definition=utc").json()) < 3:
        assert time.monotonic() < deadline, "the scheduler stopped firing"
        time.sleep(0.1)
    answer = server.client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json()["scheduler"]["failing"] == ["paris"]
    assert server.client.get("/batch/instances?definition=paris").json() == []
    assert server.terminate() == 0
    log = "".join(server.log)
    assert log.count("paris: round failed, retried each round: no tick in Paris") == 1, log
