"""Definition loading and validation: every problem located at its YAML node, all at once.

The positions asserted here are computed from the text itself (`at`), so each test states which
node a user is pointed to: the offending key for an unknown key, the offending value otherwise.
"""

from __future__ import annotations

import pytest
from locating import FILE, at, load, only, problems, where, yaml

from engine.definition import load_file
from engine.definition.models import Join
from engine.errors import DefinitionError

# -- a valid definition ------------------------------------------------------------------------

FULL = yaml("""
    name: etl-2_x
    description: Daily sales ETL
    cron: "0 2 * * *"
    timezone: Asia/Seoul
    catchup: all
    overlap: queue
    concurrency: 4
    params:
      day: {type: string, description: "day", default: "{{ run.logical_date[:10] }}"}
      minAmount: {type: number, default: 0}
      ids: {type: array, default: [1, 2]}
      mode: {type: string, enum: [fast, slow], default: fast}
      target: {type: string}
    defaults:
      retry: {maxAttempts: 3, delaySeconds: 5, backoff: 2.0, maxDelaySeconds: 300}
      timeoutSeconds: 600
      queue: default
    steps:
      - id: collect
        runner: collect_rows
        inputs: {source: data/sales.csv, day: "{{ params.day }}"}
        nextSteps: [process]
      - id: process
        inputs: {rows: "{{ steps.collect.result.rows }}"}
        nextSteps:
          - load
          - {step: alert, on: failure}
          - {step: report_empty, condition: "steps.process.result.count == 0"}
      - id: load
        condition: "steps.process.result.count > 0"
        retry: {maxAttempts: 1}
        timeoutSeconds: 5
        nextSteps: [notify]
      - id: report_empty
        nextSteps: [notify]
      - id: alert
        allowFailure: true
      - id: notify
        join: any
        queue: mail
""")


def test_the_design_example_loads_with_every_setting():
    loaded = load(FULL)
    d = loaded.definition
    assert loaded.name == "etl-2_x"
    assert loaded.file == FILE
    assert loaded.source == FULL
    assert (d.cron, d.timezone, d.catchup, d.overlap, d.concurrency) == (
        "0 2 * * *",
        "Asia/Seoul",
        "all",
        "queue",
        4,
    )
    steps = {s.id: s for s in d.steps}
    assert steps["collect"].runner_key == "collect_rows"
    assert steps["process"].runner_key == "process"
    assert steps["notify"].join is Join.any
    assert steps["alert"].allow_failure is True
    retry, timeout, queue = d.settings(steps["collect"])
    assert (retry.max_attempts, retry.delay_seconds, retry.backoff, retry.max_delay_seconds) == (
        3,
        5,
        2.0,
        300,
    )
    assert (timeout, queue) == (600, "default")
    retry, timeout, queue = d.settings(steps["load"])
    assert (retry.max_attempts, timeout, queue) == (1, 5, "default")
    assert d.settings(steps["notify"])[2] == "mail"
    assert d.params["target"].required and not d.params["day"].required


def test_the_version_is_a_content_hash_of_the_text():
    a = load(FULL)
    assert a.version == load(FULL).version
    assert a.version != load(FULL + "# a comment changes the file\n").version


def test_load_file_reads_a_file_and_names_it_in_problems(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(FULL, encoding="utf-8")
    assert load_file(good).name == "etl-2_x"
    assert load_file(str(good)).file == str(good)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps:\n  - id: a\n    nextStep: [b]\n", encoding="utf-8")
    with pytest.raises(DefinitionError) as info:
        load_file(bad)
    [p] = info.value.problems
    assert (p.file, p.line, p.column) == (str(bad), 4, 5)
    assert str(p) == f"{bad}:4:5: {p.message}"


# -- unknown keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "typo", "hint"),
    [
        ("name: x\nsteps:\n  - id: a\n    nextStep: [b]\n  - id: b\n", "nextStep", "nextSteps"),
        ("name: x\ndescripton: d\nsteps: [{id: a}]\n", "descripton", "description"),
        ("name: x\nstep: []\nsteps: [{id: a}]\n", "step:", "steps"),
        ("name: x\nsteps:\n  - id: a\n    retry: {maxAttempt: 3}\n", "maxAttempt", "maxAttempts"),
        (
            "name: x\ndefaults: {timeoutSecond: 3}\nsteps: [{id: a}]\n",
            "timeoutSecond",
            "timeoutSeconds",
        ),
        (
            "name: x\nparams:\n  p: {type: integer, defualt: 1}\nsteps: [{id: a}]\n",
            "defualt",
            "default",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    nextSteps: [{step: b, onn: failure}]\n  - id: b\n",
            "onn",
            "on",
        ),
        ("name: x\nsteps:\n  - id: a\n    allowFailures: true\n", "allowFailures", "allowFailure"),
    ],
)
def test_an_unknown_key_is_located_at_the_key_with_a_did_you_mean_hint(text, typo, hint):
    p = only(text)
    assert where(p) == at(text, typo)
    assert f"did you mean '{hint}'" in p.message
    assert repr(typo.rstrip(":")) in p.message


def test_an_unknown_key_without_a_close_match_lists_the_allowed_keys():
    text = "name: x\nsteps:\n  - id: a\n    zzzzzz: 1\n"
    p = only(text)
    assert where(p) == at(text, "zzzzzz")
    assert "'zzzzzz'" in p.message
    for key in ("nextSteps", "runner", "inputs", "condition", "allowFailure"):
        assert key in p.message


# -- types, ranges, required keys, patterns -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: x\nconcurrency: many\nsteps: [{id: a}]\n", "many"),
        ("name: x\nconcurrency: 0\nsteps: [{id: a}]\n", "0"),
        ("name: x\ncatchup: sometimes\nsteps: [{id: a}]\n", "sometimes"),
        ("name: x\noverlap: never\nsteps: [{id: a}]\n", "never"),
        ("name: x\nsteps: {id: a}\n", "{id: a}"),
        ("name: x\nsteps:\n  - id: a\n    inputs: [1, 2]\n", "[1, 2]"),
        ("name: x\nsteps:\n  - id: a\n    allowFailure: maybe\n", "maybe"),
        ("name: x\nsteps:\n  - id: a\n    join: some\n", "some"),
        ("name: x\nsteps:\n  - id: a\n    timeoutSeconds: -1\n", "-1"),
        ("name: x\nsteps:\n  - id: a\n    retry: {maxAttempts: 0}\n", "0}"),
        ("name: x\nsteps:\n  - id: a\n    retry: {backoff: 0.5}\n", "0.5"),
        ("name: x\nsteps:\n  - id: a\n    nextSteps: [{step: b, on: never}]\n  - id: b\n", "never"),
        ("name: x\nsteps:\n  - id: a\n    nextSteps: b\n  - id: b\n", "b\n"),
        ("name: x\nsteps:\n  - id: a\n    runner: [r]\n", "[r]"),
        ("name: x\nparams:\n  p: {type: decimal}\nsteps: [{id: a}]\n", "decimal"),
        ("name: [x]\nsteps: [{id: a}]\n", "[x]"),
    ],
)
def test_a_type_or_range_error_is_located_at_the_offending_value(text, needle):
    p = only(text)
    assert where(p) == at(text, needle)


def test_a_type_error_message_names_the_dotted_path():
    text = "name: x\nsteps:\n  - id: a\n  - id: b\n    retry: {maxAttempts: lots}\n"
    p = only(text)
    assert where(p) == at(text, "lots")
    assert "steps[1].retry.maxAttempts" in p.message


@pytest.mark.parametrize(
    ("text", "needle", "message"),
    [
        ("name: x\nsteps: {id: a}\n", "{id: a}", "steps: must be a list, not a mapping"),
        (
            "name: x\ndefaults: 3\nsteps: [{id: a}]\n",
            "3",
            "defaults: must be a mapping, not a number",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    retry: [1]\n",
            "[1]",
            "steps[0].retry: must be a mapping, not a list",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    map: [1, 2]\n",
            "[1, 2]",
            "steps[0].map: must be a mapping, not a list",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    inputs: text\n",
            "text",
            "steps[0].inputs: must be a mapping, not a string",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    nextSteps: 3\n",
            "3\n",
            "steps[0].nextSteps: must be a list, not a number",
        ),
    ],
)
def test_a_value_of_the_wrong_shape_says_what_it_must_be_in_yaml_words(text, needle, message):
    """pydantic would say `Input should be a valid dictionary or instance of StepSettings`,
    naming a class the author never wrote."""
    p = only(text)
    assert where(p) == at(text, needle)
    assert p.message == message


def test_missing_required_keys_are_each_reported():
    found = problems("description: nothing else\n")
    messages = " | ".join(p.message for p in found)
    assert len(found) == 2
    assert "name" in messages and "steps" in messages
    assert all("required" in p.message or "missing" in p.message for p in found)
    assert all(p.line >= 1 and p.column >= 1 for p in found)


def test_a_step_without_id_is_located_at_that_step():
    text = "name: x\nsteps:\n  - id: a\n  - runner: r\n"
    p = only(text)
    assert where(p) == at(text, "runner: r")
    assert "steps[1].id" in p.message and "missing" in p.message


def test_an_edge_without_step_is_located_at_that_edge():
    text = "name: x\nsteps:\n  - id: a\n    nextSteps: [{on: failure}]\n"
    p = only(text)
    assert where(p) == at(text, "{on: failure}")
    assert "missing" in p.message


def test_an_empty_step_list_is_refused():
    text = "name: x\nsteps: []\n"
    p = only(text)
    assert where(p) == at(text, "[]")


@pytest.mark.parametrize("name", ["Bad", "etl job", "-etl", "_etl", "etl.v2", "é"])
def test_a_bad_definition_name_is_refused_at_the_name(name):
    text = f"name: '{name}'\nsteps: [{{id: a}}]\n"
    p = only(text)
    assert where(p) == (1, 7)
    assert p.message == (
        "name: must be lowercase letters, digits, '_' and '-', starting with a letter or digit"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: a\nsteps: [{id: __a}]\n",
            "steps[0].id: must be letters, digits and '_', starting with a letter or one '_' "
            "(templates cannot read a name that starts with '__')",
        ),
        (
            "name: a\nsteps: [{id: a, map: {items: [1], as: __i}}]\n",
            "steps[0].map.as: must be letters, digits and '_', starting with a letter or one '_' "
            "(templates cannot read a name that starts with '__')",
        ),
        (
            "name: a\nparams: {__p: {type: string}}\nsteps: [{id: a}]\n",
            "params.__p: a param's name may not start with '__': templates cannot read it",
        ),
    ],
)
def test_a_name_templates_cannot_read_is_refused_in_words(text, message):
    """Templates refuse names that start with `__` (the way out of a sandbox), so a step id, an
    `as` or a param may not take one; a fuzzed definition found a param the engine took and then
    could not read."""
    p = only(text)
    assert p.message == message
    assert where(p) == at(text, "__")


@pytest.mark.parametrize("step_id", ["_", "_a", "a__b", "_a__"])
def test_ids_with_single_leading_underscores_pass(step_id):
    reads = f"'{{{{ steps.{step_id}.status }}}}'"
    text = f"name: a\nsteps: [{{id: {step_id}}}, {{id: b, inputs: {{x: {reads}}}}}]\n"
    assert [s.id for s in load(text).definition.steps] == [step_id, "b"]


@pytest.mark.parametrize("name", ["etl", "0etl", "a-b_c", "x1"])
def test_good_definition_names_pass(name):
    assert load(f"name: {name}\nsteps: [{{id: a}}]\n").name == name


@pytest.mark.parametrize("step_id", ["1a", "a-b", "a b", "a.b", "", "é"])
def test_a_bad_step_id_is_refused_at_the_id(step_id):
    text = f"name: x\nsteps:\n  - id: ok\n  - id: '{step_id}'\n"
    p = only(text)
    assert where(p) == (4, 9)
    assert "steps[1].id" in p.message


@pytest.mark.parametrize("step_id", ["a", "_a", "A_1", "camelCase"])
def test_good_step_ids_pass(step_id):
    assert load(f"name: x\nsteps: [{{id: {step_id}}}]\n").definition.steps[0].id == step_id


# -- ids and edges ----------------------------------------------------------------------------


def test_a_duplicate_step_id_is_located_at_the_second_and_names_the_first():
    text = "name: x\nsteps:\n  - {id: a, nextSteps: []}\n  - id: b\n  - id: a\n"
    p = only(text)
    assert where(p) == (5, 9)
    assert "'a'" in p.message and "steps[0]" in p.message


def test_a_duplicate_step_id_in_a_linear_definition_is_not_also_reported_as_a_cycle():
    text = "name: x\nsteps:\n  - id: a\n  - id: b\n  - id: a\n"
    p = only(text)
    assert where(p) == (5, 9)
    assert "duplicate" in p.message and "cycle" not in p.message


def test_next_steps_naming_an_unknown_step_is_located_at_the_name_with_a_hint():
    text = yaml("""
        name: x
        steps:
          - id: a
            nextSteps: [lod]
          - id: load
    """)
    p = only(text)
    assert where(p) == at(text, "lod]")
    assert "'lod'" in p.message and "did you mean 'load'" in p.message


def test_an_unknown_step_in_an_edge_mapping_is_located_at_the_edge():
    text = yaml("""
        name: x
        steps:
          - id: a
            nextSteps:
              - {step: nowhere, on: failure}
          - id: b
    """)
    p = only(text)
    assert p.line == at(text, "nowhere")[0]
    assert "'nowhere'" in p.message
    assert "did you mean" not in p.message


def test_a_duplicate_edge_is_located_at_the_second_listing():
    text = yaml("""
        name: x
        steps:
          - id: a
            nextSteps: [b, c, b]
          - id: b
          - id: c
    """)
    p = only(text)
    assert where(p) == at(text, "b]")
    assert "'a'" in p.message and "'b'" in p.message and "twice" in p.message


def test_a_cycle_is_reported_naming_every_step_in_it():
    text = yaml("""
        name: x
        steps:
          - id: start
            nextSteps: [a]
          - id: a
            nextSteps: [b]
          - id: b
            nextSteps: [c]
          - id: c
            nextSteps: [a]
    """)
    p = only(text)
    assert "cycle" in p.message
    for step in ("a", "b", "c"):
        assert f"{step} ->" in p.message or f"-> {step}" in p.message
    assert "start" not in p.message
    assert p.line in {at(text, "[b]")[0], at(text, "[c]")[0], at(text, "[a]", nth=1)[0]}


def test_a_self_loop_is_a_cycle():
    text = "name: x\nsteps:\n  - id: a\n    nextSteps: [a]\n"
    p = only(text)
    assert where(p) == at(text, "a]")
    assert "cycle" in p.message and "a -> a" in p.message


def test_two_separate_cycles_are_both_reported():
    text = yaml("""
        name: x
        steps:
          - id: a
            nextSteps: [b]
          - id: b
            nextSteps: [a]
          - id: c
            nextSteps: [d]
          - id: d
            nextSteps: [c]
    """)
    found = problems(text)
    assert len(found) == 2
    assert all("cycle" in p.message for p in found)
    assert "a" in found[0].message and "c" in found[1].message


# -- runners ----------------------------------------------------------------------------------


def test_unknown_runner_keys_are_errors_only_when_a_registry_is_given(registry):
    text = "name: x\nsteps:\n  - id: a\n    runner: lod\n  - id: other\n"
    load(text)  # no registry: runners are not checked
    registry.add("load", lambda inputs, ctx: None)
    registry.add("collect", lambda inputs, ctx: None)
    found = problems(text, registry)
    assert [where(p) for p in found] == [at(text, "lod"), at(text, "other")]
    assert "'lod'" in found[0].message and "did you mean 'load'" in found[0].message
    for p in found:
        assert "known runners" in p.message
        assert "collect" in p.message and "load" in p.message


def test_an_empty_runner_key_is_refused_rather_than_replaced_by_the_id():
    text = "name: x\nsteps:\n  - id: a\n    runner: ''\n"
    p = only(text)
    assert where(p) == at(text, "''")


def test_known_runner_keys_pass(registry):
    registry.add("greet", lambda inputs, ctx: None)
    registry.add("a", lambda inputs, ctx: None)
    load("name: x\nsteps:\n  - id: a\n  - id: b\n    runner: greet\n", registry)


def test_an_empty_registry_says_so(registry):
    p = only("name: x\nsteps: [{id: a}]\n", registry)
    assert "'a'" in p.message and "no runners are registered" in p.message
    assert "--runners or ENGINE_RUNNERS" in p.message


# -- all at once ------------------------------------------------------------------------------


def test_every_problem_of_a_file_is_reported_at_once_and_in_file_order():
    text = yaml("""
        name: x
        cron: "99 * * * *"
        timezone: Nowhere/Land
        steps:
          - id: a
            nextStep: [b]
            nextSteps: [b, bb]
          - id: b
            condition: "steps.a.result >"
          - id: a
          - id: c
            condition: "steps.zz.result"
    """)
    found = problems(text)
    assert [where(p) for p in found] == sorted(where(p) for p in found)
    expected = {
        at(text, '"99'),  # cron
        at(text, "Nowhere"),  # timezone
        at(text, "nextStep:"),  # unknown key, at the key
        at(text, "bb"),  # unknown step in nextSteps
        at(text, '"steps.a'),  # condition syntax
        (at(text, "- id: a", nth=1)[0], 9),  # duplicate id, at the second one
        at(text, '"steps.zz'),  # unknown step in a condition
    }
    assert {where(p) for p in found} == expected, found


def test_a_type_error_does_not_hide_the_graph_problems_of_the_same_file():
    text = yaml("""
        name: x
        concurrency: many
        steps:
          - id: a
            nextSteps: [missing]
            retry: {maxAttempts: 0}
          - id: b
            nextSteps: [b]
    """)
    found = problems(text)
    assert {where(p) for p in found} >= {
        at(text, "many"),
        at(text, "missing"),
        at(text, "0}"),
        at(text, "b]"),
    }
