"""Secret params (`secret: true`): the value given when a run starts reaches the runner through
`{{ params.token }}` and `ctx.params`, and is written nowhere in plain text: not in the database
(SQLite's file, every PostgreSQL table), a log line, an error, a result, the broker, or any CLI or
API output, whatever the runner does with it; with ENGINE_PARAMS_KEY it is kept sealed, so that a
resume runs with it."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import TESTS, Workers, broker_url, force
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from locating import at, problems, where, yaml

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.errors import ParamsError
from engine.registry import JobRegistry
from engine.secret_params import SecretParamsLost
from engine.service import BatchService
from engine.store import Store
from engine.store.types import utcnow

ENGINE = str(Path(sys.executable).parent / "engine")
VALUE = "hunter2-s3cr3t-param"
KEY = Fernet.generate_key().decode()
SECRET = """
name: secret
params:
  token: {type: string, secret: true}
  day: {type: string, default: "2026-11-26"}
steps:
  - {id: a, runner: leak_param, inputs: {header: "Bearer {{ params.token }}", seen: SEEN}}
  - id: b
    runner: leak_param
    inputs: {header: "Bearer {{ params.token }}", failOnce: ONCE, seen: SEEN_B}
  - {id: c, runner: plain, nextSteps: []}
"""
"""Three roots (a step declares nextSteps, none has any): each runs whatever the others do."""


def definition(tmp_path: Path, text: str = SECRET, queue: str | None = None) -> str:
    text = textwrap.dedent(text).replace("SEEN_B", str(tmp_path / "seen_b"))
    text = text.replace("SEEN", str(tmp_path / "seen"))
    text = text.replace("ONCE", str(tmp_path / "once"))
    if queue:
        text = text.replace("steps:", f"defaults: {{queue: {queue}}}\nsteps:")
    (tmp_path / "secret.yaml").write_text(text)
    return "secret.yaml"


def engine(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    runners = (
        ["--runners", str(TESTS / "secret_runners.py")] if args[0] in ("run", "resume") else []
    )
    return subprocess.run(
        [ENGINE, *args, *runners],
        cwd=tmp_path,
        env={**clean, "ENGINE_DATABASE_URL": f"sqlite:///{tmp_path / 'engine.db'}", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def forms(value: str) -> list[str]:
    """The value, and as JSON or a Python repr would escape it: a leak in any form counts."""
    return list({value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]})


def leaks(value: str, tmp_path: Path, outputs: list[str]) -> list[str]:
    """Where the value appears: the SQLite files, and each output given."""
    found = [
        p.name
        for p in tmp_path.glob("engine.db*")
        for form in forms(value)
        if form.encode() in p.read_bytes()
    ]
    return found + [
        f"output {i}" for i, text in enumerate(outputs) for f in forms(value) if f in text
    ]


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# -- the CLI, on SQLite -----------------------------------------------------------------------


@pytest.mark.parametrize("dispatcher", ["direct", "process"])
def test_the_value_reaches_the_runner_and_is_masked_everywhere_it_would_appear(
    tmp_path, dispatcher
):
    file = definition(tmp_path)
    env = {"ENGINE_PARAMS_KEY": KEY, "ENGINE_DISPATCHER": dispatcher}
    ran = engine(tmp_path, "run", file, "-p", f"token={VALUE}", "--json", **env)
    assert ran.returncode == 1, ran.stderr
    doc = json.loads(ran.stdout)
    assert doc["params"] == {"token": "***", "day": "2026-11-26"}
    a, b, c = doc["steps"]
    assert a["result"] == {
        "echo": "***",
        "***": "as a key",
        "nested": ["Bearer ***"],
        "day": "2026-11-26",
    }
    assert b["error"].startswith("RuntimeError: failing with '***'")
    assert c["result"] == {"day": "2026-11-26"}
    assert (tmp_path / "seen").read_text() == digest(VALUE), "the runner had the value"

    number = str(doc["id"])
    outputs = [ran.stdout, ran.stderr]
    for args in (
        ("runs", "show", number),
        ("runs", "show", number, "--json"),
        ("runs", "list", "--json"),
        ("runs", "list"),
        ("logs", number),
        ("logs", number, "--json"),
        ("run", file, "-p", f"token={VALUE}", "--dry-run", "--json"),
        ("run", file, "-p", f"token={VALUE}", "--dry-run"),
    ):
        shown = engine(tmp_path, *args, **env)
        assert shown.returncode == 0, (args, shown.stderr)
        outputs += [shown.stdout, shown.stderr]
    logs = engine(tmp_path, "logs", number, "--json").stdout.splitlines()
    assert [json.loads(line)["message"] for line in logs][:3] == [
        "printing *** '***' \"***\"",
        "to stderr Bearer ***",
        "logging *** {'token': '***'}",
    ]

    resumed = engine(tmp_path, "resume", number, "--json", **env)
    assert resumed.returncode == 0, resumed.stderr
    assert [s["status"] for s in json.loads(resumed.stdout)["steps"]][-1] == "succeeded"
    outputs += [resumed.stdout, resumed.stderr]
    assert leaks(VALUE, tmp_path, outputs) == []
    sealed = sa.create_engine(f"sqlite:///{tmp_path / 'engine.db'}")
    with sealed.connect() as conn:
        token = conn.execute(sa.text("SELECT sealed_params FROM batch_instance")).scalar()
    sealed.dispose()
    assert json.loads(Fernet(KEY).decrypt(token.encode())) == {"token": VALUE}


def test_a_resume_with_the_key_runs_with_the_value(tmp_path):
    """While rotating, a new key listed first seals, the old one after it still unseals."""
    file = definition(tmp_path)
    ran = engine(tmp_path, "run", file, "-p", f"token={VALUE}", ENGINE_PARAMS_KEY=KEY)
    assert ran.returncode == 1
    (tmp_path / "seen_b").unlink()
    rotated = f"{Fernet.generate_key().decode()},{KEY}"
    resumed = engine(tmp_path, "resume", "1", "--json", ENGINE_PARAMS_KEY=rotated)
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert [(s["step"], s["attempt"], s["status"]) for s in doc["steps"]] == [
        ("a", 1, "succeeded"),
        ("b", 1, "failed"),
        ("c", 1, "succeeded"),
        ("b", 2, "succeeded"),
    ]
    assert (tmp_path / "seen_b").read_text() == digest(VALUE), "the resumed runner had it"
    assert doc["steps"][-1]["result"]["echo"] == "***"
    assert leaks(VALUE, tmp_path, [resumed.stdout, resumed.stderr]) == []


@pytest.mark.parametrize(
    ("started", "resumed", "says"),
    [
        (
            {},
            {"ENGINE_PARAMS_KEY": KEY},
            "instance 1 cannot run again: its secret param 'token' was not kept, as "
            "ENGINE_PARAMS_KEY was not set when it started (ENGINE_PARAMS_KEY keeps secret "
            "params, sealed, for resume and recovery); start a new run instead",
        ),
        (
            {"ENGINE_PARAMS_KEY": KEY},
            {},
            "instance 1 cannot run again here: its secret param 'token' is sealed, and this "
            "process has no ENGINE_PARAMS_KEY to unseal them: set it to the key that sealed them",
        ),
        (
            {"ENGINE_PARAMS_KEY": KEY},
            {"ENGINE_PARAMS_KEY": Fernet.generate_key().decode()},
            "instance 1 cannot run again here: its secret param 'token' is sealed, and this "
            "process has an ENGINE_PARAMS_KEY that is not the key which sealed them",
        ),
    ],
    ids=["not-kept", "no-key", "another-key"],
)
def test_a_resume_that_cannot_have_the_value_is_refused_and_changes_nothing(
    tmp_path, started, resumed, says
):
    file = definition(tmp_path)
    ran = engine(tmp_path, "run", file, "-p", f"token={VALUE}", "--json", **started)
    assert ran.returncode == 1
    before = engine(tmp_path, "runs", "show", "1", "--json").stdout
    refused = engine(tmp_path, "resume", "1", **resumed)
    assert refused.returncode == 2
    assert says in refused.stderr
    assert "Traceback" not in refused.stderr
    assert engine(tmp_path, "runs", "show", "1", "--json").stdout == before
    assert json.loads(before)["status"] == "failed"


@pytest.mark.parametrize("value", ["not-a-key", "A" * 44, f"{KEY},short"])
def test_a_bad_key_is_a_config_error_that_does_not_echo_it(tmp_path, value):
    file = definition(tmp_path)
    ran = engine(tmp_path, "run", file, "-p", f"token={VALUE}", ENGINE_PARAMS_KEY=value)
    assert ran.returncode == 2
    assert "ENGINE_PARAMS_KEY" in ran.stderr and "Fernet.generate_key()" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert value.split(",")[-1] not in ran.stderr and KEY not in ran.stderr
    assert (
        not (tmp_path / "engine.db").exists()
        or "secret" not in engine(tmp_path, "runs", "list", "--json").stdout
    )


def test_without_a_key_the_run_works_and_keeps_nothing(tmp_path):
    file = definition(tmp_path)
    ran = engine(tmp_path, "run", file, "-p", f"token={VALUE}", "--json")
    assert ran.returncode == 1
    assert [s["status"] for s in json.loads(ran.stdout)["steps"]] == [
        "succeeded",
        "failed",
        "succeeded",
    ]
    assert (tmp_path / "seen").read_text() == digest(VALUE)
    assert "note: ENGINE_PARAMS_KEY is not set, so the secret param 'token' is not" in ran.stderr
    store = Store(f"sqlite:///{tmp_path / 'engine.db'}")
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT sealed_params FROM batch_instance")).scalar() is None
    store.close()
    assert leaks(VALUE, tmp_path, [ran.stdout, ran.stderr]) == []


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "anchor", "says"),
    [
        ("{type: integer, secret: true}", "integer", "a secret param must be `type: string`"),
        ("{secret: true, type: object}", "object", "a secret param must be `type: string`"),
        ("{secret: true, default: hunter2}", "hunter2", "a secret param cannot have a default"),
        ('{secret: true, default: "{{ run.id }}"}', '"{{ run', "cannot have a default"),
        ("{secret: true, enum: [a, b]}", "[a, b]", "a secret param cannot have an enum"),
    ],
)
def test_a_secret_param_that_is_not_a_string_or_has_a_default_is_located(param, anchor, says):
    text = yaml(
        f"""
        name: x
        params:
          token: {param}
        steps:
          - {{id: a, inputs: {{t: "{{{{ params.token }}}}"}}}}
        """
    )
    [problem] = [p for p in problems(text) if says in p.message]
    assert where(problem) == at(text, anchor)
    if "default" in says:
        assert "{{ secrets.NAME }}" in problem.message


@pytest.mark.parametrize(
    ("where_", "anchor"),
    [
        ("condition: \"params.token == 'x'\"", '"params.token'),
        ('map: {items: "{{ [params.token] }}"}', '"{{ [params'),
        ('map: {items: [1], key: "{{ params.token }}"}', '"{{ params.token }}"'),
        ('nextSteps: [{step: a, condition: "params.token"}]', '"params.token"'),
    ],
)
def test_a_secret_param_outside_inputs_is_a_located_validation_error(where_, anchor):
    text = yaml(
        f"""
        name: x
        params:
          token: {{type: string, secret: true}}
        steps:
          - id: z
            {where_}
          - id: a
        """
    )
    [problem] = [p for p in problems(text) if "secret param 'token' may be used only" in p.message]
    assert where(problem) == at(text, anchor)


def test_a_cron_definition_with_a_required_secret_param_is_refused_as_any_required_param(
    registry,
):
    from engine.scheduler import schedulable

    text = "name: c\ncron: '0 2 * * *'\nparams:\n  token: {secret: true}\nsteps:\n  - id: a\n"
    with pytest.raises(ParamsError) as refused:
        schedulable([load_text(text, "c.yaml")])
    assert refused.value.errors == [
        "c.yaml: a cron run gets no params: params.token: Field required"
    ]


def test_the_schema_tells_editors_what_a_secret_param_may_be():
    from engine.definition.schema import json_schema

    param = json_schema()["$defs"]["Param"]
    assert param["properties"]["secret"]["type"] == "boolean"
    assert param["then"]["properties"]["type"] == {"const": "string"}


# -- in process: both databases, the API, recovery --------------------------------------------


def _registry() -> JobRegistry:
    import secret_runners

    registry = JobRegistry()
    for key in ("leak_param", "plain", "reads_param"):
        registry.add(key, getattr(secret_runners, key))
    return registry


def _every_row_as_text(store: Store) -> str:
    """Every row of every table, as the database itself renders it as text."""
    with store.engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        rows = []
        for table in tables:
            if store.engine.dialect.name == "postgresql":
                query = f'SELECT t::text FROM "{table}" t'
            else:  # SQLite keeps JSON as text already: each row's values joined
                query = f'SELECT * FROM "{table}"'
            rows += [" ".join(map(str, r)) for r in conn.execute(sa.text(query))]
    return "\n".join(rows)


def test_no_table_of_either_database_holds_the_value(store, tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_PARAMS_KEY", KEY)
    registry = _registry()
    loaded = load_text((tmp_path / definition(tmp_path)).read_text(), "s.yaml", registry)
    service = BatchService(store, DirectDispatcher(registry))
    done = service.run(BatchService.prepare(loaded, {"token": VALUE}))
    assert done.status == "failed"
    again = service.resume(done.id, registry)
    assert again.status == "succeeded"
    text = _every_row_as_text(store)
    assert "Bearer ***" in text and "sealed_params" not in text
    assert [f for f in forms(VALUE) if f in text] == []


@pytest.fixture
def served(store, monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from engine.api import create_app

    monkeypatch.setenv("ENGINE_PARAMS_KEY", KEY)
    registry = _registry()
    loaded = load_text((tmp_path / definition(tmp_path)).read_text(), "secret.yaml", registry)
    dispatcher = DirectDispatcher(registry)
    app = create_app(
        BatchService(store, dispatcher), {"secret": loaded}, registry, host="testserver"
    )
    with TestClient(app) as client:
        yield client
    dispatcher.close()


def test_no_api_response_holds_the_value(served, tmp_path):
    from api_client import wait_for

    outputs = []
    plan = served.post(
        "/batch/run?dry_run=true", json={"definition": "secret", "params": {"token": VALUE}}
    )
    assert plan.status_code == 200 and plan.json()["params"]["token"] == "***"
    for params in ({"token": VALUE, "nope": 1}, {"token": [VALUE]}, {"token": {"v": VALUE}}):
        refused = served.post("/batch/run", json={"definition": "secret", "params": params})
        assert refused.status_code == 422, refused.text
        outputs.append(refused.text)
    started = served.post("/batch/run", json={"definition": "secret", "params": {"token": VALUE}})
    number = started.json()["instance_id"]
    doc = wait_for(served, number, "failed")
    assert doc["params"] == {"token": "***", "day": "2026-11-26"}
    assert served.post(f"/batch/instances/{number}/resume").status_code == 202
    doc = wait_for(served, number, "succeeded")
    outputs += [plan.text, started.text, json.dumps(doc)]
    for path in (
        f"/batch/instances/{number}",
        "/batch/instances",
        f"/batch/instances/{number}/logs",
        "/definitions/secret",
    ):
        response = served.get(path)
        assert response.status_code == 200, path
        outputs.append(response.text)
    assert served.get("/definitions/secret").json()["params"]["token"]["secret"] is True
    assert "Bearer ***" in served.get(f"/batch/instances/{number}/logs").text
    assert [i for i, text in enumerate(outputs) for f in forms(VALUE) if f in text] == []


def test_recovery_fails_an_orphan_whose_value_was_not_kept_and_resumes_one_sealed(
    store, monkeypatch
):
    from engine.background import BackgroundRunner
    from engine.recovery import Recovery

    monkeypatch.setenv("ENGINE_LEASE_SECONDS", "1")
    registry = _registry()
    text = "name: r\nparams:\n  token: {secret: true}\nsteps:\n  - {id: a, runner: reads_param}\n"
    loaded = load_text(text, "r.yaml", registry)
    service = BatchService(store, DirectDispatcher(registry))
    lost = service.start(BatchService.prepare(loaded, {"token": VALUE}))
    monkeypatch.setenv("ENGINE_PARAMS_KEY", KEY)
    kept = service.start(BatchService.prepare(loaded, {"token": VALUE}))
    for number in (lost, kept):
        force(store, number, lease_expires_at=utcnow() - timedelta(seconds=1))
    runner = BackgroundRunner(service, max_instances=2)
    try:
        assert Recovery(runner, registry).adopt_orphans() == 1
        _until(lambda: store.get_instance(kept).status == "succeeded")
    finally:
        runner.stop(5)
    failed = store.get_instance(lost)
    assert failed.status == "failed"
    assert failed.error is not None and "its secret param 'token' was not kept" in failed.error
    assert store.get_instance(kept).steps[0].result == {"length": len(VALUE)}
    with pytest.raises(SecretParamsLost):
        service.resume(lost, registry)


def _until(condition: Any, seconds: float = 20) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    middle=st.text(
        st.characters(
            blacklist_categories=["Cs"], blacklist_characters="\x00\r\ue000\ue001\ue002\ue003"
        ),
        max_size=12,
    )
    | st.sampled_from(["<b>[red]x[/]</b>", '\\"\\u0041', "***", "a\nb\tc", "'\"", "{{ x }}"])
)
def test_random_values_never_appear_in_any_output(tmp_path, sqlite_store, middle):
    """Whatever the value holds (markup, JSON escapes, `***`, line breaks), no form of it is
    in the database, a view, a log line or a result."""
    registry = _registry()
    value = f"Qz7{middle}Jk9"
    service = BatchService(sqlite_store, DirectDispatcher(registry))
    loaded = load_text((tmp_path / definition(tmp_path)).read_text(), "s.yaml", registry)
    (tmp_path / "once").unlink(missing_ok=True)
    done = service.run(BatchService.prepare(loaded, {"token": value}))
    assert (tmp_path / "seen").read_text() == digest(value)
    view = sqlite_store.get_instance(done.id)
    lines = [line.message for line in sqlite_store.logs.page(done.id).lines]
    outputs = [json.dumps(view.to_json(), ensure_ascii=False), "\n".join(lines)]
    outputs += [_every_row_as_text(sqlite_store)]
    for form in forms(value) + [line for line in value.splitlines() if len(line) > 3]:
        assert [i for i, text in enumerate(outputs) if form in text] == [], form


# -- Celery -----------------------------------------------------------------------------------


def _monitor(url: str, seen: list[bytes], stop: threading.Event) -> threading.Thread:
    """Every command Redis receives while the test runs (MONITOR): the messages sent, the
    results stored, before anyone reads or deletes them."""
    import redis

    def listen() -> None:
        client = redis.Redis.from_url(url)
        with client.monitor() as monitor:
            for command in monitor.listen():
                seen.append(command["command"].encode("utf-8", "surrogateescape"))
                if stop.is_set():
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    return thread


def _opened(blobs: list[bytes]) -> list[bytes]:
    """Each blob with whatever base64 it holds decoded beside it: kombu sends message bodies
    base64-encoded, where a value in plain text would not show."""
    opened = []
    for blob in blobs:
        found = [blob]
        for run in re.findall(rb"[A-Za-z0-9+/]{16,}={0,2}", blob):
            with contextlib.suppress(ValueError):
                found.append(base64.b64decode(run + b"=" * (-len(run) % 4)))
        opened.append(b"\n".join(found))
    return opened


@pytest.mark.parametrize("worker_key", [KEY, None], ids=["worker-has-key", "worker-lacks-key"])
def test_with_celery_the_value_crosses_the_broker_only_sealed(tmp_path, session_queue, worker_key):
    import redis

    url = broker_url("redis")
    workers = Workers(url, tmp_path, **({"ENGINE_PARAMS_KEY": worker_key} if worker_key else {}))
    seen: list[bytes] = []
    stop = threading.Event()
    listener = _monitor(url, seen, stop)
    try:
        workers.start("sp-1", session_queue, 1, "--runners", str(TESTS / "secret_runners.py"))
        workers.wait_ready()
        file = definition(tmp_path, queue=session_queue)
        env = {"ENGINE_DISPATCHER": "celery", "ENGINE_BROKER_URL": url, "ENGINE_PARAMS_KEY": KEY}
        ran = engine(tmp_path, "run", file, "-p", f"token={VALUE}", "--json", **env)
        steps = json.loads(ran.stdout)["steps"]
        if worker_key:
            assert [s["status"] for s in steps] == ["succeeded", "failed", "succeeded"]
            assert (tmp_path / "seen").read_text() == digest(VALUE)
            assert steps[0]["result"]["echo"] == "***"
        else:
            assert [s["status"] for s in steps] == ["failed", "failed", "succeeded"]
            assert steps[0]["error"].startswith(
                "MissingSecretParam: secret param 'token' did not reach the process running "
                "the step: this worker has no ENGINE_PARAMS_KEY to unseal them"
            )
        client = redis.Redis.from_url(url)
        stored = [client.dump(key) or b"" for key in client.scan_iter()]
        stop.set()
        client.ping()  # one more command, so that the monitor sees `stop`
        listener.join(10)
        worker_log = (tmp_path / "sp-1.log").read_text(errors="replace")
        assert "logging ***" in worker_log or not worker_key, "the worker's own log masks it"
        heard = _opened([*stored, *seen, worker_log.encode()])
        assert any(b'"sealed": "gAAAA' in h for h in heard), "the monitor read the messages"
        assert [h for h in heard if any(f.encode() in h for f in forms(VALUE))] == []
        assert leaks(VALUE, tmp_path, [ran.stdout, ran.stderr]) == []
    finally:
        stop.set()
        workers.stop()


def test_with_celery_and_no_key_only_the_steps_that_need_the_value_fail(tmp_path, session_queue):
    url = broker_url("redis")
    workers = Workers(url, tmp_path, ENGINE_PARAMS_KEY=KEY)
    try:
        workers.start("sp-2", session_queue, 1, "--runners", str(TESTS / "secret_runners.py"))
        workers.wait_ready()
        text = SECRET + "  - {id: d, runner: reads_param}\n"
        file = definition(tmp_path, text, queue=session_queue)
        env = {"ENGINE_DISPATCHER": "celery", "ENGINE_BROKER_URL": url}
        ran = engine(tmp_path, "run", file, "-p", f"token={VALUE}", "--json", **env)
        a, _, c, d = json.loads(ran.stdout)["steps"]
        why = (
            "MissingSecretParam: secret param 'token' did not reach the process running the "
            "step: the engine that sent it has no ENGINE_PARAMS_KEY, and a Celery broker "
            "carries secret params only sealed with it; set one ENGINE_PARAMS_KEY for the "
            "engine and its workers"
        )
        assert a["error"] == why
        assert c["status"] == "succeeded" and c["result"] == {"day": "2026-11-26"}
        assert d["status"] == "failed" and d["error"].startswith(why)
        assert leaks(VALUE, tmp_path, [ran.stdout, ran.stderr]) == []
    finally:
        workers.stop()


def test_a_param_and_a_secret_of_one_name_are_not_confused(monkeypatch):
    from engine.dispatch.base import StepTask
    from engine.dispatch.calling import run_attempt
    from engine.expressions import TemplateTree
    from engine.secret_params import SecretParams, in_scope
    from engine.secrets import SecretRefs

    monkeypatch.setenv("ENGINE_SECRET_token", "from-the-environment")
    secret = SecretParams(["token"], {"token": "given-at-start"})
    params = in_scope({"token": "***"}, secret)
    scope = {"params": params, "secrets": SecretRefs(), "steps": {}, "run": {}}
    inputs = TemplateTree({"p": "{{ params.token }}", "s": "{{ secrets.token }}"}).render(scope)
    assert "given-at-start" not in json.dumps(inputs) and "from-the" not in json.dumps(inputs)
    registry = JobRegistry()
    registry.add("both", lambda inputs, ctx: print(inputs, ctx.params) or dict(inputs))
    task = StepTask(1, "a", 1, "both", inputs, params, {}, {}, secret_params=secret)
    outcome = run_attempt(registry, task)
    assert outcome.ok and outcome.result == {"p": "***", "s": "***"}
    assert [line.message for line in outcome.logs] == ["{'p': '***', 's': '***'} {'token': '***'}"]
    seen = {}
    registry.add("see", lambda inputs, ctx: seen.update(inputs, ctx=ctx.params["token"]))
    assert run_attempt(registry, dataclasses.replace(task, runner="see")).ok
    assert seen == {"p": "given-at-start", "s": "from-the-environment", "ctx": "given-at-start"}
    assert "given" not in repr(task) and "given" not in repr(secret)


def test_an_api_resume_that_cannot_have_the_value_is_a_409_saying_why(served, monkeypatch):
    from api_client import wait_for

    started = served.post("/batch/run", json={"definition": "secret", "params": {"token": VALUE}})
    number = started.json()["instance_id"]
    wait_for(served, number, "failed")
    monkeypatch.delenv("ENGINE_PARAMS_KEY")
    refused = served.post(f"/batch/instances/{number}/resume")
    assert refused.status_code == 409
    assert "its secret param 'token' is sealed" in refused.json()["detail"]
    assert served.get(f"/batch/instances/{number}").json()["status"] == "failed"


def test_each_item_of_a_mapped_step_gets_the_value(sqlite_store, monkeypatch):
    registry = _registry()
    text = textwrap.dedent(
        """
        name: m
        params:
          token: {secret: true}
          day: {default: "2026-11-26"}
        steps:
          - id: each
            runner: leak_param
            map: {items: [1, 2, 3]}
            inputs: {header: "Bearer {{ params.token }}"}
        """
    )
    service = BatchService(sqlite_store, DirectDispatcher(registry))
    done = service.run(BatchService.prepare(load_text(text, "m.yaml", registry), {"token": VALUE}))
    assert done.status == "succeeded"
    [mapped] = [s for s in sqlite_store.get_instance(done.id).steps if s.item is None]
    assert [r["echo"] for r in mapped.result] == ["***"] * 3
    assert [f for f in forms(VALUE) if f in _every_row_as_text(sqlite_store)] == []


def test_a_process_s_own_log_handlers_see_the_record_masked(sqlite_store, tmp_path, caplog):
    """`ctx.logger` records also reach the handlers of the process that runs the step (a Celery
    worker's log, an application's): they are masked before any of them sees the record."""
    registry = _registry()
    loaded = load_text((tmp_path / definition(tmp_path)).read_text(), "s.yaml", registry)
    service = BatchService(sqlite_store, DirectDispatcher(registry))
    with caplog.at_level("INFO"):
        service.run(BatchService.prepare(loaded, {"token": VALUE}))
    logged = [r for r in caplog.records if r.name == "engine.runner"]
    assert [r.getMessage() for r in logged][:1] == ["logging *** {'token': '***'}"]
    assert [f for f in forms(VALUE) if f in caplog.text] == []
