"""`engine validate`, `run`, `graph` and `schema`."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

import click

from engine.cli import EXIT_FAILED, cli
from engine.cli.options import INSTANCE_ID, Config, json_option, pass_config
from engine.errors import ParamsError

if TYPE_CHECKING:
    from engine.execution import Cancellation, Listener
    from engine.registry import JobRegistry
    from engine.service import BatchService
    from engine.store import InstanceView, Store


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@pass_config
def validate(paths: tuple[str, ...], config: Config) -> None:
    """Check definition files (or folders of them); print every error as file:line:col."""
    from engine.definition.paths import check_paths

    loaded, problems, files = check_paths(paths, config.registry())
    if not files:
        raise click.UsageError(f"no *.yaml or *.yml files in {', '.join(paths)}")
    for problem in problems:
        click.echo(str(problem), err=True)
    click.echo(f"{len(loaded)} of {files} definitions valid", err=True)
    sys.exit(EXIT_FAILED if problems else 0)


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParamsError([f"-p {pair!r}: expected KEY=VALUE"])
        params[key] = value
    return params


@cli.command()
@click.argument("file", type=click.Path())
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A run param; repeat for more. Arrays and objects as JSON.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the plan (order, edges, conditions); run nothing."
)
@json_option
@pass_config
def run(file: str, params: tuple[str, ...], dry_run: bool, as_json: bool, config: Config) -> None:
    """Run one instance of FILE and wait for its end (exit 0 succeeded, 1 failed, 2 refused)."""
    from engine.cli import render
    from engine.definition import load_file
    from engine.secret_params import unkept_note
    from engine.service import BatchService

    json_out = stdout_kept_for_json() if as_json else None
    registry = config.registry()
    loaded = load_file(file, registry)
    prepared = BatchService.prepare(loaded, parse_params(params))
    if dry_run:
        if json_out:
            click.echo(json.dumps(prepared.plan(), indent=2), file=json_out)
        else:
            render.plan(prepared.plan())
        return

    def start(service: BatchService, progress: Listener, cancellation: Cancellation) -> Any:
        def started(instance_id: int) -> None:
            render.console.print(f"instance {instance_id} of {loaded.name} started")
            if (note := unkept_note(prepared.secret_params)) is not None:
                render.console.print(note)

        return service.run(prepared, progress, cancellation, started=started)

    exit_with(config, follow(config, registry, start), json_out)


@cli.command()
@click.argument("instance_id", type=INSTANCE_ID)
@json_option
@pass_config
def resume(instance_id: int, as_json: bool, config: Config) -> None:
    """Run again what did not succeed in instance ID, with the definition version and params it
    started with (exit as `run`)."""
    from engine.cli import render

    json_out = stdout_kept_for_json() if as_json else None
    registry = config.registry()

    def start(service: BatchService, progress: Listener, cancellation: Cancellation) -> Any:
        render.console.print(f"resuming instance {instance_id}")
        return service.resume(instance_id, registry, progress, cancellation)

    exit_with(config, follow(config, registry, start), json_out)


def follow(
    config: Config,
    registry: JobRegistry,
    start: Callable[[BatchService, Listener, Cancellation], Any],
) -> Any:
    """Run `start` with progress on stderr and return what it returns.

    Ctrl-C and SIGTERM stop the instance at the executor's next step, never halfway through a
    write: no new step starts, running attempts and the instance end cancelled.
    """
    from engine.cli import render
    from engine.dispatch import resolve_dispatcher
    from engine.execution import Cancellation
    from engine.service import BatchService

    dispatcher = resolve_dispatcher(None, registry)
    cancellation = Cancellation()
    for signum in (signal.SIGINT, signal.SIGTERM):
        name = signal.Signals(signum).name
        signal.signal(signum, lambda *_, name=name: cancellation.cancel(f"stopped by {name}"))
    try:
        return start(BatchService(config.store(), dispatcher), render.Progress(), cancellation)
    finally:
        dispatcher.close()


def stdout_kept_for_json() -> TextIO:
    """Keep stdout for the JSON alone, returning it: from here on, what anything else writes to
    file descriptor 1 (a runner's subprocess, C code, a module printing as it is imported) goes
    to stderr. Runners' own prints are caught into their step's log in any case."""
    from engine.cli.streams import text_writer

    sys.stdout.flush()
    kept = text_writer(os.dup(1))
    os.dup2(2, 1)
    return kept


def print_instance_json(store: Store, instance_id: int, out: TextIO) -> None:
    """The instance with every attempt, items' included, as indented JSON, written as it is
    read: 100,000 item attempts are never held at once."""
    from engine.store.views import instance_json_pieces

    head = store.instance_head(instance_id)
    for piece in instance_json_pieces(head, store.attempts(instance_id), indent=2):
        out.write(piece)
    out.write("\n")
    out.flush()


def exit_with(config: Config, view: InstanceView, json_out: TextIO | None) -> None:
    """Print an ended instance's summary (and JSON to `json_out`); exit 0 when it succeeded,
    else 1."""
    from engine.cli import render

    store = config.store()
    render.instance_summary(view, store.item_counts(view.id))
    if json_out:  # with every attempt of every item
        print_instance_json(store, view.id, json_out)
    sys.exit(0 if view.status == "succeeded" else EXIT_FAILED)


@cli.command()
@click.argument("file", type=click.Path())
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(file: str, fmt: str) -> None:
    """Print the step graph of FILE as Mermaid or Graphviz dot."""
    from engine.definition import load_file

    loaded = load_file(file)
    click.echo(loaded.graph.to_mermaid() if fmt == "mermaid" else loaded.graph.to_dot(), nl=False)


@cli.command()
@pass_config
def schema(config: Config) -> None:
    """Print the JSON Schema of the definition DSL, with the inputs of each discovered runner
    that declares them."""
    from engine.definition.schema import json_schema_text

    click.echo(json_schema_text(config.registry().runners()), nl=False)
