"""The step graph of a definition, and the YAML 1.2 rules definitions are read with.

The positions asserted here are computed from the text itself (`at`), so each test states which
node a user is pointed to: the offending key for an unknown key, the offending value otherwise.
"""

from __future__ import annotations

import re

import pytest
from locating import load, yaml

from engine.definition import On, load_text
from engine.definition.graph import StepGraph
from engine.errors import DefinitionError

# -- the graph --------------------------------------------------------------------------------


def edges(graph: StepGraph) -> list[tuple[str, str, str, str | None]]:
    return [(e.source, e.target, e.on.value, e.condition) for e in graph.edges]


def test_a_linear_definition_chains_its_steps_in_list_order():
    loaded = load("name: x\nsteps: [{id: c}, {id: a}, {id: b}]\n")
    assert not loaded.definition.is_dag
    assert edges(loaded.graph) == [("c", "a", "success", None), ("a", "b", "success", None)]
    assert loaded.graph.topological_order() == ["c", "a", "b"]
    assert [e.source for e in loaded.graph.incoming["b"]] == ["a"]
    assert loaded.graph.incoming["c"] == []


def test_a_single_step_has_no_edges():
    graph = load("name: x\nsteps: [{id: only}]\n").graph
    assert graph.edges == [] and graph.order == ["only"]


def test_once_any_step_declares_next_steps_the_graph_is_exactly_the_declared_edges():
    text = yaml("""
        name: x
        steps:
          - id: a
            nextSteps:
              - c
              - {step: d, on: failure}
              - {step: e, on: always, condition: "steps.a.result.n > 1"}
          - id: b
          - id: c
          - id: d
          - id: e
    """)
    graph = load(text).graph
    assert edges(graph) == [
        ("a", "c", "success", None),
        ("a", "d", "failure", None),
        ("a", "e", "always", "steps.a.result.n > 1"),
    ]
    assert graph.incoming["b"] == [] and graph.outgoing["b"] == []  # b is an independent root
    assert graph.topological_order().index("a") < graph.topological_order().index("c")


def test_an_empty_next_steps_list_makes_a_dag_without_edges():
    graph = load("name: x\nsteps:\n  - {id: a, nextSteps: []}\n  - {id: b}\n").graph
    assert graph.edges == []


def test_topological_order_respects_edges_and_breaks_ties_by_list_order():
    text = yaml("""
        name: x
        steps:
          - {id: z, nextSteps: [y]}
          - {id: y}
          - {id: b, nextSteps: [z]}
          - {id: a}
    """)
    assert load(text).graph.topological_order() == ["b", "z", "y", "a"]


def test_the_graph_renders_as_mermaid_and_dot():
    text = yaml("""
        name: g
        steps:
          - id: a
            nextSteps: [b, {step: c, on: failure}]
          - id: b
          - id: c
    """)
    graph = load(text).graph
    mermaid = graph.to_mermaid()
    assert mermaid.startswith("flowchart")
    assert "a --> b" in mermaid and 'a -->|"failure"| c' in mermaid
    dot = graph.to_dot()
    assert dot.startswith('digraph "g"') and dot.rstrip().endswith("}")
    assert '"a" -> "b"' in dot and '"a" -> "c" [label="failure"]' in dot


MERMAID_EDGE = re.compile(r'^    (\w+) -->(?:\|(?:"[^"\n]*"|[^|"\n]*)\|)? ?(\w+)$')


def test_mermaid_stays_valid_with_any_condition_text():
    text = yaml("""
        name: g
        steps:
          - id: a
            nextSteps:
              - {step: b, condition: "steps.a.result.items | length > 0"}
              - {step: c, on: failure, condition: 'steps.a.result.name == "x"'}
              - step: d
                condition: |
                  steps.a.result.n > 1
                  and steps.a.status == 'succeeded'
          - id: b
          - id: c
          - id: d
    """)
    graph = load(text).graph
    lines = graph.to_mermaid().splitlines()
    assert len(lines) == 1 + 4 + 3, lines  # header, nodes, edges: no label breaks a line
    edges = lines[5:]
    for line in edges:
        match = MERMAID_EDGE.match(line)
        assert match, f"not a Mermaid edge: {line!r}"
    assert [MERMAID_EDGE.match(line).groups() for line in edges] == [
        ("a", "b"),
        ("a", "c"),
        ("a", "d"),
    ]


def test_mermaid_does_not_emit_the_reserved_word_end_as_a_bare_node():
    """Mermaid's docs: a lowercase `end` node breaks a flowchart."""
    graph = load("name: g\nsteps: [{id: start}, {id: end}]\n").graph
    mermaid = graph.to_mermaid()
    assert re.search(r"(^|\s)end(\s|$)", mermaid) is None, mermaid
    assert "start" in mermaid


# -- YAML 1.2 ---------------------------------------------------------------------------------


def test_the_on_key_stays_on_and_yes_no_stay_strings():
    text = yaml("""
        name: x
        steps:
          - id: a
            nextSteps:
              - {step: b, on: failure}
              - step: c
                on: always
            inputs: {country: NO, answer: yes, switch: off, flag: true, other: False}
          - id: b
          - id: c
    """)
    loaded = load(text)
    assert [e.on for e in loaded.definition.steps[0].edges] == [On.failure, On.always]
    assert loaded.definition.steps[0].inputs == {
        "country": "NO",
        "answer": "yes",
        "switch": "off",
        "flag": True,
        "other": False,
    }


def test_dates_and_timestamps_stay_strings():
    text = yaml("""
        name: x
        description: 2026-11-26
        params:
          day: {default: 2026-11-26}
        steps:
          - id: a
            inputs: {day: 2026-11-26, at: 2026-11-26T02:00:00Z, list: [2026-01-01]}
    """)
    loaded = load(text)
    assert loaded.definition.description == "2026-11-26"
    assert loaded.definition.params["day"].default == "2026-11-26"
    assert loaded.definition.steps[0].inputs == {
        "day": "2026-11-26",
        "at": "2026-11-26T02:00:00Z",
        "list": ["2026-01-01"],
    }
    assert loaded.params.resolve({}, {"logical_date": "x"}) == {"day": "2026-11-26"}


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("12:30", "12:30"),  # YAML 1.1 reads a base-60 integer, 750
        ("=", "="),  # YAML 1.1's "value" tag, which a safe loader cannot construct
        ("0755", 755),  # YAML 1.1 reads an octal integer, 493
    ],
)
def test_yaml_1_1_scalar_surprises_do_not_apply(scalar, value):
    loaded = load(f"name: x\nsteps:\n  - id: a\n    inputs: {{v: {scalar}}}\n")
    assert loaded.definition.steps[0].inputs == {"v": value}


def test_plain_scalars_keep_their_json_types():
    loaded = load("name: x\nsteps:\n  - id: a\n    inputs: {i: 3, f: 2.5, n: null, t: ~, s: x}\n")
    assert loaded.definition.steps[0].inputs == {"i": 3, "f": 2.5, "n": None, "t": None, "s": "x"}


def test_mermaid_quotes_labels_and_renames_reserved_ids():
    loaded = load_text(
        "name: g\nsteps:\n"
        "  - id: end\n"
        '    nextSteps: [{step: b, condition: "steps.end.result | length > 0 and \'a\\"b\'"}]\n'
        "  - id: b\n",
        "g.yaml",
    )
    text = loaded.graph.to_mermaid()
    assert 'step_end["end"]' in text
    assert "step_end -->|\"steps.end.result | length > 0 and 'a#quot;b'\"| b" in text


def test_an_empty_runner_key_is_an_error():
    with pytest.raises(DefinitionError) as info:
        load_text("name: x\nsteps:\n  - id: a\n    runner: ''\n", "x.yaml")
    assert info.value.problems[0].line == 4


def test_a_step_id_longer_than_the_database_column_is_refused():
    with pytest.raises(DefinitionError) as info:
        load_text(f"name: x\nsteps:\n  - id: {'s' * 201}\n", "x.yaml")
    assert "at most 200 characters" in info.value.problems[0].message
