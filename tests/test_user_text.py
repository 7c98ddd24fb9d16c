"""User data is printed as text: Rich markup, control characters and huge strings in errors,
results, params and log lines never fail a run, a handler step or a command."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import render
from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.registry import JobRegistry
from engine.service import BatchService

ENGINE = str(Path(sys.executable).with_name("engine"))

MARKUP = "unexpected token [/bold] in row [region] 3 :smile: [link=x]y[/link] \x1b[31m"

RUNNERS = """
from engine import job_handler

@job_handler("raise_text")
def raise_text(inputs, ctx):
    text = inputs["text"] * inputs["times"]
    ctx.logger.warning(text)
    raise ValueError(text)

@job_handler("echo")
def echo(inputs, ctx):
    return inputs
"""

DEFINITION = """
name: texts
params:
  label: {type: string, default: "[/x]"}
  text: {type: string}
  times: {type: integer, default: 1}
steps:
  - id: bad
    runner: raise_text
    inputs: {text: "{{ params.text }}", times: "{{ params.times }}"}
    nextSteps: [{step: handler, on: failure}]
  - {id: handler, runner: echo, inputs: {label: "{{ params.label }}"}}
"""


def _engine(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [ENGINE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "texts.py").write_text(RUNNERS)
    (tmp_path / "texts.yaml").write_text(DEFINITION)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "times"),
    [(MARKUP, 1), ("[/]", 1), ("[bold", 1), ("[/b] x", 400_000), ("\x01\x07\r\x1b]0;t\x07", 1)],
)
def test_markup_and_odd_text_in_an_error_print_as_text_and_the_handler_runs(workdir, text, times):
    ran = _engine(
        workdir, "run", "texts.yaml", "-p", f"text={text}", "-p", f"times={times}", "--json"
    )
    assert ran.returncode == 1, ran.stderr[-2000:]
    assert "Traceback" not in ran.stderr
    doc = json.loads(ran.stdout)
    steps = {s["step"]: s for s in doc["steps"]}
    assert steps["handler"]["status"] == "succeeded", "the failure handler ran"
    assert steps["handler"]["result"] == {"label": "[/x]"}
    assert "engine error" not in (doc["error"] or "")
    assert "\x1b" not in ran.stderr, "no escape sequence reaches the terminal"
    if text == MARKUP:
        assert "[/bold] in row [region] 3 :smile:" in ran.stderr
    shown = _engine(workdir, "runs", "show", str(doc["id"]))
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr
    if text == MARKUP:
        assert "[/bold] in row [region] 3" in shown.stdout


def test_a_markup_param_in_a_dry_run_and_a_successful_run(workdir):
    (workdir / "ok.yaml").write_text(
        "name: ok\nparams:\n  label: {type: string}\n"
        "steps:\n  - {id: a, runner: echo, inputs: {label: '{{ params.label }}'}}\n"
    )
    dry = _engine(workdir, "run", "ok.yaml", "-p", "label=[/x] [b]", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "[/x] [b]" in dry.stdout
    ran = _engine(workdir, "run", "ok.yaml", "-p", "label=[/x] [b]")
    assert ran.returncode == 0, ran.stderr
    assert "[/x] [b]" in ran.stderr


texts = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from("[]/:=\x1b\x07\r\n\t ab"), max_size=200),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=5), st.integers(1, 200_000)),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(error=texts, result=texts.filter(lambda t: "\x00" not in t))  # NUL: see test_store
def test_any_error_or_result_text_is_stored_whole_and_rendered(sqlite_store, error, result):
    registry = JobRegistry()

    def fail(inputs, ctx):
        raise RuntimeError(error)

    registry.add("fail", fail)
    registry.add("give", lambda inputs, ctx: {"text": result})
    loaded = load_text(
        "name: f\nsteps:\n  - {id: a, runner: give, nextSteps: [b]}\n"
        "  - {id: b, runner: fail, nextSteps: [{step: c, on: failure}]}\n"
        "  - {id: c, runner: give}\n",
        "f.yaml",
        registry,
    )
    buffer = io.StringIO()
    progress = render.Progress()
    original = render.console.file
    render.console.file = buffer
    try:
        service = BatchService(sqlite_store, DirectDispatcher(registry))
        view = service.run(BatchService.prepare(loaded, {}), progress)
        render.instance_summary(view, {})
    finally:
        render.console.file = original
    statuses = {s.step: s.status for s in view.steps}
    assert statuses == {"a": "succeeded", "b": "failed", "c": "succeeded"}
    assert view.steps[0].result == {"text": result}
    assert "\x1b" not in buffer.getvalue()


SIZES = """
from engine import job_handler

@job_handler("big_error")
def big_error(inputs, ctx):
    raise ValueError("[/b] " + "x" * 20_000_000)

@job_handler("big_result")
def big_result(inputs, ctx):
    return {"blob": "y" * 50_000_000}

@job_handler("echo")
def echo(inputs, ctx):
    return inputs
"""


def test_a_huge_error_and_a_huge_result_are_bounded_and_the_handlers_run(tmp_path):
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "sizes.py").write_text(SIZES)
    (tmp_path / "sizes.yaml").write_text(
        "name: sizes\nsteps:\n"
        "  - {id: err, runner: big_error, nextSteps: [{step: after_err, on: failure}]}\n"
        "  - {id: after_err, runner: echo}\n"
        "  - {id: res, runner: big_result, nextSteps: [{step: after_res, on: failure}]}\n"
        "  - {id: after_res, runner: echo}\n"
    )
    ran = _engine(tmp_path, "run", "sizes.yaml", "--json")
    assert ran.returncode == 1, ran.stderr[-2000:]
    assert "Traceback" not in ran.stderr
    assert len(ran.stderr) < 20_000, "what is printed is bounded"
    steps = {s["step"]: s for s in json.loads(ran.stdout)["steps"]}
    assert steps["after_err"]["status"] == steps["after_res"]["status"] == "succeeded"
    error = steps["err"]["error"]
    assert error.startswith("ValueError: [/b] xxx")
    assert len(error) < 70_000 and "characters cut" in error
    assert "Traceback" in error, "the end of the traceback is kept"
    assert steps["res"]["error"] == (
        "the result is 50,000,012 bytes as JSON, over the limit of 4,194,304 "
        "(ENGINE_MAX_RESULT_BYTES)"
    )
    assert steps["res"]["result"] is None
