"""Properties of the loader under random input.

Whatever a file holds, loading it ends in a LoadedDefinition or a DefinitionError whose problems
all point inside the file; and every valid definition written out by `yaml.safe_dump` loads back
as the same definition.
"""

from __future__ import annotations

import copy
import re
import textwrap
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine.definition import LoadedDefinition, load_text
from engine.definition.source import parse_yaml
from engine.errors import DefinitionError

FILE = "fuzz.yaml"
LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
"""What YAML counts as a line break, and so what problem positions count lines by."""

PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]  # no slow "explain" phase
FUZZ = settings(
    max_examples=80,
    deadline=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BASE_TEXT = textwrap.dedent("""\
    name: etl
    description: Daily sales ETL
    cron: "0 2 * * *"
    timezone: Asia/Seoul
    concurrency: 2
    params:
      day: {type: string, default: "{{ run.logical_date[:10] }}"}
      minAmount: {type: number, default: 0}
      ids: {type: array, default: [1, 2]}
      mode: {enum: [fast, slow], default: fast}
    defaults:
      retry: {maxAttempts: 3, delaySeconds: 5, backoff: 2.0, maxDelaySeconds: 300}
      timeoutSeconds: 600
    steps:
      - id: collect
        runner: collect
        inputs: {source: data/sales.csv, day: "{{ params.day }}"}
        nextSteps: [process]
      - id: process
        inputs:
          rows: "{{ steps.collect.result.rows }}"
          nested: [1, {deep: "n={{ params.minAmount }}"}]
        nextSteps:
          - load
          - {step: alert, on: failure}
          - {step: report_empty, condition: "steps.process.result.count == 0"}
      - id: load
        condition: "steps.process.result.count > 0"
        map:
          items: "{{ steps.process.result.by_region }}"
          as: region
          key: "{{ region.name }}"
          concurrency: 4
          failFast: true
        inputs: {region: "{{ region }}"}
        nextSteps: [notify]
      - id: report_empty
        nextSteps: [notify]
      - id: alert
        allowFailure: true
      - id: notify
        join: any
""")
BASE: dict[str, Any] = parse_yaml(BASE_TEXT, FILE).data  # read as the engine reads it


def check(text: str) -> LoadedDefinition | DefinitionError:
    """Load `text`; only a LoadedDefinition or a well-located DefinitionError may come out."""
    try:
        return load_text(text, FILE)
    except DefinitionError as exc:
        assert exc.problems, "a DefinitionError without problems"
        lines = LINE_BREAK.split(text)
        for p in exc.problems:
            assert p.file == FILE
            assert isinstance(p.message, str) and p.message
            assert 1 <= p.line <= len(lines), (p, len(lines))
            assert 1 <= p.column <= len(lines[p.line - 1]) + 1, (p, lines[p.line - 1])
        return exc


def test_the_base_definition_is_valid():
    assert isinstance(check(BASE_TEXT), LoadedDefinition)
    assert isinstance(check(yaml.safe_dump(BASE)), LoadedDefinition)


# -- random edits of a valid definition ---------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
KNOWN_KEYS = [
    "name",
    "steps",
    "id",
    "runner",
    "inputs",
    "nextSteps",
    "nextStep",
    "step",
    "on",
    "condition",
    "join",
    "params",
    "type",
    "default",
    "enum",
    "retry",
    "maxAttempts",
    "cron",
    "timezone",
    "defaults",
    "allowFailure",
    "timeoutSeconds",
    "queue",
]
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=10)
EXPRESSIONS = [
    "{{ steps.collect.result.rows }}",
    "{{ steps.nowhere.result }}",
    "{{ 1 + }}",
    "steps.load.status == 'ok'",
    "{{ ''.__class__ }}",
    "{{ params.day",
    "}}{{",
    "steps.process.result.count >",
    "{% for %}",
    "collect",
    "process",
    "notify",
]


def nodes(obj: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a value inside `obj` (the root excluded)."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            found.append((*path, k))
            found += nodes(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found.append((*path, i))
            found += nodes(v, (*path, i))
    return found


def parent_of(doc: Any, path: tuple) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


def mutate(doc: dict, data: st.DataObject) -> None:
    paths = nodes(doc)
    path = data.draw(st.sampled_from(paths))
    parent, last = parent_of(doc, path), path[-1]
    op = data.draw(
        st.sampled_from(["delete", "rename", "replace", "expression", "insert", "duplicate"])
    )
    if op == "delete":
        del parent[last]
    elif op == "rename" and isinstance(parent, dict):
        parent[data.draw(keys)] = parent.pop(last)
    elif op == "replace":
        parent[last] = data.draw(values)
    elif op == "expression":
        parent[last] = data.draw(st.sampled_from(EXPRESSIONS))
    elif op == "insert" and isinstance(parent, dict):
        parent[data.draw(keys)] = data.draw(values)
    elif op == "insert" and isinstance(parent, list):
        parent.insert(data.draw(st.integers(0, len(parent))), data.draw(values))
    elif op == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))


@FUZZ
@given(st.data())
def test_random_edits_of_a_valid_definition_load_or_fail_with_located_problems(data):
    doc = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 4))):
        if isinstance(doc, dict) and nodes(doc):
            mutate(doc, data)
    flow = data.draw(st.booleans())
    check(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, default_flow_style=flow))


# -- random edits of the text -------------------------------------------------------------------

GARBAGE_CHARS = [*":-[]{},&*!|>'\"%@`#?\t\n ", "\u00e9", "\u2028", "\ufeff", "\x85"]
garbage = st.text(alphabet=st.sampled_from(GARBAGE_CHARS), max_size=12) | st.text(max_size=12)


@FUZZ
@given(st.data())
def test_random_text_edits_never_raise_anything_but_a_definition_error(data):
    text = BASE_TEXT
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(
            st.sampled_from(
                ["truncate", "insert", "delete", "swap_lines", "indent", "replace_char"]
            )
        )
        at = data.draw(st.integers(0, len(text)))
        if op == "truncate":
            text = text[:at]
        elif op == "insert":
            text = text[:at] + data.draw(garbage) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + data.draw(st.integers(1, 40)) :]
        elif op == "replace_char" and at < len(text):
            text = text[:at] + data.draw(st.characters()) + text[at + 1 :]
        else:
            lines = text.split("\n")
            i = data.draw(st.integers(0, len(lines) - 1))
            j = data.draw(st.integers(0, len(lines) - 1))
            if op == "swap_lines":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines[i] = " " * data.draw(st.integers(0, 5)) + lines[i]
            text = "\n".join(lines)
    check(text)


@FUZZ
@given(st.text(max_size=300))
def test_random_text_never_raises_anything_but_a_definition_error(text):
    check(text)


yaml_tokens = st.sampled_from(
    [
        "name:",
        "steps:",
        "- ",
        "id:",
        "&a",
        "*a",
        "!!str",
        "!!python/object:os.system",
        "<<:",
        "{",
        "}",
        "[",
        "]",
        ",",
        ": ",
        "\n",
        "  ",
        "'",
        '"',
        "|",
        ">",
        "---",
        "...",
        "? ",
        "#",
        "%YAML 1.2",
        "x",
        "1",
        "true",
        "null",
        "~",
        "{{ steps.a.result }}",
        "nextSteps:",
        "@",
    ]
)


@FUZZ
@given(st.lists(yaml_tokens, max_size=40).map("".join))
def test_random_yaml_shaped_text_never_raises_anything_but_a_definition_error(text):
    check(text)


# -- round trip ---------------------------------------------------------------------------------

NUMBER_LIKE = re.compile(r"[-+]?[0-9.][0-9a-fA-FxXoO_.eE+:-]*|[-+]?\.(inf|Inf|INF|nan|NaN|NAN)")
"""Strings PyYAML's YAML 1.1 writer may leave unquoted though YAML 1.2, which definitions follow,
reads them as numbers (`1e3`, `08`, `0o17`): the round trip leaves them out."""


def unambiguous(text: str) -> bool:
    return NUMBER_LIKE.fullmatch(text) is None


ids = st.from_regex(r"(?:[A-Za-z]|_[A-Za-z0-9]|_$)[A-Za-z0-9_]{0,8}", fullmatch=True)
names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,12}", fullmatch=True).filter(unambiguous)
plain_text = st.text(max_size=16).filter(unambiguous)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | plain_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(plain_text, inner, max_size=3),
    max_leaves=6,
)
PARAM_VALUES = {
    "string": plain_text.filter(lambda s: "{{" not in s and "{%" not in s),
    "integer": st.integers(-(10**6), 10**6),
    "number": st.floats(-1e6, 1e6, allow_nan=False),
    "boolean": st.booleans(),
    "array": st.lists(st.integers(), max_size=3),
    "object": st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
}


@st.composite
def definitions(draw) -> dict[str, Any]:
    """A valid definition: unique ids, edges only forward (acyclic), expressions only upstream."""
    step_ids = draw(st.lists(ids, min_size=1, max_size=6, unique=True))
    dag = draw(st.booleans())
    params = {}
    for pname in draw(st.lists(ids, max_size=3, unique=True)):
        kind = draw(st.sampled_from(sorted(PARAM_VALUES)))
        spec: dict[str, Any] = {"type": kind}
        if draw(st.booleans()):
            spec["default"] = draw(PARAM_VALUES[kind])
        if draw(st.booleans()):
            spec["description"] = draw(plain_text)
        params[pname] = spec
    steps = []
    upstream: dict[str, set[str]] = {s: set() for s in step_ids}
    for i, sid in enumerate(step_ids):
        step: dict[str, Any] = {"id": sid}
        if draw(st.booleans()):
            step["runner"] = draw(ids)
        later = step_ids[i + 1 :]
        if dag and later and draw(st.booleans()):
            targets = draw(st.lists(st.sampled_from(later), max_size=3, unique=True))
            edges = []
            for t in targets:
                form = draw(st.sampled_from(["name", "on", "condition"]))
                if form == "name":
                    edges.append(t)
                elif form == "on":
                    edges.append(
                        {"step": t, "on": draw(st.sampled_from(["success", "failure", "always"]))}
                    )
                else:
                    edges.append({"step": t, "condition": f"steps.{sid}.status == 'succeeded'"})
            step["nextSteps"] = edges
        elif dag and draw(st.booleans()):
            step["nextSteps"] = []
        steps.append(step)
    if not dag:
        for i, sid in enumerate(step_ids):
            upstream[sid] = set(step_ids[:i])
    else:
        for step in steps:  # edges go forward, so list order is a topological order
            for edge in step.get("nextSteps", []):
                target = edge if isinstance(edge, str) else edge["step"]
                upstream[target] |= upstream[step["id"]] | {step["id"]}
    for step in steps:
        inputs = draw(
            st.dictionaries(plain_text.filter(lambda s: "{" not in s), json_values, max_size=3)
        )
        inputs = {
            k: v for k, v in inputs.items() if not (isinstance(v, str) and ("{{" in v or "{%" in v))
        }
        ups = sorted(upstream[step["id"]])
        if ups and draw(st.booleans()):
            up = draw(st.sampled_from(ups))
            inputs["from_upstream"] = [
                f"{{{{ steps.{up}.result }}}}",
                {"n": f"x{{{{ steps.{up}.status }}}}"},
            ]
            step["condition"] = f"steps.{up}.status != 'failed'"
        if params and draw(st.booleans()):
            inputs["param"] = f"{{{{ params.{draw(st.sampled_from(sorted(params)))} }}}}"
        if inputs:
            step["inputs"] = inputs
        if draw(st.booleans()):
            step["retry"] = {
                "maxAttempts": draw(st.integers(1, 5)),
                "delaySeconds": draw(st.integers(0, 10)),
            }
        if draw(st.booleans()):
            step["join"] = draw(st.sampled_from(["all", "any"]))
    definition: dict[str, Any] = {"name": draw(names), "steps": steps}
    if params:
        definition["params"] = params
    if draw(st.booleans()):
        definition["cron"] = draw(st.sampled_from(["0 2 * * *", "*/5 * * * *", "@daily"]))
        definition["timezone"] = draw(st.sampled_from(["UTC", "Europe/Paris", "Asia/Seoul"]))
    if draw(st.booleans()):
        definition["description"] = draw(plain_text)
    return definition


@settings(
    max_examples=60, deadline=None, phases=PHASES, suppress_health_check=[HealthCheck.too_slow]
)
@given(definitions(), st.booleans())
def test_valid_definitions_round_trip_through_yaml_safe_dump(definition, flow):
    # without allow_unicode: PyYAML itself does not read back a raw NEL it wrote
    text = yaml.safe_dump(definition, sort_keys=False, default_flow_style=flow)
    result = check(text)
    assert isinstance(result, LoadedDefinition), f"{result}\n---\n{text}"
    dumped = result.definition.model_dump(by_alias=True, exclude_unset=True)
    assert dumped == definition
    graph = result.graph
    assert graph.order == [s["id"] for s in definition["steps"]]
    if not any("nextSteps" in s for s in definition["steps"]):
        assert len(graph.edges) == len(definition["steps"]) - 1
