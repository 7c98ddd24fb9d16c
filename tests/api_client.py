"""The in-process HTTP API of the API tests: three definitions, runners a test steers, and a
factory of TestClients (the `api` and `jobs` fixtures of conftest.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.testclient import TestClient

from engine.api import create_app
from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.registry import JobRegistry
from engine.service import BatchService
from engine.store import Store

SUM = """
name: sum
params:
  a: {type: integer}
  b: {type: integer, default: 2}
steps:
  - {id: add, runner: add, inputs: {a: "{{ params.a }}", b: "{{ params.b }}"}}
  - {id: double, runner: double, inputs: {x: "{{ steps.add.result }}"}}
"""

GATE = """
name: gate
steps:
  - {id: wait, runner: gate}
"""

FLAKY = """
name: flaky
steps:
  - {id: first, runner: add, inputs: {a: 1, b: 1}}
  - {id: maybe, runner: maybe}
"""


class Jobs:
    """Runners whose behaviour a test steers: `gate` blocks until opened (or cancelled)."""

    def __init__(self, registry: JobRegistry) -> None:
        self.opened = threading.Event()
        self.entered = threading.Semaphore(0)
        self.fail = True
        registry.add("add", lambda inputs, ctx: inputs["a"] + inputs["b"])
        registry.add("double", lambda inputs, ctx: inputs["x"] * 2)
        registry.add("gate", self.gate)
        registry.add("maybe", self.maybe)

    def gate(self, inputs: dict[str, Any], ctx: Any) -> str:
        self.entered.release()
        while not self.opened.wait(0.05):
            if ctx.cancelled:
                return "cancelled"
        return "opened"

    def maybe(self, inputs: dict[str, Any], ctx: Any) -> str:
        if self.fail:
            raise RuntimeError("not yet")
        return "fine"


Factory = Callable[..., TestClient]


def serving(store: Store, registry: JobRegistry, jobs: Jobs) -> Iterator[Factory]:
    """The `api` fixture: `api(token=..., max_instances=...)` starts the API over `store` and
    returns a client; every one is stopped at the end."""
    dispatcher = DirectDispatcher(registry)
    clients: list[TestClient] = []

    def start(**options: Any) -> TestClient:
        definitions = {
            d.name: d
            for d in (
                load_text(text, f"{name}.yaml", registry)
                for name, text in [("sum", SUM), ("gate", GATE), ("flaky", FLAKY)]
            )
        }
        options.setdefault("grace", 5.0)
        options.setdefault("host", "testserver")  # the TestClient's Host
        app = create_app(BatchService(store, dispatcher), definitions, registry, **options)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    jobs.opened.set()
    for client in clients:
        client.__exit__(None, None, None)
    dispatcher.close()


def wait_for(client: TestClient, instance_id: int, *statuses: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        doc = client.get(f"/batch/instances/{instance_id}").json()
        if doc["status"] in statuses:
            return doc
        assert time.monotonic() < deadline, f"instance {instance_id} stayed {doc['status']}"
        time.sleep(0.02)
