"""The persisted rows (DESIGN section 5), on real SQLite and real PostgreSQL.

What a user relies on: every attempt is a row written when it starts and completed when it ends,
before anything that depends on it runs; definitions are versioned by content; timestamps are
timezone-aware; JSON survives the trip.
"""

from __future__ import annotations

import textwrap
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.service import BatchService
from engine.store import Store
from engine.store.tables import definitions, instances, step_results

pytestmark = pytest.mark.timeout(60)


def service(store, registry) -> BatchService:
    return BatchService(store, DirectDispatcher(registry))


def load(registry, text: str, file: str = "x.yaml"):
    return load_text(textwrap.dedent(text), file, registry)


def attempt_rows(store, instance_id) -> dict[tuple[str, int], Any]:
    """The step rows as the database holds them right now, by (step, attempt)."""
    with store.engine.connect() as conn:
        found = conn.execute(
            sa.select(step_results).where(step_results.c.batch_instance_id == instance_id)
        ).all()
    return {(r.step_key, r.attempt): r for r in found}


def instance_row(store, instance_id):
    with store.engine.connect() as conn:
        return conn.execute(sa.select(instances).where(instances.c.id == instance_id)).one()


def test_rows_are_written_when_attempts_start_and_complete_before_dependents_run(store, registry):
    seen: dict[str, Any] = {}

    @registry.handler("first")
    def first(inputs, ctx):
        row = attempt_rows(store, ctx.instance_id)[(ctx.step_id, ctx.attempt)]
        inst = instance_row(store, ctx.instance_id)
        seen["first"] = (row.status, row.finished_at, row.result_payload, row.started_at)
        seen["instance"] = (inst.status, inst.started_at, inst.finished_at)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return {"rows": 120}

    @registry.handler("second")
    def second(inputs, ctx):
        found = attempt_rows(store, ctx.instance_id)
        seen["second_own"] = found[("b", 1)].status
        seen["second_up"] = {
            key: (r.status, r.result_payload, r.finished_at is not None, r.error is not None)
            for key, r in found.items()
            if key[0] == "a"
        }
        return {"ok": True}

    view = service(store, registry).run(
        BatchService.prepare(
            load(
                registry,
                """
        name: durable
        steps:
          - {id: a, runner: first, retry: {maxAttempts: 2, delaySeconds: 0.01}}
          - {id: b, runner: second}
    """,
            ),
            {},
        )
    )
    assert view.status == "succeeded"
    status, finished_at, result, started_at = seen["first"]
    assert (status, finished_at, result) == ("running", None, None)
    assert started_at is not None and started_at.tzinfo is not None
    inst_status, inst_started, inst_finished = seen["instance"]
    assert inst_status == "running"
    assert inst_started is not None and inst_finished is None
    assert seen["second_own"] == "running"
    # the upstream's final attempt is durable, result included, before the dependent starts
    assert seen["second_up"] == {
        ("a", 1): ("failed", None, True, True),
        ("a", 2): ("succeeded", {"rows": 120}, True, False),
    }
    final = attempt_rows(store, view.id)
    assert {k: r.status for k, r in final.items()} == {
        ("a", 1): "failed",
        ("a", 2): "succeeded",
        ("b", 1): "succeeded",
    }
    assert final[("b", 1)].result_payload == {"ok": True}


def test_a_step_row_is_unique_per_instance_step_and_attempt(store, registry):
    registry.add("a", lambda inputs, ctx: 1)
    view = service(store, registry).run(
        BatchService.prepare(load(registry, "name: u\nsteps:\n  - id: a\n"), {})
    )
    duplicate = {
        "batch_instance_id": view.id,
        "step_key": "a",
        "attempt": 1,
        "status": "running",
        "created_at": datetime.now(UTC),
    }
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(sa.insert(step_results).values(duplicate))
    with store.engine.begin() as conn:  # another attempt number is a new row
        conn.execute(sa.insert(step_results).values({**duplicate, "attempt": 2}))
    assert set(attempt_rows(store, view.id)) == {("a", 1), ("a", 2)}


def test_every_attempt_and_every_skipped_step_is_a_row(store, registry):
    registry.add("never", lambda inputs, ctx: 1 / 0)
    registry.add("ok", lambda inputs, ctx: {"v": 1})
    view = service(store, registry).run(
        BatchService.prepare(
            load(
                registry,
                """
        name: rows
        steps:
          - id: a
            runner: never
            retry: {maxAttempts: 3, delaySeconds: 0.01}
            nextSteps: [b, {step: c, on: failure}]
          - {id: b, runner: ok}
          - {id: c, runner: ok}
    """,
            ),
            {},
        )
    )
    found = attempt_rows(store, view.id)
    assert sorted((k, r.status) for k, r in found.items()) == [
        (("a", 1), "failed"),
        (("a", 2), "failed"),
        (("a", 3), "failed"),
        (("b", 1), "skipped"),
        (("c", 1), "succeeded"),
    ]
    for (step, _), r in found.items():
        assert r.started_at is not None and r.finished_at is not None
        assert r.created_at is not None
        assert r.finished_at >= r.started_at
        if step == "a":
            assert "ZeroDivisionError" in r.error and "Traceback" in r.error
    # the view lists attempts in the order they started
    assert [(s.step, s.attempt) for s in view.steps] == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 1),
        ("c", 1),
    ]


def test_instance_row_goes_pending_running_ended_with_times(store, registry):
    registry.add("a", lambda inputs, ctx: 1)
    svc = service(store, registry)
    prepared = svc.prepare(load(registry, "name: life\nsteps:\n  - id: a\n"), {})
    instance_id = svc.start(prepared)
    row = instance_row(store, instance_id)
    assert (row.status, row.started_at, row.finished_at) == ("pending", None, None)
    assert row.trigger == "cli"
    view = svc.execute(prepared, instance_id)
    row = instance_row(store, instance_id)
    assert row.status == view.status == "succeeded"
    assert row.started_at is not None and row.finished_at is not None
    assert row.finished_at >= row.started_at
    assert row.error is None


def test_a_failed_instance_row_says_which_step_failed(store, registry):
    registry.add("bad", lambda inputs, ctx: 1 / 0)
    view = service(store, registry).run(
        BatchService.prepare(
            load(
                registry,
                """
        name: life
        steps:
          - {id: extract, runner: bad}
    """,
            ),
            {},
        )
    )
    row = instance_row(store, view.id)
    assert row.status == "failed"
    assert row.finished_at is not None
    assert "extract" in row.error


def test_definitions_are_stored_once_per_content_version(store, registry):
    registry.add("a", lambda inputs, ctx: 1)
    svc = service(store, registry)
    text_v1 = "name: versioned\nsteps:\n  - id: a\n"
    text_v2 = "name: versioned\ndescription: now documented\nsteps:\n  - id: a\n"
    first = svc.run(BatchService.prepare(load(registry, text_v1), {}))
    again = svc.run(BatchService.prepare(load(registry, text_v1, "elsewhere.yaml"), {}))
    changed = svc.run(BatchService.prepare(load(registry, text_v2), {}))
    assert first.version == again.version
    assert changed.version != first.version
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(definitions).order_by(definitions.c.id)).all()
        pointers = dict(conn.execute(sa.select(instances.c.id, instances.c.definition_id)).all())
    assert [(d.name, d.version) for d in stored] == [
        ("versioned", first.version),
        ("versioned", changed.version),
    ]
    assert [d.source for d in stored] == [text_v1, text_v2]
    assert stored[0].steps and stored[0].steps[0]["id"] == "a"
    # instances keep pointing at the version they ran, also after the file changed
    assert pointers[first.id] == pointers[again.id] == stored[0].id
    assert pointers[changed.id] == stored[1].id
    assert store.get_instance(first.id).version == first.version


def test_timestamps_are_timezone_aware_and_correct_utc(store, registry):
    registry.add("a", lambda inputs, ctx: 1)
    if store.engine.dialect.name == "postgresql":
        # a server session in another zone must not shift anything
        sa.event.listen(store.engine, "connect", _session_in_seoul)
        store.engine.dispose()
    before = datetime.now(UTC) - timedelta(seconds=1)
    view = service(store, registry).run(
        BatchService.prepare(load(registry, "name: tz\nsteps:\n  - id: a\n"), {})
    )
    after = datetime.now(UTC) + timedelta(seconds=1)
    stamps = [view.started_at, view.finished_at]
    stamps += [t for s in view.steps for t in (s.started_at, s.finished_at)]
    with store.engine.connect() as conn:
        for table in (definitions, instances, step_results):
            for row in conn.execute(sa.select(table)).mappings():
                stamps += [v for k, v in row.items() if isinstance(v, datetime)]
    assert len(stamps) >= 8
    for stamp in stamps:
        assert stamp.tzinfo is not None
        assert stamp.utcoffset() == timedelta(0)
        assert before <= stamp <= after
    assert view.to_json()["started_at"].endswith("+00:00")


def _session_in_seoul(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("SET TIME ZONE 'Asia/Seoul'")
    cursor.close()
    dbapi_connection.commit()


PAYLOADS = {
    "object": {
        "text": 'héllo ✓ 漢字 "quoted" \\ back',
        "int": 2**53 + 1,
        "neg": -7,
        "float": 0.1,
        "exp": 1.5e-10,
        "true": True,
        "false": False,
        "none": None,
        "empty": {},
        "list": [],
        "nested": {"a": [1, {"b": [None, "x"]}]},
    },
    "list": [1, "two", 3.0, [4], {"five": 5}],
    "string": "just text",
    "number": 42,
    "boolean": False,
}


def test_json_params_and_results_round_trip(store, db_url, registry):
    registry.add("emit", lambda inputs, ctx: PAYLOADS[inputs["kind"]])
    registry.add("echo", lambda inputs, ctx: {"params": ctx.params, "upstream": ctx.results})
    steps = "\n".join(
        f"  - {{id: {k}, runner: emit, inputs: {{kind: {k}}}, nextSteps: [echo]}}" for k in PAYLOADS
    )
    loaded = load(
        registry,
        f"""
name: json
params:
  cfg: {{type: object}}
  ids: {{type: array}}
  label: {{type: string}}
  ratio: {{type: number}}
steps:
{steps}
  - {{id: echo, runner: echo}}
""",
    )
    params = {
        "cfg": {"nested": {"k": ["v", 1, None]}, "ü": True},
        "ids": [3, 1, 2],
        "label": "naïve ✓",
        "ratio": 0.25,
    }
    view = service(store, registry).run(BatchService.prepare(loaded, params))
    assert view.status == "succeeded", [s.error for s in view.steps]
    # read back through a fresh store: nothing comes from memory
    fresh = Store(db_url)
    try:
        again = fresh.get_instance(view.id)
    finally:
        fresh.close()
    assert again.params == params
    results = {s.step: s.result for s in again.steps}
    for kind, payload in PAYLOADS.items():
        assert results[kind] == payload
        assert type(results[kind]) is type(payload)
    assert results["echo"] == {"params": params, "upstream": PAYLOADS}
    assert again.model_dump(mode="json") == view.model_dump(mode="json")


AWKWARD_TEXT = {
    # JSON allows "\u0000"; PostgreSQL's jsonb and text do not
    "nul": (
        "a\x00b",
        "the result contains a NUL character (\\u0000), which PostgreSQL cannot store",
    ),
    # what Python makes of an undecodable file name (surrogateescape); not UTF-8
    "surrogate": (
        b"caf\xe9.csv".decode("utf-8", "surrogateescape"),
        "the result contains text that is not valid Unicode (a lone surrogate)",
    ),
}


@pytest.mark.parametrize(("text", "error"), AWKWARD_TEXT.values(), ids=AWKWARD_TEXT.keys())
def test_a_result_the_database_cannot_hold_fails_the_step_on_both_databases_alike(
    store, registry, text, error
):
    registry.add("awkward", lambda inputs, ctx: {"s": text})
    registry.add("after", lambda inputs, ctx: {"after": True})
    view = service(store, registry).run(
        BatchService.prepare(
            load(
                registry,
                """
        name: awkward
        steps:
          - {id: a, runner: awkward, nextSteps: [{step: b, on: always}]}
          - {id: b, runner: after}
    """,
            ),
            {},
        )
    )
    a = next(s for s in view.steps if s.step == "a")
    assert (a.status, a.error) == ("failed", error)
    assert [s.status for s in view.steps if s.step == "b"] == ["succeeded"]
    assert all(s.status != "running" for s in view.steps)
    assert instance_row(store, view.id).status in ("succeeded", "failed")


@pytest.mark.parametrize("text", AWKWARD_TEXT.values(), ids=AWKWARD_TEXT.keys())
def test_an_error_message_with_awkward_text_is_still_persisted(store, registry, text):
    def read(inputs, ctx):
        raise OSError(f"cannot open data/{text}: no such file")

    registry.add("read", read)
    view = service(store, registry).run(
        BatchService.prepare(
            load(
                registry,
                """
        name: awkward
        steps:
          - {id: a, runner: read}
    """,
            ),
            {},
        )
    )
    (a,) = view.steps
    assert a.status == "failed"
    assert "OSError" in a.error and "cannot open data/" in a.error
    assert "Traceback" in a.error
    assert instance_row(store, view.id).status == "failed"


@pytest.mark.parametrize("number", [0.1, 1.0, -2.5e-8, 1e20, 1.5e300])
def test_a_float_result_comes_back_a_float(store, registry, number):
    registry.add("f", lambda inputs, ctx: {"x": number})
    view = service(store, registry).run(
        BatchService.prepare(load(registry, "name: f\nsteps:\n  - id: f\n"), {})
    )
    again = store.get_instance(view.id).steps[0].result["x"]
    assert again == number
    assert type(again) is float


def test_concurrent_attempts_each_get_their_own_row(store, registry):
    barrier = threading.Barrier(3, timeout=10)

    @registry.handler("meet")
    def meet(inputs, ctx):
        barrier.wait()
        return {"step": ctx.step_id}

    steps = "\n".join(f"  - {{id: s{i}, runner: meet, nextSteps: []}}" for i in range(6))
    view = service(store, registry).run(
        BatchService.prepare(load(registry, f"name: many\nconcurrency: 3\nsteps:\n{steps}\n"), {})
    )
    assert view.status == "succeeded"
    found = attempt_rows(store, view.id)
    assert sorted(found) == [(f"s{i}", 1) for i in range(6)]
    assert all(r.result_payload == {"step": k[0]} for k, r in found.items())
