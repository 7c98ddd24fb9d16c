"""The expression sandbox: data in, data out, nothing else.

Escapes are refused when a definition is validated if they are visible in the text, or with an
ExpressionError when evaluated; either way nothing runs. Expressions that would eat the host's
memory or CPU are evaluated in a child process with a memory cap and a time limit, so that a
vulnerable engine fails the test instead of the machine.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.definition import load_text
from engine.errors import DefinitionError, EngineError, ExpressionError
from engine.expressions import (
    TemplateTree,
    compile_condition,
    compile_template,
)

SCOPE = {
    "params": {"day": "2026-11-26", "n": 3, "ids": [1, 2], "cfg": {"k": "v"}, "s": "ab"},
    "steps": {
        "a": {
            "result": {
                "rows": 120,
                "list": [1, 2, 3],
                "map": {"x": 1},
                "none": None,
                "ok": True,
                "ratio": 0.5,
                "name": "sales",
                "items": [4, 5],
                "values": [6],
                "keys": "k",
                "get": 1,
            },
            "status": "succeeded",
        },
        "b": {"result": None, "status": "skipped"},
    },
    "run": {
        "id": 7,
        "trigger": "cli",
        "scheduled_for": None,
        "logical_date": "2026-11-26T02:00:00+00:00",
    },
}


def scope():
    return json.loads(json.dumps(SCOPE))


def evaluate(source: str, kind: str = "template"):
    compiled = (compile_template if kind == "template" else compile_condition)(source)
    return compiled(scope())


def refused(source: str, kind: str = "template") -> str:
    """The message with which `source` is refused, at compile time or at evaluation."""
    with pytest.raises(ExpressionError) as info:
        evaluate(source, kind)
    return str(info.value)


# -- native types and rendering -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("{{ steps.a.result.rows }}", 120),
        ("{{ steps.a.result.list }}", [1, 2, 3]),
        ("{{ steps.a.result.map }}", {"x": 1}),
        ("{{ steps.a.result.none }}", None),
        ("{{ steps.a.result.ok }}", True),
        ("{{ steps.a.result.ratio }}", 0.5),
        ("{{ steps.a.result.name }}", "sales"),
        ("{{ steps.a.result.list[0] }}", 1),
        ("{{ steps.a.result['rows'] }}", 120),
        ("{{ steps.a.result.rows + params.n }}", 123),
        ("{{ steps.a.result.list | length }}", 3),
        ("{{ params.ids }}", [1, 2]),
        ("{{ params.cfg }}", {"k": "v"}),
        ("{{ run.id }}", 7),
        ("{{ run.scheduled_for }}", None),
        ("{{ run.logical_date[:10] }}", "2026-11-26"),
        ("{{ steps.a.status }}", "succeeded"),
        ("  {{ steps.a.result.rows }}\n", 120),
        ("{{steps.a.result.rows}}", 120),
        ("{{ [1, 'x', none] }}", [1, "x", None]),
        ("{{ {'a': params.n} }}", {"a": 3}),
    ],
)
def test_a_lone_expression_keeps_its_native_type(source, value):
    result = evaluate(source)
    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("rows={{ steps.a.result.rows }}", "rows=120"),
        ("{{ params.n }}{{ params.n }}", "33"),
        ("{{ params.n }} and {{ params.n }}", "3 and 3"),
        ("out/report-{{ params.day }}.json", "out/report-2026-11-26.json"),
        ("{% if params.n > 2 %}big{% else %}small{% endif %}", "big"),
        ("{{ params.ids | join(',') }},", "1,2,"),
        ("{{ params.s | upper }}!", "AB!"),
    ],
)
def test_mixed_text_renders_as_a_string(source, text):
    assert evaluate(source) == text


def test_keys_named_like_dict_methods_read_the_data():
    """`steps.x.result.items` must be the result's `items`, not a Python method object."""
    assert evaluate("{{ steps.a.result.items }}") == [4, 5]
    assert evaluate("{{ steps.a.result.values }}") == [6]
    assert evaluate("{{ steps.a.result.keys }}") == "k"
    assert evaluate("{{ steps.a.result.get }}") == 1
    assert evaluate("n={{ steps.a.result.items | length }}") == "n=2"


def test_inputs_render_everywhere_in_nested_lists_and_mappings():
    text = textwrap.dedent("""\
        name: x
        params: {n: {type: integer}, day: {type: string}}
        steps:
          - id: a
          - id: b
            inputs:
              rows: "{{ steps.a.result.rows }}"
              static: plain
              number: 5
              nested:
                list: ["{{ params.n }}", "n={{ params.n }}", [ "{{ steps.a.result.map }}" ]]
                map: {day: "{{ params.day }}", none: "{{ steps.a.result.none }}"}
              "{{ not a key template }}": kept
    """)
    loaded = load_text(text, "x.yaml")
    assert "a" not in loaded.inputs  # no templates: nothing to render
    assert loaded.inputs["b"].render(scope()) == {
        "rows": 120,
        "static": "plain",
        "number": 5,
        "nested": {
            "list": [3, "n=3", [{"x": 1}]],
            "map": {"day": "2026-11-26", "none": None},
        },
        "{{ not a key template }}": "kept",
    }


def test_a_template_tree_without_templates_is_static():
    tree = TemplateTree({"a": [1, {"b": "x"}], "c": None})
    assert tree.is_static and tree.errors == []
    assert tree.render({}) == {"a": [1, {"b": "x"}], "c": None}


# -- conditions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("steps.a.result.rows > 100", True),
        ("steps.a.result.rows == 0", False),
        ("steps.a.status == 'succeeded' and params.n >= 3", True),
        ("steps.b.status == 'skipped'", True),
        ("steps.a.result.list | length == 3", True),
        ("2 in params.ids", True),
        ("steps.a.result.none is none", True),
        ("steps.a.result.list", True),
        ("params.day.startswith('2026')", True),
    ],
)
def test_a_condition_is_a_boolean(source, value):
    assert evaluate(source, "condition") is value


@pytest.mark.parametrize(
    "source",
    ["params.nope", "steps.b.result.count > 0", "steps.zz.status", "params.n > 'a'", "1 / 0"],
)
def test_a_condition_that_fails_raises_an_expression_error(source):
    message = refused(source, "condition")
    assert source in message


@pytest.mark.parametrize(
    "source",
    [
        "{{ params.nope }}",
        "x{{ params.nope }}",
        "{{ steps.a.result.nope.deeper }}",
        "{{ nothing }}",
        "{{ steps.b.result.rows }}",
    ],
)
def test_an_undefined_value_is_an_expression_error_not_a_silent_value(source):
    refused(source)


def test_expression_errors_belong_to_the_engine_error_tree():
    assert issubclass(ExpressionError, EngineError)


# -- syntax ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["{{ 1 + }}", "{{ params.n", "{% if %}", "{{ a b }}", "{% for %}{% endfor %}", "{{ }}"],
)
def test_a_template_that_does_not_parse_is_refused_at_compile_time(source):
    with pytest.raises(ExpressionError):
        compile_template(source)


@pytest.mark.parametrize("source", ["1 +", "a b", "(", "x ==", "}} {{", "steps.a.result }}{{ 1"])
def test_a_condition_that_does_not_parse_is_refused_at_compile_time(source):
    with pytest.raises(ExpressionError):
        compile_condition(source)


# -- escapes -----------------------------------------------------------------------------------

STATIC_ESCAPES = [
    "''.__class__.__mro__[1].__subclasses__()",
    "''.__class__",
    "''['__class__']",
    "lipsum.__globals__",
    "lipsum.__globals__['os'].popen('touch MARKER').read()",
    "cycler.__init__.__globals__.os.popen('touch MARKER').read()",
    "joiner.__init__.__globals__.os.popen('touch MARKER').read()",
    "namespace.__init__.__globals__.os.popen('touch MARKER').read()",
    "self.__init__.__globals__.__builtins__.__import__('os').popen('touch MARKER')",
    "params.__class__.__base__.__subclasses__()",
    "steps.a.result.list.__class__",
    "range.__self__",
    "(1).__class__.__mro__",
    "config.__class__",
    "request.application.__globals__",
    "dict(__class__=1).__class__",
]

RUNTIME_ESCAPES = [
    "config",
    "self._TemplateReference__context",
    "lipsum",
    "cycler",
    "joiner",
    "namespace",
    "''|attr('__class__')",
    "''|attr('__cla' ~ 'ss__')",
    "params|attr('__class__')|attr('__base__')",
    "'{0.__class__}'.format(params)",
    "'{0.__class__.__init__.__globals__}'.format(params.s)",
    "'{0.__class__}'.format_map(params)",
    "'{x.__class__}'.format(x=params)",
    "params.s.format.__self__",
    "params.ids.append(3)",
    "params.cfg.update({'k': 1})",
    "params.cfg.pop('k')",
    "params.cfg.clear()",
    "range(10**9)",
    "range(100000000) | list | length",
    "'a' * 10**9",
    "[1] * 10**9",
    "9**999999",
    "2**10000000",
    "'ab' * 9999 * 9999",
]


@pytest.mark.parametrize("expression", STATIC_ESCAPES)
def test_a_visible_escape_is_refused_when_the_definition_is_validated(tmp_path, expression):
    marker = tmp_path / "pwned"
    expression = expression.replace("MARKER", str(marker))
    source = "{{ " + expression + " }}"
    text = (
        "name: x\nsteps:\n  - id: a\n    inputs:\n      v: " + json.dumps(source) + "\n"
        "  - id: b\n    condition: " + json.dumps(expression) + "\n"
    )
    with pytest.raises(DefinitionError) as info:
        load_text(text, "x.yaml")
    assert {p.line for p in info.value.problems} == {5, 7}, info.value.problems
    assert not marker.exists()


@pytest.mark.parametrize("expression", STATIC_ESCAPES + RUNTIME_ESCAPES)
@pytest.mark.parametrize("kind", ["template", "condition"])
def test_an_escape_never_evaluates(tmp_path, expression, kind):
    marker = tmp_path / "pwned"
    expression = expression.replace("MARKER", str(marker))
    source = "{{ " + expression + " }}" if kind == "template" else expression
    values = scope()
    with pytest.raises(ExpressionError):
        compiled = (compile_template if kind == "template" else compile_condition)(source)
        compiled(values)
    assert not marker.exists()
    assert values == scope(), "an expression changed the data it was given"


def test_a_mixed_template_with_an_escape_never_renders(tmp_path):
    with pytest.raises(ExpressionError):
        evaluate("x={{ ''|attr('__class__') }}")
    with pytest.raises(ExpressionError):
        evaluate("{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}")


@pytest.mark.parametrize(
    "source",
    [
        "{% include 'x' %}",
        "{% import 'x' as y %}{{ y }}",
        "{% extends 'x' %}",
        "{% from 'x' import y %}",
    ],
)
def test_templates_cannot_load_other_templates(source):
    with pytest.raises(ExpressionError):
        evaluate(source)


# -- resource exhaustion, in capped child processes ------------------------------------------

_CHILD = r"""
import json, resource, sys
memory = 768 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS + 1))
from engine.errors import ExpressionError
from engine.expressions import compile_template
scope = {"params": {"s": "ab", "n": 3}, "steps": {}, "run": {}}
try:
    value = compile_template(sys.argv[1])(scope)
except ExpressionError as exc:
    print(json.dumps({"refused": str(exc)[-300:]}))
else:
    print(json.dumps({"value": type(value).__name__}))
"""
CPU_SECONDS = 2
"""Far beyond what any legitimate expression needs, and the cost of a hanging one."""

_NAMES = "abcdefghijklmnopqrst"
_SQUARINGS = (  # a 50,000-bit integer squared 19 times: 26 billion bits
    "{% set a = 2**50000 %}"
    + "".join(f"{{% set {n} = {p} * {p} %}}" for p, n in itertools.pairwise(_NAMES))
    + "{{ t > 0 }}"
)
EXHAUSTING = [
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{0:>999999999}'.format(params.s) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%*d' | format(999999999, 1) }}",
    "{{ 'x' | center(1000000000) }}",
    "{{ 'x' | indent(1000000000, true) }}",
    "{{ range(99999) | join('x' * 99999) }}",
    "{{ 'a b' | replace('a', 'a' * 99999) | replace('a', 'a' * 99999) }}",
    "{{ 9**1000**1000**1000 }}",
    "{{ ('x\\n' * 50000) | indent(99999) | length }}",
    "{{ ('\\t' * 99999).expandtabs(99999) | length }}",
    "{{ ('x' * 99999).translate({120: 'y' * 99999}) | length }}",
    "x{{ [[1] * 99999] * 99999 }}",
    "{{ ([[1] * 99999] * 99999) | sum(start=[]) | length }}",
    "{{ ([[1] * 99999] * 99999) | tojson | length }}",
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    _SQUARINGS,
    # chains of calls each of an allowed size: the budget of one evaluation stops them
    "{{ range(100000) | map('string') | map('center', 50000) | list | length }}",
    "{{ range(1) | batch(20000, 'a' * 99999) | list }}",
    "{{ range(1000) | list | tojson(indent=99999) }}",
    "{{ range(99999) | map('string') | join(',' * 99999) }}",
    "{{ range(99999) | map('string') | map('center', 99) | map('center', 99999) | list }}",
]


def capped(source: str) -> dict:
    """Evaluate `source` in a child limited in memory and CPU: how it ended."""
    child = _CHILD.replace("CPU_SECONDS", str(CPU_SECONDS))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", child, source], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return {"killed": "still running after 60 s"}
    if proc.returncode != 0:
        return {
            "killed": f"exit {proc.returncode} (CPU limit {CPU_SECONDS}s?) {proc.stderr[-300:]}"
        }
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def exhausting_outcomes() -> dict[str, dict]:
    """Every child at once: most end in a fraction of a second; a hanging one costs its CPU cap."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {source: pool.submit(capped, source) for source in EXHAUSTING}
        return {source: future.result() for source, future in futures.items()}


@pytest.mark.parametrize("source", EXHAUSTING, ids=lambda s: "squarings" if s == _SQUARINGS else s)
def test_an_expression_that_would_exhaust_the_host_is_refused(exhausting_outcomes, source):
    outcome = exhausting_outcomes[source]
    assert "refused" in outcome, f"{source!r} was not refused: {outcome}"
    assert "MemoryError" not in outcome["refused"], (
        f"{source!r} was stopped only by running out of memory: {outcome['refused']}"
    )


def test_the_capped_child_evaluates_ordinary_expressions():
    assert capped("{{ range(99999) | sum }}") == {"value": "int"}


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(3) %}{{ i }}{% endfor %}",
        "{% set a = 1 %}{{ a }}",
        "{% macro m() %}x{% endmacro %}{{ m() }}",
        "{% call m() %}{% endcall %}",
    ],
)
def test_loops_assignments_and_macros_are_refused_when_compiled(source):
    with pytest.raises(ExpressionError, match="is not allowed"):
        compile_template(source)


def test_one_evaluation_has_a_time_budget(monkeypatch):
    monkeypatch.setattr("engine.sandbox.MAX_SECONDS", 0.05)
    slow = compile_template("{{ (range(99999) | list) | sort | unique | list | length }}")
    with pytest.raises(ExpressionError, match=r"the expression ran longer than 0\.05s"):
        slow({"params": {}, "steps": {}, "run": {}})


def test_the_budget_is_per_evaluation_not_per_process():
    template = compile_template("{{ range(99999) | map('string') | list | length }}")
    for _ in range(30):  # together far over the budget of one evaluation
        assert template({"params": {}, "steps": {}, "run": {}}) == 99999
