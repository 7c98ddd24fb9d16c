"""Typed run params: what `-p KEY=VALUE` strings and API JSON become; how bad ones are refused."""

from __future__ import annotations

import json
import textwrap

import pytest

from engine.definition import load_text
from engine.errors import DefinitionError, EngineError, ParamsError

RUN = {
    "id": None,
    "trigger": "cli",
    "scheduled_for": None,
    "logical_date": "2026-11-26T02:00:00+00:00",
}

TYPED = textwrap.dedent("""\
    name: typed
    params:
      i: {type: integer, default: 1}
      n: {type: number, default: 0}
      b: {type: boolean, default: false}
      a: {type: array, default: []}
      o: {type: object, default: {}}
      s: {type: string, default: x}
      plain: {default: y}
    steps: [{id: a}]
""")
DEFAULTS = {"i": 1, "n": 0.0, "b": False, "a": [], "o": {}, "s": "x", "plain": "y"}


def spec(text: str = TYPED):
    return load_text(text, "p.yaml").params


def resolve(given: dict, text: str = TYPED, run: dict = RUN) -> dict:
    resolved = spec(text).resolve(given, run)
    json.dumps(resolved, allow_nan=False)  # what is stored must be JSON
    return resolved


def errors(given: dict, text: str = TYPED) -> list[str]:
    with pytest.raises(ParamsError) as info:
        spec(text).resolve(given, RUN)
    assert info.value.errors
    assert str(info.value) == "; ".join(info.value.errors)
    return info.value.errors


def test_params_errors_belong_to_the_engine_error_tree():
    assert issubclass(ParamsError, EngineError)


def test_defaults_fill_every_param_not_given():
    assert resolve({}) == DEFAULTS


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("i", "5", 5),
        ("i", "-12", -12),
        ("i", "99999999999999999999", 99999999999999999999),
        ("n", "2.5", 2.5),
        ("n", "3", 3.0),
        ("n", "-1e3", -1000.0),
        ("b", "true", True),
        ("b", "false", False),
        ("b", "True", True),
        ("a", "[1, 2]", [1, 2]),
        ("a", '["x", {"k": null}]', ["x", {"k": None}]),
        ("a", "[]", []),
        ("o", '{"k": [1, 2]}', {"k": [1, 2]}),
        ("o", "{}", {}),
        ("s", "007", "007"),
        ("s", "[1, 2]", "[1, 2]"),
        ("s", "true", "true"),
        ("s", "", ""),
        ("plain", "2026-11-26", "2026-11-26"),
    ],
)
def test_cli_strings_are_coerced_to_the_param_type(name, text, value):
    resolved = resolve({name: text})
    assert resolved[name] == value
    assert type(resolved[name]) is type(value)
    assert {k: v for k, v in resolved.items() if k != name} == {
        k: v for k, v in DEFAULTS.items() if k != name
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [("i", 5), ("n", 2.5), ("b", True), ("a", [1, "x"]), ("o", {"k": {"j": 1}}), ("s", "v")],
)
def test_json_values_from_the_api_are_taken_as_they_are(name, value):
    assert resolve({name: value})[name] == value


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("i", "five"),
        ("i", "5.5"),
        ("i", ""),
        ("n", "lots"),
        ("b", "maybe"),
        ("a", "not json"),
        ("a", '{"k": 1}'),
        ("a", '"x"'),
        ("o", "[1]"),
        ("o", "nope"),
    ],
)
def test_a_value_that_does_not_fit_is_refused_naming_the_param(name, text):
    [message] = errors({name: text})
    assert message.startswith(f"params.{name}: ")


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_a_number_that_is_not_json_is_refused(text):
    [message] = errors({"n": text})
    assert "params" in message


def test_a_nan_inside_a_json_array_is_refused_not_silently_changed():
    try:
        resolved = resolve({"a": "[1, NaN]"})
    except ParamsError:
        return
    assert resolved["a"] == [1, float("nan")], f"NaN became {resolved['a']!r}"


def test_a_required_param_that_is_missing_is_refused():
    text = "name: r\nparams:\n  day: {type: string}\n  n: {type: integer}\nsteps: [{id: a}]\n"
    found = errors({}, text)
    assert len(found) == 2
    assert found[0].startswith("params.day: ") and found[1].startswith("params.n: ")
    assert resolve({"day": "d", "n": "1"}, text) == {"day": "d", "n": 1}


def test_an_unknown_param_is_refused():
    [message] = errors({"zz": "1"})
    assert message == "params.zz: unknown param"


def test_a_definition_without_params_refuses_any():
    text = "name: none\nsteps: [{id: a}]\n"
    assert resolve({}, text) == {}
    assert errors({"x": "1"}, text) == ["params.x: unknown param"]


def test_every_fault_is_reported_at_once():
    found = errors({"zz": "1", "i": "x", "b": "perhaps"})
    assert sorted(m.split(":")[0] for m in found) == ["params.b", "params.i", "params.zz"]


ENUMS = textwrap.dedent("""\
    name: enums
    params:
      mode: {enum: [fast, slow], default: fast}
      level: {type: integer, enum: [1, 2, 3], default: 1}
    steps: [{id: a}]
""")


def test_an_enum_accepts_its_values_and_refuses_others_listing_them():
    assert resolve({"mode": "slow"}, ENUMS)["mode"] == "slow"
    [message] = errors({"mode": "medium"}, ENUMS)
    assert message.startswith("params.mode: ")
    assert "fast" in message and "slow" in message


def test_an_integer_enum_accepts_its_values_given_as_cli_strings():
    assert resolve({"level": 2}, ENUMS)["level"] == 2
    assert resolve({"level": "2"}, ENUMS)["level"] == 2
    [message] = errors({"level": "7"}, ENUMS)
    assert message.startswith("params.level: ")


TEMPLATED = textwrap.dedent("""\
    name: templated
    params:
      day: {type: string, default: "{{ run.logical_date[:10] }}"}
      trigger: {default: "by {{ run.trigger }}"}
      year: {type: integer, default: "{{ run.logical_date[:4] }}"}
    steps: [{id: a}]
""")


def test_template_defaults_are_rendered_from_the_run():
    assert resolve({}, TEMPLATED) == {"day": "2026-11-26", "trigger": "by cli", "year": 2026}
    other = {**RUN, "trigger": "cron", "logical_date": "2027-01-02T00:00:00+00:00"}
    assert resolve({}, TEMPLATED, other) == {
        "day": "2027-01-02",
        "trigger": "by cron",
        "year": 2027,
    }


def test_a_given_value_wins_over_a_template_default():
    assert resolve({"day": "2020-01-01", "year": "1999"}, TEMPLATED) == {
        "day": "2020-01-01",
        "trigger": "by cli",
        "year": 1999,
    }


def test_a_template_default_that_cannot_render_is_a_params_error():
    text = 'name: t\nparams:\n  p: {default: "{{ run.nope }}"}\nsteps: [{id: a}]\n'
    [message] = errors({}, text)
    assert message.startswith("params.p: ") and "default" in message


def test_a_template_default_reading_another_param_sees_that_params_default():
    """Validation accepts `params.` in a default; a run that leaves the other param out must
    still work (or validation must refuse the default in the first place)."""
    text = (
        'name: t\nparams:\n  s: {default: x}\n  p: {default: "{{ params.s }}-y"}\n'
        "steps: [{id: a}]\n"
    )
    try:
        params = spec(text)
    except DefinitionError:
        return
    assert params.resolve({"s": "g"}, RUN) == {"s": "g", "p": "g-y"}
    assert params.resolve({}, RUN) == {"s": "x", "p": "x-y"}


def test_a_null_default_makes_an_optional_param_that_resolves():
    """Validation accepts `default: null`; a run must then not fail on it (or validation must
    refuse it)."""
    text = "name: t\nparams:\n  limit: {type: integer, default: null}\nsteps: [{id: a}]\n"
    try:
        params = spec(text)
    except DefinitionError:
        return
    assert params.resolve({}, RUN) == {"limit": None}
    assert params.resolve({"limit": "3"}, RUN) == {"limit": 3}


def test_a_nul_character_is_refused_everywhere():
    [message] = errors({"s": "a\x00b"})
    assert "NUL" in message or "\\u0000" in message
