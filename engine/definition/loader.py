"""Loading a definition: safe YAML, pydantic, then the checks pydantic cannot make.

Every problem is located at the YAML node it concerns, and all problems of a file are reported
together: a user fixes a file in one pass, not one error per run.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import stat
import typing
import zoneinfo
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine import cron
from engine.definition.graph import StepGraph
from engine.definition.models import Definition, Map
from engine.definition.params import ParamsSpec, outside_inputs, secret_param_problems
from engine.definition.problems import did_you_mean, pydantic_problems, without_faults
from engine.definition.source import MAX_FILE_BYTES, YamlDocument, parse_yaml
from engine.errors import DefinitionError, ExpressionError, Problem
from engine.expressions import (
    KNOWN_NAMES,
    SCOPE_NAMES,
    Compiled,
    TemplateTree,
    compile_condition,
    compile_template,
    is_template,
)
from engine.typed_inputs import literal_faults

if typing.TYPE_CHECKING:
    from engine.registry import JobRegistry


RESERVED_ITEM_NAMES = KNOWN_NAMES
"""What `map.as` may not be: a name templates already see."""


@dataclass(frozen=True)
class MapPlan:
    """A mapped step's `map`, with its `items` and `key` compiled."""

    items: TemplateTree
    key: Compiled | None
    spec: Map


@dataclass
class LoadedDefinition:
    """A valid definition with its graph and every expression compiled, ready to run."""

    definition: Definition
    graph: StepGraph
    source: str
    file: str
    version: str
    params: ParamsSpec
    conditions: dict[str, Compiled] = field(default_factory=dict)
    edge_conditions: dict[tuple[str, int], Compiled] = field(default_factory=dict)
    """By (target step, index of the edge in the target's incoming edges)."""
    inputs: dict[str, TemplateTree] = field(default_factory=dict)
    maps: dict[str, MapPlan] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.definition.name


def load_file(path: str | Path, registry: JobRegistry | None = None) -> LoadedDefinition:
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block, /dev/zero never end
            raise DefinitionError([Problem(str(path), 1, 1, "cannot read: not a regular file")])
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # parse_yaml refuses what is over the limit
    except OSError as exc:
        raise DefinitionError([Problem(str(path), 1, 1, f"cannot read: {exc.strerror}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"not UTF-8 text: byte {data[exc.start]:#x} cannot be decoded"
        raise DefinitionError([Problem(str(path), line, column, message)]) from None
    return load_text(text, str(path), registry)


def load_text(text: str, file: str, registry: JobRegistry | None = None) -> LoadedDefinition:
    """Validate a definition; raise DefinitionError with every located problem.

    Runner keys are checked only when a registry is given.
    """
    with _collector_paused():
        return _load(text, file, registry)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading builds a node tree of many small objects that all stay alive; the cyclic garbage
    collector would walk it again and again (half the time of a 10,000-step file) to free none."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(text: str, file: str, registry: JobRegistry | None) -> LoadedDefinition:
    document = parse_yaml(text, file)
    if not isinstance(document.data, dict):
        raise DefinitionError([document.problem([], "a definition must be a YAML mapping")])
    try:
        definition = Definition.model_validate(document.data)
    except ValidationError as exc:
        problems = list(pydantic_problems(exc, document))
        pruned = without_faults(document.data, exc)
        if pruned is not None:  # check the rest too, so that a file is fixed in one pass
            try:
                _Checker(pruned, document, text, registry).run()
            except DefinitionError as more:
                problems += [p for p in more.problems if p not in problems]
        raise DefinitionError(_sorted(problems)) from None
    return _Checker(definition, document, text, registry).run()


def _sorted(problems: Iterable[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line, p.column))


class _Checker:
    """The checks beyond pydantic: ids, edges, cycles, runners, expressions, cron, params."""

    def __init__(
        self,
        definition: Definition,
        document: YamlDocument,
        text: str,
        registry: JobRegistry | None,
    ) -> None:
        self.definition = definition
        self.document = document
        self.text = text
        self.registry = registry
        self.problems: list[Problem] = []

    def add(self, path: Sequence[str | int], message: str, *, key: bool = False) -> None:
        self.problems.append(self.document.problem(path, message, key=key))

    def run(self) -> LoadedDefinition:
        d = self.definition
        unique = self._check_ids()
        graph = StepGraph(d)
        self._check_edges(graph, unique)
        # Steps sharing an id share one node: the knots that makes are not the user's cycles.
        for cycle in graph.cycles() if unique else []:
            edge = next(e for e in graph.edges if e.source == cycle[0] and e.target in cycle)
            self.add(edge.path, "cycle: " + " -> ".join([*cycle, cycle[0]]))
        self._check_runners()
        self._check_schedule()
        params = ParamsSpec(d.params)  # param defaults compile here; checked below
        loaded = LoadedDefinition(
            d,
            graph,
            self.text,
            self.document.file,
            hashlib.sha256(self.text.encode()).hexdigest(),
            params,
        )
        self._check_params(params)
        self._compile(loaded)
        if self.problems:
            raise DefinitionError(_sorted(self.problems))
        return loaded

    def _check_ids(self) -> bool:
        """Report duplicate step ids; True when there are none."""
        before = len(self.problems)
        seen: dict[str, int] = {}
        for i, step in enumerate(self.definition.steps):
            first = seen.setdefault(step.id, i)
            if first != i:
                self.add(
                    ("steps", i, "id"), f"duplicate step id {step.id!r} (first as steps[{first}])"
                )
        return len(self.problems) == before

    def _check_edges(self, graph: StepGraph, unique_ids: bool) -> None:
        ids = set(graph.order)
        pairs: set[tuple[str, str]] = set()
        for edge in graph.edges:
            if edge.target not in ids:
                self.add(
                    edge.path,
                    f"nextSteps names unknown step {edge.target!r}"
                    + did_you_mean(edge.target, graph.order),
                )
            elif unique_ids and (edge.source, edge.target) in pairs:
                self.add(
                    edge.path, f"step {edge.source!r} lists {edge.target!r} twice in nextSteps"
                )
            pairs.add((edge.source, edge.target))

    def _check_runners(self) -> None:
        if self.registry is None:
            return
        for i, step in enumerate(self.definition.steps):
            key = step.runner_key
            if key not in self.registry:
                path = ("steps", i, "runner") if step.runner else ("steps", i, "id")
                if self.registry.user_keys():
                    known = f"known runners: {self.registry.describe_keys()}"
                else:
                    builtin = ", ".join(self.registry.keys())
                    known = (
                        "no runners are registered"
                        + (f" apart from the built-in {builtin}" if builtin else "")
                        + ": they are found in the runners/ folder of the working directory "
                        f"({Path.cwd()}) and in the modules or paths named with --runners or "
                        "ENGINE_RUNNERS"
                    )
                self.add(
                    path,
                    f"unknown runner {key!r}{did_you_mean(key, self.registry.keys())}; {known}",
                )
                continue
            model = self.registry.get(key).inputs_model
            if model is not None:
                for loc, message, at_key in literal_faults(model, step.inputs, did_you_mean):
                    self.add(("steps", i, "inputs", *loc), message, key=at_key)

    def _check_schedule(self) -> None:
        d = self.definition
        why = cron.problem(d.cron) if d.cron is not None else None
        if why:
            self.add(("cron",), why)
        try:
            zoneinfo.ZoneInfo(d.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.add(
                ("timezone",),
                f"unknown time zone {d.timezone!r} (an IANA name such as "
                "'Europe/Paris' is expected)",
            )

    def _check_params(self, params: ParamsSpec) -> None:
        for name, exc in params.errors.items():
            self.add(("params", name, "default"), f"template: {exc}")
        for name, template in params.templates.items():
            if template.names - {"run"}:
                others = ", ".join(sorted(template.names - {"run"}))
                self.add(
                    ("params", name, "default"), f"a param default may use only `run`, not {others}"
                )
        for name, at, problem, key in secret_param_problems(self.definition.params):
            self.add(("params", name, *at), problem, key=key)
        for name in self.definition.params:
            why = params.check_default(name)
            if why:
                self.add(("params", name, "default"), f"default does not fit the type: {why}")

    def _compile(self, loaded: LoadedDefinition) -> None:
        graph = loaded.graph
        for i, step in enumerate(self.definition.steps):
            if step.condition is not None:
                compiled = self._expression(("steps", i, "condition"), step.condition)
                if compiled:
                    self._check_refs(("steps", i, "condition"), compiled, step.id, graph)
                    loaded.conditions[step.id] = compiled
            item: frozenset[str] = frozenset()
            if step.map is not None:
                item = frozenset([step.map.as_name])
                plan = self._map_plan(i, graph)
                if plan is not None:
                    loaded.maps[step.id] = plan
            where = ("steps", i, "inputs")
            tree = self._template_tree(where, step.inputs, step.id, graph, item, inputs=True)
            if not tree.is_static:
                loaded.inputs[step.id] = tree
        for target, edges in graph.incoming.items():
            for j, edge in enumerate(edges):
                if edge.condition is None:
                    continue
                path = (*edge.path, "condition")
                compiled = self._expression(path, edge.condition)
                if compiled:
                    self._check_refs(path, compiled, edge.source, graph, itself=True)
                    loaded.edge_conditions[(target, j)] = compiled

    def _map_plan(self, i: int, graph: StepGraph) -> MapPlan | None:
        step = self.definition.steps[i]
        assert step.map is not None
        spec, where = step.map, ("steps", i, "map")
        before = len(self.problems)
        if spec.as_name in RESERVED_ITEM_NAMES:
            self.add(
                (*where, "as"),
                f"map.as: {spec.as_name!r} would hide a name that templates see; "
                f"choose another (not {', '.join(sorted(RESERVED_ITEM_NAMES))})",
            )
        items = spec.items
        if not (isinstance(items, list) or is_template(items)):
            self.add(
                (*where, "items"),
                "map.items must be a YAML list, or one template that yields a list such as "
                "'{{ steps.collect.result.regions }}'",
            )
        tree = self._template_tree((*where, "items"), items, step.id, graph, frozenset())
        key = None
        if spec.key is not None and not is_template(spec.key):
            self.add(
                (*where, "key"),
                f"map.key must be a template such as '{{{{ {spec.as_name}.id }}}}': "
                "a literal key would be the same for every item",
            )
        elif spec.key is not None:
            try:
                key = compile_template(spec.key)
                self._check_refs((*where, "key"), key, step.id, graph, item=[spec.as_name])
            except ExpressionError as exc:
                self.add((*where, "key"), f"template: {exc}")
        return MapPlan(tree, key, spec) if len(self.problems) == before else None

    def _template_tree(
        self,
        where: tuple[str | int, ...],
        value: Any,
        step: str,
        graph: StepGraph,
        item: frozenset[str],
        *,
        inputs: bool = False,
    ) -> TemplateTree:
        """`value` compiled wherever it holds templates, each fault and reference checked."""
        tree = TemplateTree(value)
        for path, exc in tree.errors:
            self.add((*where, *path), f"template: {exc}")
        for path, leaf in tree.leaves:
            self._check_refs((*where, *path), leaf, step, graph, item=item, inputs=inputs)
        return tree

    def _expression(self, path: Sequence[str | int], source: str) -> Compiled | None:
        try:
            return compile_condition(source)
        except ExpressionError as exc:
            self.add(path, f"expression: {exc}")
            return None

    def _check_refs(
        self,
        path: Sequence[str | int],
        compiled: Compiled,
        step: str,
        graph: StepGraph,
        *,
        itself: bool = False,
        item: Iterable[str] = (),
        inputs: bool = False,
    ) -> None:
        """Names the scope does not have, undeclared params, steps that are not upstream,
        secrets outside `inputs`; `item` is the name a mapped step's inputs and key also see."""
        for why in () if inputs else outside_inputs(compiled, self.definition.params):
            self.add(path, why)
        for name in sorted(compiled.names - KNOWN_NAMES - set(item)):
            self.add(
                path,
                f"unknown name {name!r}: expressions see {', '.join(SCOPE_NAMES)}"
                + did_you_mean(name, SCOPE_NAMES),
            )
        declared = list(self.definition.params)
        for param in sorted(compiled.params - set(declared)):
            known = f" (declared: {', '.join(declared)})" if declared else " (none is declared)"
            hint = did_you_mean(param, declared)
            self.add(path, f"unknown param {param!r} in params.{param}{known}{hint}")
        upstream = graph.upstream_among(step, compiled.steps)
        for ref in sorted(compiled.steps):
            if ref not in graph.incoming:
                self.add(
                    path, f"unknown step {ref!r} in steps.{ref}" + did_you_mean(ref, graph.order)
                )
            elif not (itself and ref == step) and ref not in upstream:
                self.add(
                    path,
                    f"steps.{ref} is not upstream of {step!r}: its result is not "
                    "known when this is evaluated",
                )
