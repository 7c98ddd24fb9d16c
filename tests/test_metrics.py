"""Metrics as Prometheus scrapes them: a real `engine serve` over HTTP (runs, step attempts, the
token, cron ticks, recoveries) and a real `engine worker` on Redis; and that `engine run` never
imports prometheus_client."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import contract_runners
import httpx
import pytest
from conftest import Workers, broker_url, force
from prometheus_client.parser import text_string_to_metric_families
from served import Server

from engine.definition import load_text
from engine.registry import JobRegistry
from engine.service import BatchService
from engine.store import Store
from engine.store.types import utcnow

pytestmark = pytest.mark.timeout(120)

TOKEN = "metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

RUNNERS = """
import time
from pathlib import Path
from engine import job_handler

@job_handler("add")
def add(inputs, ctx):
    return {"sum": inputs["a"] + 1}

@job_handler("boom")
def boom(inputs, ctx):
    raise ValueError("no row for day 3")

@job_handler("flaky")
def flaky(inputs, ctx):
    if ctx.attempt < 2:
        raise RuntimeError("the first attempt fails")
    return ctx.attempt

@job_handler("nap")
def nap(inputs, ctx):
    time.sleep(inputs["seconds"])

@job_handler("region")
def region(inputs, ctx):
    return inputs["code"]

@job_handler("hold")
def hold(inputs, ctx):
    while not Path("go").exists():
        if ctx.cancel_event.wait(0.05):
            return "cancelled"
    return "went"
"""

DEFINITIONS = {
    "sum": """
        name: sum
        steps:
          - {id: add, runner: add, inputs: {a: 1}}
          - {id: again, runner: add, inputs: {a: "{{ steps.add.result.sum }}"}}
          - {id: never, runner: add, inputs: {a: 0}, condition: "steps.again.result.sum < 0"}
    """,
    "boom": """
        name: boom
        steps:
          - {id: boom, runner: boom}
    """,
    "flaky": """
        name: flaky
        steps:
          - {id: f, runner: flaky, retry: {maxAttempts: 2, delaySeconds: 0}}
    """,
    "regions": """
        name: regions
        concurrency: 2
        steps:
          - id: per
            runner: region
            map: {items: [{code: kr}, {code: jp}, {code: us}], as: r, key: "{{ r.code }}"}
            inputs: {code: "{{ r.code }}"}
    """,
    "pair": """
        name: pair
        concurrency: 1
        steps:
          - {id: a, runner: nap, inputs: {seconds: 0.2}, nextSteps: [c]}
          - {id: b, runner: nap, inputs: {seconds: 0}, nextSteps: [c]}
          - {id: c, runner: nap, inputs: {seconds: 0}}
    """,
    "tick": """
        name: tick
        cron: "* * * * * *"
        overlap: skip
        steps:
          - {id: hold, runner: hold}
    """,
}


class Scrape:
    """One scrape, parsed by prometheus_client's own parser: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples = [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def __call__(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when there is none (a counter never incremented)."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, (name, labels)
        return found[0] if found else 0.0

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample of `name` whose labels include `labels`."""
        return sum(
            s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()
        )

    def labels(self, name: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples if s.name == name]


def scrape(client: httpx.Client, url: str = "/metrics") -> Scrape:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return Scrape(response.text)


def until(read: Callable[[], Scrape], done: Callable[[Scrape], bool], what: str) -> Scrape:
    """Scrape until `done` holds: a counter is told after the state it counts is stored."""
    deadline = time.monotonic() + 60
    while not done(scraped := read()):
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)
    return scraped


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `engine serve` with a token, for the module; its cron definition ticks every second
    and holds its instance until `go` exists, so that the ticks after the first are skipped."""
    workdir = tmp_path_factory.mktemp("metrics")
    (workdir / "runners").mkdir()
    (workdir / "runners" / "jobs.py").write_text(RUNNERS)
    (workdir / "defs").mkdir()
    for name, text in DEFINITIONS.items():
        (workdir / "defs" / f"{name}.yaml").write_text(textwrap.dedent(text))
    db = f"sqlite:///{workdir / 'engine.db'}"
    env = {"ENGINE_API_TOKEN": TOKEN, "ENGINE_LEASE_SECONDS": "4"}  # recovery looks each second
    served = Server(workdir, db, env=env)
    served.client.headers.update(AUTH)
    yield served
    (workdir / "go").touch()
    assert served.terminate() == 0, "".join(served.log)


def test_metrics_need_the_token(server: Server) -> None:
    bare = httpx.get(f"{server.url}/metrics")
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "engine_instances_started_total" not in wrong.text
    assert scrape(server.client).labels("process_resident_memory_bytes") == [{}]
    asked = {"Accept": "application/openmetrics-text; version=1.0.0"}
    openmetrics = server.client.get("/metrics", headers=asked)
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


def test_runs_and_step_attempts_are_counted_by_definition_step_and_outcome(
    server: Server,
) -> None:
    names = ["sum", "boom", "flaky", "regions", "pair"]
    ids = [server.client.post("/batch/run", json={"definition": n}).json() for n in names]
    for accepted in ids:
        server.wait(accepted["instance_id"], "succeeded", "failed")
    m = until(
        lambda: scrape(server.client),
        lambda m: sum(m.total("engine_instances_ended_total", definition=n) for n in names) == 5,
        "counted every end",
    )

    for name in names:
        assert m("engine_instances_started_total", definition=name, trigger="http") == 1
        assert m("engine_steps_running", definition=name) == 0
    ended = "engine_instances_ended_total"
    assert m(ended, definition="sum", status="succeeded") == 1
    assert m(ended, definition="boom", status="failed") == 1
    assert m(ended, definition="flaky", status="succeeded") == 1
    assert m("engine_instance_duration_seconds_count", definition="boom", status="failed") == 1

    attempts = "engine_step_attempts_total"
    durations = "engine_step_attempt_duration_seconds_count"
    for step in ("add", "again"):
        assert m(attempts, definition="sum", step=step, outcome="succeeded") == 1
        assert m(durations, definition="sum", step=step, outcome="succeeded") == 1
    assert m(attempts, definition="sum", step="never", outcome="skipped") == 1
    assert m(durations, definition="sum", step="never", outcome="skipped") == 0, "never ran"
    assert m(attempts, definition="boom", step="boom", outcome="failed") == 1
    assert m(attempts, definition="flaky", step="f", outcome="failed") == 1, "the retried one"
    assert m(attempts, definition="flaky", step="f", outcome="succeeded") == 1
    bounded = m("engine_step_attempt_duration_seconds_bucket", definition="flaky", step="f")
    assert bounded == 0, "a bucket has its `le`: no sample without it"
    assert m(attempts, definition="regions", step="per", outcome="succeeded") == 3, "its items"
    assert all(set(labels) == {"definition", "step", "outcome"} for labels in m.labels(attempts))

    waits = "engine_step_slot_wait_seconds"
    assert m(f"{waits}_count", definition="pair") == 3
    assert m(f"{waits}_sum", definition="pair") >= 0.2, "b waited while a napped"
    assert m(f"{waits}_bucket", definition="pair", le="+Inf") == 3


def test_cron_ticks_claimed_and_skipped_by_overlap_are_counted(server: Server) -> None:
    m = until(
        lambda: scrape(server.client),
        lambda m: m("engine_ticks_skipped_total", definition="tick", reason="overlap") >= 2,
        "skipped a tick by overlap",
    )
    assert m("engine_ticks_claimed_total", definition="tick") == 1, "held: one instance"
    assert m("engine_instances_started_total", definition="tick", trigger="cron") == 1
    assert m("engine_steps_running", definition="tick") == 1


def test_recoveries_are_counted(server: Server) -> None:
    """An instance whose creator died while it was pending is started; one abandoned while
    running is resumed: both by the server's recovery, which needs only their stored version."""
    store = Store(server.db)
    try:
        service = BatchService(store)
        registry = JobRegistry()
        registry.add("add", lambda inputs, ctx: None)
        text = textwrap.dedent(DEFINITIONS["sum"]).replace("name: sum", "name: orphans")
        loaded = load_text(text, "orphans.yaml", registry)
        gone = utcnow() - timedelta(minutes=1)
        pending = service.start(BatchService.prepare(loaded, {}))
        force(store, pending, lease_expires_at=gone)
        running = service.start(BatchService.prepare(loaded, {}))
        force(store, running, status="running", lease_owner="dead", lease_expires_at=gone)
        for instance_id in (pending, running):
            server.wait(instance_id, "succeeded")
    finally:
        store.close()
    m = until(
        lambda: scrape(server.client),
        lambda m: m("engine_instances_ended_total", definition="orphans", status="succeeded") == 2,
        "counted both ends",
    )
    assert m("engine_instances_started_total", definition="orphans", trigger="cli") == 1
    assert m("engine_instances_started_total", definition="orphans", trigger="resume") == 1
    assert m("engine_recoveries_total", outcome="started") == 1
    assert m("engine_recoveries_total", outcome="resumed") == 1
    assert m("engine_recoveries_total", outcome="given_up") == 0


@pytest.fixture
def worker(tmp_path: Path, session_queue: str) -> Iterator[tuple[Workers, str]]:
    workers = Workers(broker_url("redis"), tmp_path)
    queue = f"{session_queue}-metrics"
    try:
        workers.start("metered", queue, 2, "--metrics-port", "0")
        workers.wait_ready()
        yield workers, queue
    finally:
        workers.stop()
    assert workers.procs["metered"].returncode == 0, workers.log("metered")


def test_a_worker_serves_the_attempts_it_ran_on_its_port(
    worker: tuple[Workers, str], sqlite_store: Store
) -> None:
    from engine.dispatch.celery import CeleryDispatcher

    workers, queue = worker
    served = re.search(r"serving this worker's metrics on (http://\S+)", workers.log("metered"))
    assert served is not None, workers.log("metered")
    registry = contract_runners.register(JobRegistry())
    text = f"""
        name: remote
        concurrency: 3
        defaults: {{queue: {queue}}}
        steps:
          - {{id: a, runner: echo, nextSteps: [c]}}
          - {{id: b, runner: echo, nextSteps: [c]}}
          - {{id: c, runner: flaky, inputs: {{succeed_on: 2}}, retry: {{maxAttempts: 2}}}}
    """
    loaded = load_text(textwrap.dedent(text), "remote.yaml", registry)
    dispatcher = CeleryDispatcher(registry, broker=workers.broker)
    try:
        view = BatchService(sqlite_store, dispatcher).run(BatchService.prepare(loaded, {}))
    finally:
        dispatcher.close()
    assert view.status == "succeeded"

    with httpx.Client(timeout=10) as client:
        m = scrape(client, served.group(1))
    count = "engine_worker_attempt_duration_seconds_count"
    assert m(count, runner="echo", outcome="succeeded") == 2, "a and b, in any pool process"
    assert m(count, runner="flaky", outcome="failed") == 1
    assert m(count, runner="flaky", outcome="succeeded") == 1
    assert m("engine_worker_attempt_duration_seconds_sum", runner="echo", outcome="succeeded") > 0


def test_a_taken_metrics_port_stops_the_worker_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(Path(sys.executable).with_name("engine")), "worker", "--metrics-port", str(port)],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "ENGINE_BROKER_URL": "redis://127.0.0.1:1/0"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"Error: cannot serve metrics on 127.0.0.1:{port}: " in done.stderr
    assert "Traceback" not in done.stderr


def test_only_processes_that_serve_metrics_import_prometheus_client(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("name: x\nsteps:\n  - {id: a, runner: greet}\n")
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "r.py").write_text(
        "from engine import job_handler\njob_handler('greet')(lambda inputs, ctx: 1)\n"
    )
    probe = (
        "import sys\nfrom engine.cli import main\nsys.argv = ['engine', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('LOADED', 'prometheus_client' in sys.modules)\n"
    )
    db = f"sqlite:///{tmp_path / 'e.db'}"
    for args in (["validate", "x.yaml"], ["run", "x.yaml", "--db", db]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], cwd=tmp_path, capture_output=True, text=True
        )
        assert "LOADED False" in done.stdout, (args, done.stdout, done.stderr)
