"""What only the Celery dispatcher has: queues, lost workers, unreachable brokers, the optional
install, and `engine worker` itself. The semantics it shares with the direct dispatcher are in
test_dispatch_contract.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import contract_runners
import pytest
from conftest import Workers, broker_url

from engine.definition import load_text
from engine.dispatch import resolve_dispatcher
from engine.errors import DispatchError
from engine.registry import JobRegistry
from engine.service import BatchService

pytestmark = pytest.mark.timeout(120)

ENGINE = str(Path(sys.executable).with_name("engine"))
UNREACHABLE = {"redis": "redis://127.0.0.1:1/0", "amqp": "amqp://guest:guest@127.0.0.1:1//"}
"""Nothing listens on port 1."""


def registry() -> JobRegistry:
    return contract_runners.register(JobRegistry())


def run(store: Any, broker: str, yaml_text: str, **options: Any) -> Any:
    from engine.dispatch.celery import CeleryDispatcher

    reg = registry()
    loaded = load_text(textwrap.dedent(yaml_text), "celery.yaml", reg)
    dispatcher = CeleryDispatcher(reg, broker=broker, **options)
    try:
        return BatchService(store, dispatcher).run(BatchService.prepare(loaded, {}))
    finally:
        dispatcher.close()


def engine(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return subprocess.run(
        [ENGINE, *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def _workers(kind: str, queue: str, logs: Path) -> Iterator[Workers]:
    """Started once for the module: `plain` on `queue`, `both` on it and `queue-other`, and `solo`
    with one process on `queue-solo`. SIGTERM must stop each cleanly."""
    workers = Workers(broker_url(kind), logs)
    try:
        workers.start("plain", queue)
        workers.start("both", f"{queue},{queue}-other")
        workers.start("solo", f"{queue}-solo", concurrency=1)
        workers.wait_ready()
        yield workers
    finally:
        workers.stop()
    for name, proc in workers.procs.items():
        assert proc.returncode == 0, workers.log(name)


@pytest.fixture(scope="module")
def redis_workers(
    session_queue: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    yield from _workers("redis", f"{session_queue}-c", tmp_path_factory.mktemp("redis-workers"))


@pytest.fixture(scope="module")
def amqp_workers(session_queue: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    yield from _workers("amqp", f"{session_queue}-c", tmp_path_factory.mktemp("amqp-workers"))


def test_a_step_runs_only_on_workers_listening_on_its_queue(
    sqlite_store, redis_workers, session_queue
):
    queue = f"{session_queue}-c"
    steps = "".join(f"  - {{id: s{i}, runner: where, queue: {queue}-other}}\n" for i in range(4))
    text = f"name: queues\nconcurrency: 4\ndefaults: {{queue: {queue}}}\nsteps:\n"
    view = run(sqlite_store, redis_workers.broker, text + steps)
    assert view.status == "succeeded"
    assert {s.result["worker"] for s in view.steps} == {"both"}


@pytest.mark.parametrize("kind", ["redis", "amqp"])
@pytest.mark.parametrize("killed", ["worker", "process"])
def test_a_worker_killed_mid_step_leaves_every_step_ended_once(
    sqlite_store, session_queue, tmp_path, kind, killed
):
    """SIGKILL a whole worker (its pool too), or only the pool process running a step that has no
    timeout. A dead pool process fails its attempt at once; the retry runs anywhere. A dead
    worker's message: RabbitMQ redelivers it at once, and the attempt goes on on the other
    worker; Redis keeps it until its visibility timeout, so the attempt fails as lost once its
    heartbeat stops, and its retry runs on the other worker."""
    queue = f"{session_queue}-loss-{kind}"
    marker = tmp_path / "victim.started"
    workers = Workers(broker_url(kind), tmp_path)
    steps = "".join(
        f"  - {{id: s{i}, runner: sleep, inputs: {{seconds: 0.5}}, nextSteps: [end]}}\n"
        for i in range(6)
    )
    text = (
        f"name: loss\nconcurrency: 4\n"
        f"defaults: {{queue: {queue}, retry: {{maxAttempts: 2, delaySeconds: 0}}}}\nsteps:\n"
        f"  - {{id: victim, runner: block_once, inputs: {{marker: '{marker}'}},"
        " nextSteps: [end]}\n"
        f"{steps}  - {{id: end, runner: echo}}\n"
    )
    views: list[Any] = []
    try:
        workers.start("a", queue)
        workers.start("b", queue)
        workers.wait_ready()
        runner = threading.Thread(
            target=lambda: views.append(run(sqlite_store, workers.broker, text, lost_after=4))
        )
        runner.start()
        for _ in range(300):
            if marker.exists() and marker.read_text():
                break
            threading.Event().wait(0.1)
        victim_worker, victim_pid = marker.read_text().split()
        if killed == "worker":
            workers.kill(victim_worker)
        else:
            os.kill(int(victim_pid), signal.SIGKILL)
        runner.join(timeout=90)
    finally:
        workers.stop()
    assert not runner.is_alive() and views
    view = views[0]
    assert view.status == "succeeded"
    by_step: dict[str, list[Any]] = {}
    for row in view.steps:
        by_step.setdefault(row.step, []).append(row)
    assert set(by_step) == {"victim", "end", *(f"s{i}" for i in range(6))}
    for step, rows in by_step.items():
        assert [r.status for r in rows].count("succeeded") == 1, step
        assert rows[-1].status == "succeeded"
        assert [r.attempt for r in rows] == list(range(1, len(rows) + 1))
        for failed in rows[:-1]:
            assert failed.error.startswith("worker lost:"), failed.error
    assert by_step["victim"][-1].result == {"blocked": False}
    expected = ["succeeded"] if (kind, killed) == ("amqp", "worker") else ["failed", "succeeded"]
    assert [r.status for r in by_step["victim"]] == expected


def test_a_timed_out_attempt_is_terminated_on_its_worker(
    sqlite_store, redis_workers, session_queue
):
    """`solo` has one process: the step after the timed-out one can only run there once the
    timed-out runner (sleeping 60 s) has been stopped."""
    view = run(
        sqlite_store,
        redis_workers.broker,
        f"""
        name: terminate
        defaults: {{queue: {session_queue}-c-solo}}
        steps:
          - id: slow
            runner: sleep
            inputs: {{seconds: 60}}
            timeoutSeconds: 1
            nextSteps: [{{step: after, on: always}}]
          - {{id: after, runner: echo}}
        """,
    )
    assert [(s.step, s.status) for s in view.steps] == [("slow", "failed"), ("after", "succeeded")]
    assert "Terminating" in redis_workers.log("solo")


@pytest.mark.parametrize("kind", ["redis", "amqp"])
def test_a_runner_that_kills_its_process_fails_its_attempt(
    sqlite_store, session_queue, kind, request
):
    """Not put back on the queue: it would kill one process after another."""
    workers: Workers = request.getfixturevalue(f"{kind}_workers")
    view = run(
        sqlite_store,
        workers.broker,
        f"name: suicide\nsteps:\n  - {{id: s, runner: kills_itself, queue: {session_queue}-c}}",
    )
    assert view.status == "failed"
    [row] = view.steps
    assert row.error.startswith("worker lost: Worker exited prematurely: signal 9 (SIGKILL)")


@pytest.mark.parametrize("kind", ["redis", "amqp"])
def test_an_unreachable_broker_is_a_dispatch_error_not_a_hang(kind):
    from engine.dispatch.celery import CeleryDispatcher

    with pytest.raises(DispatchError, match=r"the broker at .*:1/.* is unreachable"):
        CeleryDispatcher(JobRegistry(), broker=UNREACHABLE[kind])


def test_an_unreachable_result_backend_is_a_dispatch_error_too():
    from engine.dispatch.celery import CeleryDispatcher

    with pytest.raises(DispatchError, match=r"the result backend at .*:1/0 is unreachable"):
        CeleryDispatcher(JobRegistry(), broker=broker_url("redis"), backend=UNREACHABLE["redis"])


def test_engine_run_with_an_unreachable_broker_says_so_and_creates_no_instance(tmp_path):
    (tmp_path / "x.yaml").write_text("name: x\nsteps:\n  - {id: a, runner: greet}\n")
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "r.py").write_text(
        "from engine import job_handler\njob_handler('greet')(lambda inputs, ctx: 1)\n"
    )
    env = {"ENGINE_DISPATCHER": "celery", "ENGINE_BROKER_URL": UNREACHABLE["redis"]}
    ran = engine("run", "x.yaml", cwd=tmp_path, **env)
    assert ran.returncode == 1
    assert ran.stderr.startswith("error: the broker at redis://127.0.0.1:1/0 is unreachable")
    assert "Traceback" not in ran.stderr
    listed = engine("runs", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"


def test_engine_worker_with_an_unreachable_broker_says_so(tmp_path):
    ran = engine("worker", cwd=tmp_path, ENGINE_BROKER_URL=UNREACHABLE["amqp"])
    assert ran.returncode == 1
    assert "error: the broker at amqp://guest:**@127.0.0.1:1// is unreachable" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_the_celery_dispatcher_needs_a_broker_url(monkeypatch):
    monkeypatch.delenv("ENGINE_BROKER_URL", raising=False)
    with pytest.raises(DispatchError, match="set ENGINE_BROKER_URL"):
        resolve_dispatcher("celery", JobRegistry())
    monkeypatch.setenv("ENGINE_BROKER_URL", "http://127.0.0.1/")
    with pytest.raises(DispatchError, match=r"must be a redis:// or amqp:// URL"):
        resolve_dispatcher("celery", JobRegistry())


def test_without_celery_installed_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "celery", None)  # what `import celery` sees when missing
    monkeypatch.setenv("ENGINE_BROKER_URL", UNREACHABLE["redis"])
    with pytest.raises(DispatchError, match=r"pip install 'engine\[celery\]'"):
        resolve_dispatcher("celery", JobRegistry())


def test_engine_run_with_the_direct_dispatcher_imports_no_celery(tmp_path):
    (tmp_path / "x.yaml").write_text("name: x\nsteps:\n  - {id: a, runner: greet}\n")
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "r.py").write_text(
        "from engine import job_handler\njob_handler('greet')(lambda inputs, ctx: 1)\n"
    )
    script = (
        "import sys\nfrom engine.cli import main\nsys.argv = ['engine', 'run', 'x.yaml']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu')]\n"
        "assert not loaded, loaded\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    ran = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=clean, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr


def test_a_redelivered_attempt_waits_for_its_first_run_and_is_dropped_when_it_ends():
    """What a worker does with a message that Redis gave out again after its visibility timeout
    while its first run still beats: it must not run it a second time."""
    from engine.dispatch.celery_app import _may_run, make_app

    app = make_app(broker_url("redis"))
    backend, task_id = app.backend, f"test-{os.getpid()}-{threading.get_ident()}"
    try:
        assert _may_run(backend, task_id)  # never started
        backend.store_result(task_id, {"hostname": "w", "pid": 1, "beat": 1.0}, "STARTED")
        verdicts: list[bool] = []
        waiter = threading.Thread(target=lambda: verdicts.append(_may_run(backend, task_id)))
        waiter.start()
        for beat in (2.0, 3.0):  # the first run goes on beating
            waiter.join(timeout=1.5)
            assert waiter.is_alive()
            backend.store_result(task_id, {"hostname": "w", "pid": 1, "beat": beat}, "STARTED")
        backend.store_result(task_id, {"ok": True, "result": 1, "error": None}, "SUCCESS")
        waiter.join(timeout=10)
        assert verdicts == [False]
    finally:
        backend.forget(task_id)
        app.close()
