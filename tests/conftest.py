"""Shared fixtures: fresh registries, stores on real SQLite and PostgreSQL, Celery workers on real
Redis and RabbitMQ.

A service a test needs is real. When it is unreachable the test skips, except with
ENGINE_REQUIRE_SERVICES=1 (set by .ci/run), where it fails: CI must really run it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.registry import JobRegistry
from engine.store import Store

POSTGRES_URL = os.environ.get(
    "ENGINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BROKER_URLS = {
    "redis": os.environ.get("ENGINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "amqp": os.environ.get("ENGINE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}
"""Celery brokers by kind; the defaults are for local convenience only."""
REQUIRE_SERVICES = os.environ.get("ENGINE_REQUIRE_SERVICES") == "1"
TESTS = Path(__file__).resolve().parent


def unavailable(service: str, reason: str) -> None:
    """Skip, or fail when services are required."""
    message = f"{service} unreachable: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (ENGINE_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def registry() -> JobRegistry:
    return JobRegistry()


def _postgres_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    admin = sa.create_engine(POSTGRES_URL)
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unavailable("PostgreSQL", str(exc).splitlines()[0])
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def rec(registry: JobRegistry) -> Any:
    """The recording runner `r` of the executor tests (`executing.Recorder`)."""
    from executing import Recorder

    return Recorder(registry)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'engine.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'engine.db'}")
    yield store
    store.close()


def broker_url(kind: str) -> str:
    """The test broker of `kind` (redis or amqp), once it answers."""
    from engine.dispatch.celery_app import check_broker, make_app
    from engine.errors import DispatchError

    app = make_app(BROKER_URLS[kind])
    try:
        check_broker(app)
    except DispatchError as exc:
        unavailable({"redis": "Redis", "amqp": "RabbitMQ"}[kind], str(exc))
    finally:
        app.close()
    return BROKER_URLS[kind]


class Workers:
    """`engine worker` subprocesses on one broker, each in its own process group (the worker and
    its pool), all stopped and reaped by `stop`."""

    def __init__(self, broker: str, logs: Path, **env: str) -> None:
        self.broker = broker
        self.logs = logs
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, queues: str, concurrency: int = 2, *options: str) -> None:
        env = {**os.environ, "ENGINE_BROKER_URL": self.broker, "ENGINE_TEST_WORKER": name}
        env.pop("ENGINE_RUNNERS", None)
        command = [str(Path(sys.executable).with_name("engine")), "worker", *options]
        command += ["--queues", queues, "--concurrency", str(concurrency)]
        command += ["--runners", str(TESTS / "worker_runners.py")]
        with open(self.logs / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                command,
                env={**env, **self.env},
                cwd=self.logs,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every worker consumes (Celery logs `ready.`)."""
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            while b" ready." not in (self.logs / f"{name}.log").read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"worker {name} did not start:\n{self.log(name)}")
                time.sleep(0.1)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def kill(self, name: str) -> None:
        """SIGKILL a worker and its pool at once, as when its machine dies."""
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            with contextlib.suppress(ProcessLookupError):  # pool processes left by their parent
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def session_queue() -> str:
    """A queue name of this test session's own: parallel sessions on one broker do not meet."""
    return "engine-test-" + uuid.uuid4().hex[:10]


def force(store: Store, instance_id: int, **values: object) -> None:
    """Write raw columns of an instance: the states a crash or another process leaves."""
    from engine.store.tables import instances

    with store.engine.begin() as conn:
        conn.execute(sa.update(instances).where(instances.c.id == instance_id).values(values))


@pytest.fixture
def jobs(registry: JobRegistry) -> Any:
    """The steerable runners of the API tests (`api_client.Jobs`)."""
    from api_client import Jobs  # FastAPI is imported by the API tests only

    return Jobs(registry)


@pytest.fixture
def api(store: Store, registry: JobRegistry, jobs: Any) -> Iterator[Any]:
    """`api(token=..., max_instances=...)`: a TestClient of the API over `store`
    (`api_client.serving`)."""
    from api_client import serving

    yield from serving(store, registry, jobs)
