"""YAML safety: hostile or broken files end in a located DefinitionError and nothing else.

Nothing in a definition file may construct Python objects or run code, expand without bound, or
crash the loader with anything but a DefinitionError.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from engine.definition import load_file, load_text
from engine.definition.source import MAX_FILE_BYTES, parse_yaml
from engine.errors import DefinitionError, Problem

FILE = "def.yaml"
VALID = "name: x\nsteps: [{id: a}]\n"


def at(text: str, needle: str) -> tuple[int, int]:
    index = text.index(needle)
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def refused(text: str) -> list[Problem]:
    """The problems of `text`; anything but a DefinitionError fails the test."""
    with pytest.raises(DefinitionError) as info:
        load_text(text, FILE)
    found = info.value.problems
    assert found
    lines = text.count("\n") + 1
    for p in found:
        assert p.file == FILE
        assert 1 <= p.line <= lines and p.column >= 1
    return found


def load_or_refuse(text: str) -> list[Problem]:
    """Load `text`; its problems if refused. Any other exception fails the test, briefly."""
    try:
        load_text(text, FILE)
    except DefinitionError as exc:
        return exc.problems
    except BaseException as exc:  # a crash is the finding; its 1000-frame traceback is noise
        pytest.fail(f"{type(exc).__name__} instead of a DefinitionError: {exc}", pytrace=False)
    return []


def refused_file(path) -> Problem:
    with pytest.raises(DefinitionError) as info:
        load_file(path)
    [p] = info.value.problems
    assert p.file == str(path)
    assert p.line >= 1 and p.column >= 1
    return p


# -- object-constructing tags -----------------------------------------------------------------


def creating_tags(marker: str) -> list[str]:
    """Tags that would create `marker` if any loader built them."""
    return [
        f'!!python/object/apply:os.system ["touch {marker}"]',
        f'!!python/object/apply:subprocess.check_call [[touch, "{marker}"]]',
        f'!!python/object/new:builtins.open ["{marker}", "w"]',
        f'!!python/object/apply:builtins.open ["{marker}", "w"]',
        "!!python/object/apply:pathlib.Path.touch "
        f'[!!python/object/apply:pathlib.Path ["{marker}"]]',
        "!!python/object/new:type "
        f'[x, [], {{y: !!python/object/apply:os.system ["touch {marker}"]}}]',
    ]


@pytest.mark.parametrize("index", range(6))
@pytest.mark.parametrize("place", ["name", "inputs", "unknown_key", "alias"])
def test_python_object_tags_are_refused_at_the_tag_and_nothing_runs(tmp_path, index, place):
    marker = tmp_path / "pwned"
    tag = creating_tags(str(marker))[index]
    text = {
        "name": f"name: {tag}\nsteps: [{{id: a}}]\n",
        "inputs": f"name: x\nsteps:\n  - id: a\n    inputs:\n      v: {tag}\n",
        "unknown_key": f"name: x\nsteps: [{{id: a}}]\nextra: {tag}\n",
        "alias": f"name: x\nanchor: &t {tag}\nsteps: [{{id: a, inputs: {{v: *t}}}}]\n",
    }[place]
    found = refused(text)
    assert not marker.exists(), "a YAML tag ran code"
    node = "&t" if place == "alias" else "!!python"  # an anchored node starts at its anchor
    assert (found[0].line, found[0].column) == at(text, node)
    assert "python/object" in found[0].message


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/name:os.system",
        "!!python/module:os",
        "!!python/tuple [1, 2]",
        "!!python/bytes aGk=",
        "!foo bar",
        "!<tag:example.com,2000:x> y",
    ],
)
def test_other_non_standard_tags_are_refused_at_the_tag(tag):
    text = f"name: x\nsteps:\n  - id: a\n    inputs: {{v: {tag}}}\n"
    [p] = refused(text)
    # libyaml marks a tagged empty scalar where its (empty) value ends: the line is what counts
    assert p.line == 4 and p.column >= at(text, "!")[1]


def test_nothing_runs_through_load_file_either(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(
        f'name: !!python/object/apply:os.system ["touch {marker}"]\nsteps: [{{id: a}}]\n'
    )
    p = refused_file(path)
    assert (p.line, p.column) == (1, 7)
    assert not marker.exists()


def test_standard_tags_still_work():
    text = 'name: !!str x\nsteps:\n  - {id: a, inputs: {v: !!str 0755, n: !!int "3"}}\n'
    loaded = load_text(text, FILE)
    assert loaded.definition.steps[0].inputs == {"v": "0755", "n": 3}


@pytest.mark.parametrize(
    "value",
    ["!!set {a, b}", "!!binary aGVsbG8=", "!!timestamp 2026-11-26", ".nan", "-.inf"],
)
def test_every_loaded_value_is_json_data_or_refused(value):
    """Inputs are stored as JSON and handed to remote workers: a set, bytes, a date or NaN that
    passed validation would only fail later, at run time."""
    text = f"name: x\nsteps:\n  - id: a\n    inputs: {{v: {value}}}\n"
    try:
        loaded = load_text(text, FILE)
    except DefinitionError as exc:
        assert exc.problems[0].line == 4
        return
    json.dumps(loaded.definition.steps[0].inputs, allow_nan=False)


# -- alias bombs ------------------------------------------------------------------------------


def laughs(levels: int, width: int) -> str:
    lines = [
        "name: x",
        "steps:",
        "  - id: a",
        "    inputs:",
        f"      l0: &l0 [{', '.join(['lol'] * width)}]",
    ]
    lines += [f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("levels", "width"), [(9, 9), (12, 10), (64, 2), (300, 2)])
def test_a_billion_laughs_is_refused_quickly_with_a_clear_message(levels, width):
    found = refused(laughs(levels, width))
    assert len(found) == 1
    assert "alias" in found[0].message


@pytest.mark.timeout(20)
def test_a_mapping_alias_bomb_is_refused():
    lines = ["a0: &a0 {k: v, l: w}"]
    lines += [f"a{i}: &a{i} {{x: *a{i - 1}, y: *a{i - 1}, z: *a{i - 1}}}" for i in range(1, 40)]
    found = refused("\n".join(lines) + "\nname: x\nsteps: [{id: a}]\n")
    assert "alias" in found[0].message


def test_ordinary_anchors_and_aliases_still_work():
    text = textwrap.dedent("""\
        name: x
        steps:
          - id: a
            inputs: &shared {source: data.csv, rows: [1, 2, 3]}
            retry: &retry {maxAttempts: 3}
          - id: b
            inputs: *shared
            retry: *retry
    """)
    steps = load_text(text, FILE).definition.steps
    assert steps[0].inputs == steps[1].inputs == {"source": "data.csv", "rows": [1, 2, 3]}
    assert steps[1].retry.max_attempts == 3


# -- size and depth ---------------------------------------------------------------------------


def test_an_oversized_text_is_refused_before_parsing():
    text = VALID + "#" * MAX_FILE_BYTES
    [p] = refused(text)
    assert (p.line, p.column) == (1, 1)
    assert "limit" in p.message


def test_an_oversized_file_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(VALID + "#" * MAX_FILE_BYTES)
    assert "limit" in refused_file(path).message


def test_a_file_over_the_byte_limit_is_refused_even_in_multibyte_characters(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(VALID + "# " + "é" * (MAX_FILE_BYTES // 2 + 16) + "\n", encoding="utf-8")
    assert path.stat().st_size > MAX_FILE_BYTES
    assert "limit" in refused_file(path).message


@pytest.mark.parametrize("depth", [300, 600, 2000, 100_000])
def test_deeply_nested_flow_inputs_are_loaded_or_refused_never_a_crash(depth):
    text = f"name: x\nsteps:\n  - id: a\n    inputs: {{v: {'[' * depth}{']' * depth}}}\n"
    assert all(p.line == 4 for p in load_or_refuse(text))


@pytest.mark.parametrize("depth", [300, 900])
def test_deeply_nested_block_inputs_are_loaded_or_refused_never_a_crash(depth):
    body = "".join("  " * (i + 3) + "k:\n" for i in range(depth)) + "  " * (depth + 3) + "v\n"
    text = "name: x\nsteps:\n  - id: a\n    inputs:\n" + body
    assert all(p.line >= 4 for p in load_or_refuse(text))


# -- duplicate keys ---------------------------------------------------------------------------


def test_a_duplicate_key_is_refused_naming_both_lines():
    text = "name: x\nsteps: [{id: a}]\nname: y\n"
    [p] = refused(text)
    assert (p.line, p.column) == (3, 1)
    assert "'name'" in p.message and "line 1" in p.message


def test_duplicate_keys_are_found_in_nested_and_flow_mappings_all_at_once():
    text = textwrap.dedent("""\
        name: x
        steps:
          - id: a
            inputs: {k: 1, j: 2, k: 3}
          - id: b
            runner: r
            runner: s
    """)
    found = refused(text)
    assert [(p.line, p.column) for p in found] == [at(text, "k: 3"), at(text, "runner: s")]
    assert "'k'" in found[0].message and "line 4" in found[0].message
    assert "'runner'" in found[1].message and "line 6" in found[1].message


def test_a_merge_key_is_not_a_duplicate():
    text = "base: &b {runner: r}\nname: x\nsteps:\n  - {<<: *b, id: a}\n"
    # `base` is an unknown key; the merge itself must not be reported as a duplicate
    found = refused(text)
    assert all("duplicate" not in p.message for p in found)


# -- not a definition at all ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "# only a comment\n",
        "---\n",
        "null\n",
        "~\n",
        "- a\n- b\n",
        "just text\n",
        "42\n",
        "[name, steps]\n",
    ],
)
def test_a_document_that_is_not_a_mapping_is_refused(text):
    [p] = refused(text)
    assert "mapping" in p.message


def test_several_documents_are_refused_at_the_second():
    text = "name: x\nsteps: [{id: a}]\n---\nname: y\n"
    [p] = refused(text)
    assert p.line == 3
    assert "document" in p.message


@pytest.mark.parametrize(
    ("text", "positions"),
    [
        # unclosed at the end of the file: the end of the last line, or the empty line after it
        ("name: x\nsteps: [{id: a}\n", {(3, 1), (2, 16)}),
        ('name: "x\nsteps: []\n', {(3, 1), (2, 10)}),
        ("name: x\nsteps:\n\t- id: a\n", {(3, 1)}),  # a tab as indentation
        ("name: x\n  bad: indent\nsteps: []\n", {(2, 6)}),  # mapping value where none may stand
        ("name: x\nsteps: [{id: *nope}]\n", {(2, 14)}),  # undefined alias
        ("? [a, b]\n: 1\n", {(1, 3)}),  # unhashable key
    ],
)
def test_yaml_syntax_errors_are_located(text, positions):
    [p] = refused(text)
    assert (p.line, p.column) in positions
    assert p.message.startswith("YAML")


def test_an_error_at_the_end_of_a_file_without_a_final_newline_stays_inside_the_file():
    for text in ("name: x\nsteps: [{id: a}", "a: [", "---", "name: x\n---"):
        with pytest.raises(DefinitionError) as info:
            load_text(text, FILE)
        lines = text.split("\n")
        for p in info.value.problems:
            assert p.line <= len(lines), (text, p)
            assert p.column <= len(lines[p.line - 1]) + 1, (text, p)


def test_a_control_character_is_refused():
    [p] = refused("name: x\x00\nsteps: [{id: a}]\n")
    assert p.line == 1


def test_a_non_string_top_level_key_is_refused_at_the_key():
    text = VALID + "1: 2\n"
    [p] = refused(text)
    assert (p.line, p.column) == (3, 1)


# -- files ------------------------------------------------------------------------------------


def test_invalid_utf8_is_refused_at_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: x\nsteps:\n  - {id: a, description: caf\xe9}\n")
    p = refused_file(path)
    assert "UTF-8" in p.message
    assert p.line == 3


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    assert load_file(path).name == "x"


def test_utf8_text_is_read_as_utf8_whatever_the_locale(tmp_path):
    path = tmp_path / "u.yaml"
    path.write_bytes("name: x\ndescription: 日本語 ✓\nsteps: [{id: a}]\n".encode())
    assert load_file(path).definition.description == "日本語 ✓"


def test_a_missing_file_is_refused(tmp_path):
    p = refused_file(tmp_path / "nope.yaml")
    assert "cannot read" in p.message or "No such file" in p.message


def test_a_directory_is_refused(tmp_path):
    refused_file(tmp_path)


def test_a_path_below_a_file_is_refused(tmp_path):
    (tmp_path / "f.yaml").write_text(VALID)
    refused_file(tmp_path / "f.yaml" / "g.yaml")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text(VALID)
    path.chmod(0)
    try:
        refused_file(path)
    finally:
        path.chmod(0o600)


def test_parse_yaml_keeps_positions_for_any_path():
    doc = parse_yaml("a:\n  b: [1, {c: 2}]\n", FILE)
    assert doc.data == {"a": {"b": [1, {"c": 2}]}}
    assert doc.position(["a", "b", 1, "c"]) == (2, 14)
    assert doc.position(["a", "b", 1, "c"], key=True) == (2, 11)
    assert doc.position(["a", "nothing", "b"]) == (2, 6)  # unmatched parts are passed over
    assert doc.position([]) == (1, 1)
