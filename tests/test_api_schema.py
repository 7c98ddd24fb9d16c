"""schemathesis against `/openapi.json`: generated requests never get a 500, and every response
matches the schema. The example count is kept small so that the suite stays fast."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from engine.api import create_app
from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.registry import JobRegistry
from engine.service import BatchService
from engine.store import Store

SUM = """
name: sum
params:
  a: {type: integer, default: 1}
  tag: {type: string, enum: [x, y], default: x}
steps:
  - {id: add, runner: add, inputs: {a: "{{ params.a }}"}}
  - {id: show, runner: add, inputs: {a: 0}}
"""

TOKEN = "schema-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["open", "token"])
def api_schema(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    registry = JobRegistry()
    registry.add("add", lambda inputs, ctx: inputs["a"] + 1)
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('schema') / 'engine.db'}")
    dispatcher = DirectDispatcher(registry)
    service = BatchService(store, dispatcher)
    loaded = load_text(SUM, "sum.yaml", registry)
    app = create_app(
        service, {"sum": loaded}, registry, token=request.param, grace=5.0, host="testserver"
    )
    with TestClient(app, headers=AUTH) as client:
        for _ in range(3):
            assert client.post("/batch/run", json={"definition": "sum"}).status_code == 202
        app.state.engine.runner.drain(30)
        yield schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    dispatcher.close()
    store.close()


def test_the_api_keeps_its_schema(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 9, "every route is exercised"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers=AUTH)

        check()


def test_the_schema_is_served(tmp_path: Path) -> None:
    """Guards the fixture above: an empty schema would pass vacuously."""
    store = Store(f"sqlite:///{tmp_path / 'engine.db'}")
    registry = JobRegistry()
    app = create_app(
        BatchService(store, DirectDispatcher(registry)), {}, registry, host="testserver"
    )
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    assert len(list(loaded.get_all_operations())) == 9
    store.close()
