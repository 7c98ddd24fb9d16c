"""Secrets: `{{ secrets.NAME }}` reaches the runner from `ENGINE_SECRET_NAME` where the step
runs, and its value is written nowhere: not in the database, a log line, an error, a result, the
broker, or any CLI output, whatever the runner does with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import TESTS, Workers, broker_url
from locating import at, problems, where, yaml

ENGINE = str(Path(sys.executable).parent / "engine")
VALUE = "hunter2-s3cr3t-value"
LEAKY = """
name: leaky
steps:
  - {id: a, runner: leak, inputs: {header: "Bearer {{ secrets.TOKEN }}"}}
  - {id: b, runner: leak, inputs: {header: "{{ secrets.TOKEN }}", fail: true}}
"""


def engine(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return subprocess.run(
        [ENGINE, *args, "--runners", str(TESTS / "secret_runners.py")]
        if args[0] in ("run", "resume")
        else [ENGINE, *args],
        cwd=tmp_path,
        env={**clean, "ENGINE_DATABASE_URL": f"sqlite:///{tmp_path / 'engine.db'}", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def leaks(tmp_path: Path, outputs: list[str]) -> list[str]:
    """Where the value appears: database files, and each output given."""
    found = [p.name for p in tmp_path.glob("engine.db*") if VALUE.encode() in p.read_bytes()]
    return found + [f"output {i}" for i, text in enumerate(outputs) if VALUE in text]


def test_a_secret_reaches_the_runner_and_is_masked_everywhere_it_would_appear(tmp_path):
    (tmp_path / "leaky.yaml").write_text(LEAKY)
    ran = engine(tmp_path, "run", "leaky.yaml", "--json", ENGINE_SECRET_TOKEN=VALUE)
    assert ran.returncode == 1, ran.stderr
    doc = json.loads(ran.stdout)
    a, b = doc["steps"]
    assert a["result"] == {"echo": "Bearer ***", "Bearer ***": "as a key", "nested": ["Bearer ***"]}
    assert b["error"].startswith("RuntimeError: failing with ***")
    shown = engine(tmp_path, "runs", "show", str(doc["id"]))
    as_json = engine(tmp_path, "runs", "show", str(doc["id"]), "--json")
    logs = engine(tmp_path, "logs", str(doc["id"]), "--json")
    lines = [json.loads(line)["message"] for line in logs.stdout.splitlines()]
    assert lines == [
        "printing Bearer ***",
        "to stderr Bearer ***",
        "logging Bearer ***",
        "printing ***",
        "to stderr ***",
        "logging ***",
    ]
    outputs = [ran.stdout, ran.stderr, shown.stdout, as_json.stdout, logs.stdout, logs.stderr]
    assert leaks(tmp_path, outputs) == []


def test_a_missing_secret_fails_the_step_naming_it(tmp_path):
    (tmp_path / "leaky.yaml").write_text(LEAKY)
    ran = engine(tmp_path, "run", "leaky.yaml", "--json")
    assert ran.returncode == 1
    a = json.loads(ran.stdout)["steps"][0]
    assert a["status"] == "failed"
    assert a["error"] == (
        "MissingSecret: secret 'TOKEN' is not set: ENGINE_SECRET_TOKEN is missing from the "
        "environment of the process running the step"
    )


@pytest.mark.parametrize(
    ("where_", "anchor"),
    [
        ("condition: \"secrets.TOKEN == 'x'\"", '"secrets.TOKEN'),
        ('map: {items: "{{ secrets.LIST }}"}', '"{{ secrets.LIST'),
    ],
)
def test_secrets_outside_inputs_are_located_validation_errors(where_, anchor):
    text = yaml(
        f"""
        name: x
        steps:
          - id: a
            {where_}
        """
    )
    [problem] = [p for p in problems(text) if "secrets may be used only" in p.message]
    assert where(problem) == at(text, anchor)


def test_with_celery_the_value_never_crosses_the_broker(tmp_path, session_queue):
    """The workers hold the secret, the orchestrator does not: the step succeeds with the
    workers' value, and nothing on Redis (broker and results) ever holds it."""
    import redis

    url = broker_url("redis")
    workers = Workers(url, tmp_path, ENGINE_SECRET_TOKEN=VALUE)
    try:
        workers.start("secret-1", session_queue, 1, "--runners", str(TESTS / "secret_runners.py"))
        workers.wait_ready()
        (tmp_path / "leaky.yaml").write_text(
            textwrap.dedent(LEAKY).replace(
                "steps:", f"defaults: {{queue: {session_queue}}}\nsteps:"
            )
        )
        ran = engine(
            tmp_path,
            "run",
            "leaky.yaml",
            "--json",
            ENGINE_DISPATCHER="celery",
            ENGINE_BROKER_URL=url,
        )
        assert ran.returncode == 1, ran.stderr
        a, b = json.loads(ran.stdout)["steps"]
        assert a["status"] == "succeeded" and a["result"]["echo"] == "Bearer ***"
        assert b["error"].startswith("RuntimeError: failing with ***")
        client = redis.Redis.from_url(url)
        stored = [client.dump(key) or b"" for key in client.scan_iter()]
        assert not [s for s in stored if VALUE.encode() in s]
        worker_log = (tmp_path / "secret-1.log").read_text(errors="replace")
        assert "logging Bearer ***" in worker_log, "the worker's own log masks it too"
        assert leaks(tmp_path, [ran.stdout, ran.stderr, worker_log]) == []
    finally:
        workers.stop()
