"""Runner registration (`@job_handler`, `JobRegistry`) and discovery (DESIGN section 2).

Discovery imports into the process-wide `engine.registry.registry`; every test here uses keys and
module file names made unique by a token, so tests cannot see each other's runners.
"""

from __future__ import annotations

import functools
import inspect
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import engine
import engine.registry as registry_module
from engine.errors import DuplicateRunner, EngineError, RunnerError, RunnerNotFound
from engine.registry import JobRegistry, discover, job_handler


def first_place(inputs, ctx):
    return "first"


def second_place(inputs, ctx):
    return "second"


# -- registration -------------------------------------------------------------------------------


def test_the_decorator_registers_a_function_and_leaves_it_untouched(registry):
    def collect(inputs, ctx):
        return {"rows": 1}

    before = dict(collect.__dict__)
    decorated = registry.handler("collect")(collect)
    assert decorated is collect
    assert collect.__dict__ == before
    assert collect({}, None) == {"rows": 1}
    runner = registry.get("collect")
    assert runner.key == "collect"
    assert runner.target is collect
    assert runner.is_async is False
    assert runner.resolve() is collect
    assert "collect" in registry
    assert registry.keys() == ["collect"]


def test_async_functions_and_classes_are_registered_as_such(registry):
    @registry.handler("fetch")
    async def fetch(inputs, ctx):
        return 1

    @registry.handler("load")
    class Load:
        def run(self, inputs, ctx):
            return 2

    @registry.handler("aload")
    class ALoad:
        async def run(self, inputs, ctx):
            return 3

    assert inspect.iscoroutinefunction(fetch)  # still the user's coroutine function
    assert inspect.isclass(Load) and Load.__name__ == "Load"
    assert registry.get("fetch").is_async is True
    assert registry.get("load").is_async is False
    assert registry.get("aload").is_async is True
    first, second = registry.get("load").resolve(), registry.get("load").resolve()
    # resolve() gives the run method of a fresh instance each time
    assert first.__self__ is not second.__self__
    assert isinstance(first.__self__, Load)
    assert first({}, None) == 2


def test_a_class_without_a_run_method_is_refused(registry):
    class NoRun:
        def execute(self, inputs, ctx):
            return 1

    class RunNotCallable:
        run = 3

    with pytest.raises(RunnerError, match="run"):
        registry.handler("norun")(NoRun)
    with pytest.raises(RunnerError, match="run"):
        registry.add("notcallable", RunNotCallable)
    assert registry.keys() == []


@pytest.mark.parametrize("target", [42, "a string", None])
def test_a_non_callable_is_refused(registry, target):
    with pytest.raises(RunnerError):
        registry.add("x", target)
    assert "x" not in registry


@pytest.mark.parametrize("key", ["", None, 3])
def test_a_runner_key_must_be_a_non_empty_string(registry, key):
    with pytest.raises(RunnerError):
        registry.handler(key)


def test_a_key_taken_at_two_places_is_an_error_naming_both_file_and_line(registry):
    registry.add("dup", first_place)
    with pytest.raises(DuplicateRunner) as info:
        registry.add("dup", second_place)
    message = str(info.value)
    assert "'dup'" in message or "dup" in message
    assert f"test_registry.py:{first_place.__code__.co_firstlineno}" in message
    assert f"test_registry.py:{second_place.__code__.co_firstlineno}" in message
    assert isinstance(info.value, RunnerError) and isinstance(info.value, EngineError)
    # the first registration stands
    assert registry.get("dup").target is first_place


def test_decorating_two_functions_with_one_key_is_an_error(registry):
    @registry.handler("same")
    def one(inputs, ctx):
        return 1

    with pytest.raises(DuplicateRunner):

        @registry.handler("same")
        def two(inputs, ctx):
            return 2


def test_two_distinct_callables_without_source_still_cannot_share_a_key(registry):
    def scaled(factor, inputs, ctx):
        return factor

    registry.add("scaled", functools.partial(scaled, 1))
    with pytest.raises(DuplicateRunner):
        registry.add("scaled", functools.partial(scaled, 2))
    assert registry.get("scaled").resolve()({}, None) == 1


def test_the_same_function_registered_again_from_the_same_place_is_fine(registry):
    registry.add("again", first_place)
    registry.add("again", first_place)
    registry.handler("again")(first_place)
    assert registry.get("again").target is first_place
    assert registry.keys() == ["again"]


def test_an_unknown_key_raises_runner_not_found_listing_the_known_keys(registry):
    registry.add("collect", first_place)
    registry.add("load", second_place)
    with pytest.raises(RunnerNotFound) as info:
        registry.get("colect")
    message = str(info.value)
    assert "colect" in message
    assert "collect" in message and "load" in message
    assert isinstance(info.value, RunnerError)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(RunnerNotFound):
        JobRegistry().get("anything")


def test_job_handler_registers_into_the_process_registry():
    key = f"global-{uuid.uuid4().hex}"

    @engine.job_handler(key)
    def handler(inputs, ctx):
        return 1

    assert engine.job_handler is job_handler
    assert registry_module.registry.get(key).target is handler
    assert isinstance(registry_module.registry, JobRegistry)


def test_registries_are_independent_objects():
    a, b = JobRegistry(), JobRegistry()
    a.add("only-a", first_place)
    assert "only-a" in a and "only-a" not in b


# -- discovery ----------------------------------------------------------------------------------


@pytest.fixture
def iso(monkeypatch, tmp_path):
    """A clean environment for discover(): no ENGINE_RUNNERS, sys.path restored afterwards, and
    a token that makes keys and module names unique to this test."""
    monkeypatch.delenv("ENGINE_RUNNERS", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return uuid.uuid4().hex[:10]


def runner_module(path: Path, *keys: str, body: str = "") -> Path:
    """Write a runner module registering each key; the first decorator stands on line 3."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["from engine import job_handler", ""]
    for i, key in enumerate(keys):
        lines += [
            f"@job_handler({key!r})",
            f"def runner_{i}(inputs, ctx):",
            f"    return {key!r}",
            "",
        ]
    path.write_text("\n".join(lines) + textwrap.dedent(body))
    return path


def test_discover_imports_every_module_under_the_runners_folder_of_the_cwd(tmp_path, iso):
    runner_module(tmp_path / "runners" / f"collect_{iso}.py", f"collect-{iso}")
    runner_module(tmp_path / "runners" / "sub" / f"deep_{iso}.py", f"deep-{iso}")
    runner_module(
        tmp_path / "runners" / f"klass_{iso}.py",
        body=f"""
        @job_handler("klass-{iso}")
        class Load:
            async def run(self, inputs, ctx):
                return 1
    """,
    )
    runner_module(tmp_path / "elsewhere" / f"ignored_{iso}.py", f"ignored-{iso}")
    found = discover(cwd=tmp_path, use_entry_points=False)
    assert found is registry_module.registry
    assert f"collect-{iso}" in found
    assert f"deep-{iso}" in found
    assert found.get(f"klass-{iso}").is_async
    assert f"ignored-{iso}" not in found
    assert found.get(f"collect-{iso}").resolve()({}, None) == f"collect-{iso}"


def test_discover_without_a_runners_folder_is_fine(tmp_path, iso):
    assert discover(cwd=tmp_path, use_entry_points=False) is registry_module.registry


def test_discover_imports_named_modules_files_and_folders(tmp_path, iso, monkeypatch):
    site = tmp_path / "site"
    runner_module(site / f"mod_{iso}.py", f"by-module-{iso}")
    runner_module(site / f"pkg_{iso}" / "__init__.py")
    runner_module(site / f"pkg_{iso}" / "inner.py", f"by-submodule-{iso}")
    monkeypatch.syspath_prepend(str(site))
    runner_module(tmp_path / "proj" / "extra" / f"rel_{iso}.py", f"by-relative-file-{iso}")
    absolute = runner_module(tmp_path / "abs" / f"abs_{iso}.py", f"by-absolute-file-{iso}")
    runner_module(tmp_path / "proj" / f"folder_{iso}" / "a.py", f"by-folder-a-{iso}")
    runner_module(tmp_path / "proj" / f"folder_{iso}" / "nested" / "b.py", f"by-folder-b-{iso}")
    found = discover(
        [f"mod_{iso}", f"pkg_{iso}.inner", f"extra/rel_{iso}.py", str(absolute), f"folder_{iso}"],
        cwd=tmp_path / "proj",
        use_entry_points=False,
    )
    for key in (
        "by-module",
        "by-submodule",
        "by-relative-file",
        "by-absolute-file",
        "by-folder-a",
        "by-folder-b",
    ):
        assert f"{key}-{iso}" in found, key


def test_discover_reads_engine_runners_comma_separated(tmp_path, iso, monkeypatch):
    site = tmp_path / "site"
    runner_module(site / f"envmod_{iso}.py", f"env-module-{iso}")
    monkeypatch.syspath_prepend(str(site))
    runner_module(tmp_path / "proj" / f"envfile_{iso}.py", f"env-file-{iso}")
    runner_module(tmp_path / "proj" / f"envdir_{iso}" / "x.py", f"env-dir-{iso}")
    monkeypatch.setenv("ENGINE_RUNNERS", f" envmod_{iso} , envfile_{iso}.py,,envdir_{iso} ")
    found = discover(cwd=tmp_path / "proj", use_entry_points=False)
    assert f"env-module-{iso}" in found
    assert f"env-file-{iso}" in found
    assert f"env-dir-{iso}" in found


def _distribution(site: Path, iso: str, entry_points: str) -> None:
    """A minimal installed distribution: what `pip install` leaves in site-packages."""
    info = site / f"enginetest_{iso}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: enginetest-{iso}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[engine.runners]\n" + entry_points)
    (info / "RECORD").write_text("")


def test_discover_loads_entry_points_of_the_engine_runners_group(tmp_path, iso, monkeypatch):
    site = tmp_path / "site"
    runner_module(site / f"epmod_{iso}.py", f"entry-point-{iso}")
    runner_module(site / f"epother_{iso}.py", f"entry-point-attr-{iso}")
    _distribution(site, iso, f"mine = epmod_{iso}\nattr = epother_{iso}:runner_0\n")
    monkeypatch.syspath_prepend(str(site))
    found = discover(cwd=tmp_path)
    assert f"entry-point-{iso}" in found
    assert f"entry-point-attr-{iso}" in found
    # and only when asked
    runner_module(site / f"eplater_{iso}.py", f"entry-point-later-{iso}")
    (site / f"enginetest_{iso}-0.1.dist-info" / "entry_points.txt").write_text(
        f"[engine.runners]\nlater = eplater_{iso}\n"
    )
    discover(cwd=tmp_path, use_entry_points=False)
    assert f"entry-point-later-{iso}" not in found


def test_a_broken_entry_point_is_a_runner_error(tmp_path, iso, monkeypatch):
    site = tmp_path / "site"
    (site).mkdir()
    (site / f"epbroken_{iso}.py").write_text("raise RuntimeError('entry point exploded')\n")
    _distribution(site, iso, f"broken = epbroken_{iso}\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(RunnerError, match=f"epbroken_{iso}"):
        discover(cwd=tmp_path)


def test_a_runner_file_that_fails_to_import_is_a_runner_error_naming_the_file(tmp_path, iso):
    bad = tmp_path / "runners" / f"broken_{iso}.py"
    bad.parent.mkdir()
    bad.write_text("x = 1\nraise ValueError('bad config')\n")
    with pytest.raises(RunnerError) as info:
        discover(cwd=tmp_path, use_entry_points=False)
    assert str(bad) in str(info.value) or bad.name in str(info.value)
    assert "bad config" in str(info.value)
    assert not [m for m in sys.modules if m.endswith(f"broken_{iso}")]  # nothing half-imported


def test_a_runner_file_with_a_syntax_error_is_a_runner_error_naming_the_file(tmp_path, iso):
    bad = tmp_path / f"syntax_{iso}.py"
    bad.write_text("def oops(:\n")
    with pytest.raises(RunnerError, match=re.escape(bad.name)):
        discover([str(bad)], cwd=tmp_path, use_entry_points=False)


def test_a_runner_module_that_fails_to_import_is_a_runner_error(tmp_path, iso, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / f"modbroken_{iso}.py").write_text("raise ValueError('bad module config')\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(RunnerError) as info:
        discover([f"modbroken_{iso}"], cwd=tmp_path, use_entry_points=False)
    assert f"modbroken_{iso}" in str(info.value)
    assert "bad module config" in str(info.value)


@pytest.mark.parametrize(
    ("module", "dependency"),
    [
        ("needsdep_{iso}", "not_installed_{iso}"),
        # a missing dependency whose name is a prefix of the module's name
        ("etl{iso}_jobs", "etl{iso}"),
    ],
)
def test_a_runner_module_missing_a_dependency_names_the_dependency(
    tmp_path, iso, monkeypatch, module, dependency
):
    module, dependency = module.format(iso=iso), dependency.format(iso=iso)
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{module}.py").write_text(f"import {dependency}\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(RunnerError) as info:
        discover([module], cwd=tmp_path, use_entry_points=False)
    assert f"No module named '{dependency}'" in str(info.value)
    assert module in str(info.value)


def test_an_unknown_runner_name_is_a_runner_error(tmp_path, iso):
    with pytest.raises(RunnerError, match=f"nowhere_{iso}"):
        discover([f"nowhere_{iso}"], cwd=tmp_path, use_entry_points=False)


def test_one_key_in_two_discovered_files_names_both_places(tmp_path, iso):
    key = f"dup-{iso}"
    a = runner_module(tmp_path / "runners" / f"dup_a_{iso}.py", key)
    b = runner_module(tmp_path / "runners" / f"dup_b_{iso}.py", key)
    with pytest.raises(DuplicateRunner) as info:
        discover(cwd=tmp_path, use_entry_points=False)
    message = str(info.value)
    assert re.search(re.escape(a.name) + r":[34]\b", message), message
    assert re.search(re.escape(b.name) + r":[34]\b", message), message


def test_discovering_the_same_folder_twice_is_fine(tmp_path, iso):
    runner_module(tmp_path / "runners" / f"twice_{iso}.py", f"twice-{iso}")
    discover(cwd=tmp_path, use_entry_points=False)
    found = discover(cwd=tmp_path, use_entry_points=False)
    assert f"twice-{iso}" in found


def test_files_with_one_name_in_two_folders_are_both_imported(tmp_path, iso):
    a = runner_module(tmp_path / f"team_a_{iso}" / "jobs.py", f"team-a-{iso}")
    b = runner_module(tmp_path / f"team_b_{iso}" / "jobs.py", f"team-b-{iso}")
    found = discover([str(a), str(b)], cwd=tmp_path, use_entry_points=False)
    assert f"team-a-{iso}" in found
    assert f"team-b-{iso}" in found


def test_a_project_below_a_hidden_directory_still_has_its_runners_found(tmp_path, iso):
    project = tmp_path / ".config" / "etl"
    runner_module(project / "runners" / f"hidden_parent_{iso}.py", f"hidden-parent-{iso}")
    runner_module(project / "runners" / ".cache" / f"skipme_{iso}.py", f"skipped-{iso}")
    found = discover(cwd=project, use_entry_points=False)
    assert f"hidden-parent-{iso}" in found
    assert f"skipped-{iso}" not in found


# -- built-in runners ---------------------------------------------------------------------------


def test_a_bare_registry_holds_only_what_it_is_given_and_add_builtins_adds_the_built_ins(registry):
    assert registry.keys() == []
    registry.add("collect", first_place)
    assert registry.add_builtins() is registry
    assert registry.keys() == ["collect", "engine.http", "engine.shell", "engine.sql"]
    assert registry.user_keys() == ["collect"]
    registry.add_builtins()  # again: the same runners, no duplicate
    assert registry.get("engine.shell").inputs_model.__name__ == "ShellInputs"


def test_discovery_includes_the_built_in_runners(tmp_path, iso):
    found = discover(cwd=tmp_path, use_entry_points=False)
    assert {"engine.http", "engine.shell", "engine.sql"} <= set(found.keys())


@pytest.mark.parametrize("key", ["engine.shell", "engine.custom"])
def test_a_user_runner_cannot_take_a_key_starting_with_engine(registry, key):
    with pytest.raises(RunnerError) as info:
        registry.add(key, first_place)
    message = str(info.value)
    assert f"runner key {key!r}" in message and "is reserved" in message
    assert f"test_registry.py:{first_place.__code__.co_firstlineno}" in message
    assert key not in registry


def test_a_discovered_runner_claiming_engine_shell_is_refused_naming_its_file(tmp_path, iso):
    module = runner_module(tmp_path / "runners" / f"claims_{iso}.py", "engine.shell")
    with pytest.raises(RunnerError) as info:
        discover(cwd=tmp_path, use_entry_points=False)
    assert f"runner key 'engine.shell' (at {module}:3) is reserved" in str(info.value)
    assert registry_module.registry.get("engine.shell").target.__module__ == "engine.runners.shell"


def test_neither_import_engine_nor_discovery_imports_what_the_built_ins_work_with(tmp_path):
    heavy = "('engine.runners', 'subprocess', 'httpx', 'sqlalchemy')"
    code = (
        "import sys, engine, engine.registry; "
        f"print([m for m in {heavy} if m in sys.modules]); "
        "engine.registry.discover(use_entry_points=False); "
        f"print([m for m in {heavy} if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert done.stdout.splitlines() == ["[]", "['engine.runners']"]
