"""Definition validation of expressions, schedules and params, each problem located.

The positions asserted here are computed from the text itself (`at`), so each test states which
node a user is pointed to: the offending key for an unknown key, the offending value otherwise.
"""

from __future__ import annotations

import pytest
from locating import at, load, only, problems, where, yaml

# -- expressions ------------------------------------------------------------------------------


# (the definition, where its one problem is, what the message names): the YAML a user wrote.
BAD_EXPRESSIONS = {
    "a step condition that does not parse": (
        """
        steps:
          - id: a
          - id: b
            condition: "steps.a.result.count >"
        """,
        '"steps.a',
        ["expression"],
    ),
    "an edge condition that does not parse": (
        """
        steps:
          - id: a
            nextSteps:
              - step: b
                condition: "steps.a.result.count == = 0"
          - id: b
        """,
        '"steps.a',
        ["expression"],
    ),
    "a nested template that does not parse": (
        """
        steps:
          - id: a
            inputs:
              plain: 1
              deep:
                list:
                  - fine
                  - "{{ params.x + }}"
        """,
        '"{{ params.x + }}"',
        ["template"],
    ),
    "an unclosed template": (
        """
        steps:
          - id: a
            inputs: {v: "{{ params.x "}
        """,
        '"{{',
        ["template"],
    ),
    "an unknown step, with a hint": (
        """
        steps:
          - id: process
          - id: b
            condition: "steps.procss.result.count > 0"
        """,
        '"steps.procss',
        ["'procss'", "did you mean 'process'"],
    ),
    "an unknown step in a template": (
        """
        steps:
          - id: a
          - id: b
            inputs:
              first: 1
              rows: "{{ steps.nope.result.rows }}"
        """,
        '"{{ steps.nope',
        ["'nope'"],
    ),
    "a step that is not upstream": (
        """
        steps:
          - id: a
            condition: "steps.b.status == 'succeeded'"
          - id: b
        """,
        '"steps.b',
        ["steps.b", "upstream"],
    ),
    "a step condition reading its own result": (
        """
        steps:
          - id: a
            condition: "steps.a.result.ok"
        """,
        '"steps.a',
        ["upstream"],
    ),
    "a template reading a parallel branch": (
        """
        steps:
          - id: root
            nextSteps: [left, right]
          - id: left
          - id: right
            inputs:
              n: 1
              v: "{{ steps.left.result }}"
        """,
        '"{{ steps.left',
        ["upstream"],
    ),
}


@pytest.mark.parametrize(
    ("steps", "anchor", "says"), BAD_EXPRESSIONS.values(), ids=BAD_EXPRESSIONS.keys()
)
def test_a_bad_expression_is_one_problem_located_at_its_string(steps, anchor, says):
    text = "name: x\n" + yaml(steps)
    p = only(text)
    assert where(p) == at(text, anchor), p
    for fragment in says:
        assert fragment in p.message, p.message


@pytest.mark.parametrize("condition", ["''", "'   '"])
def test_an_empty_step_condition_is_a_located_validation_error(condition):
    text = f"name: x\nsteps:\n  - id: a\n  - id: b\n    condition: {condition}\n"
    found = problems(text)
    assert [where(p) for p in found] == [at(text, condition)]


def test_an_empty_edge_condition_is_a_located_validation_error():
    text = "name: x\nsteps:\n  - id: a\n    nextSteps: [{step: b, condition: ''}]\n  - id: b\n"
    found = problems(text)
    assert [p.line for p in found] == [4]


def test_expressions_may_read_transitive_upstream_steps():
    text = yaml("""
        name: x
        steps:
          - id: a
            nextSteps: [b]
          - id: b
            nextSteps:
              - {step: c, condition: "steps.b.result.ok and steps.a.result.ok"}
          - id: c
            condition: "steps.a.status == 'succeeded'"
            inputs: {v: ["{{ steps.a.result }}", {w: "{{ steps.b.result.n }}"}]}
    """)
    loaded = load(text)
    assert set(loaded.conditions) == {"c"}
    assert len(loaded.edge_conditions) == 1
    assert set(loaded.inputs) == {"c"}


def test_in_a_linear_definition_earlier_steps_are_upstream_and_later_ones_are_not():
    ok = yaml("""
        name: x
        steps:
          - id: a
          - id: b
          - id: c
            condition: "steps.a.result.ok"
    """)
    load(ok)
    bad = ok.replace("id: c\n", "id: c\n  - id: d\n").replace("steps.a.", "steps.d.")
    p = only(bad)
    assert "steps.d" in p.message and "upstream" in p.message


# -- schedule ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cron", ["61 * * * *", "not a cron", "* * *", "0 2 * * * * * *"])
def test_an_invalid_cron_is_located_at_the_cron_value(cron):
    text = f'name: x\ncron: "{cron}"\nsteps: [{{id: a}}]\n'
    p = only(text)
    assert where(p) == (2, 7)
    assert "cron" in p.message


@pytest.mark.parametrize("cron", ["0 2 * * *", "*/5 * * * *", "0 0 1 1 *", "@daily"])
def test_valid_crons_pass(cron):
    assert load(f'name: x\ncron: "{cron}"\nsteps: [{{id: a}}]\n').definition.cron == cron


@pytest.mark.parametrize("tz", ["Mars/Olympus", "UTC+25", "", "../../etc/passwd"])
def test_an_invalid_timezone_is_located_at_the_timezone_value(tz):
    text = f"name: x\ntimezone: '{tz}'\nsteps: [{{id: a}}]\n"
    p = only(text)
    assert where(p) == (2, 11)
    assert "time zone" in p.message or "timezone" in p.message


@pytest.mark.parametrize("tz", ["UTC", "Asia/Seoul", "Europe/Paris", "America/New_York"])
def test_valid_timezones_pass(tz):
    assert load(f"name: x\ntimezone: {tz}\nsteps: [{{id: a}}]\n").definition.timezone == tz


# -- params -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("{type: integer, default: abc}", "abc"),
        ("{type: integer, default: 1.5}", "1.5"),
        ("{type: number, default: lots}", "lots"),
        ("{type: boolean, default: [1]}", "[1]"),
        ("{type: array, default: {a: 1}}", "{a: 1}"),
        ("{type: object, default: [1, 2]}", "[1, 2]"),
        ("{type: string, default: c, enum: [a, b]}", "c,"),
    ],
)
def test_a_param_default_that_does_not_fit_its_type_is_located_at_the_default(spec, needle):
    text = f"name: x\nparams:\n  p: {spec}\nsteps: [{{id: a}}]\n"
    p = only(text)
    assert where(p) == at(text, needle)
    assert "default" in p.message


def test_a_param_default_may_not_read_steps():
    text = 'name: x\nparams:\n  p: {default: "{{ steps.a.result }}"}\nsteps: [{id: a}]\n'
    p = only(text)
    assert where(p) == at(text, '"{{')
    assert "run" in p.message


def test_a_param_default_template_that_does_not_parse_is_a_located_error():
    text = 'name: x\nparams:\n  p: {default: "{{ run.logical_date[:10 }}"}\nsteps: [{id: a}]\n'
    found = problems(text)
    assert [where(p) for p in found] == [at(text, '"{{')]


def test_fitting_param_defaults_pass():
    text = yaml("""
        name: x
        params:
          i: {type: integer, default: 3}
          n: {type: number, default: 2}
          b: {type: boolean, default: false}
          a: {type: array, default: []}
          o: {type: object, default: {k: [1]}}
          s: {default: "{{ run.logical_date[:10] }}"}
          e: {enum: [x, y], default: y}
        steps: [{id: a}]
    """)
    assert set(load(text).definition.params) == {"i", "n", "b", "a", "o", "s", "e"}
