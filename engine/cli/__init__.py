"""The `engine` command. Each subcommand lives in its own module and only renders what the service
and the store return; errors become messages and exit codes here, in one place."""

from __future__ import annotations

import sys
from typing import Any

import click

from engine.config import check_environment
from engine.errors import (
    ConfigError,
    DefinitionError,
    EngineError,
    ParamsError,
    ResumeRefused,
    RunnerError,
    ScheduleError,
)

EXIT_FAILED = 1
EXIT_REFUSED = 2


def exit_code(error: EngineError) -> int:
    """Refused input (configuration, definition, params, runners, schedule) is 2; else 1."""
    refused = ConfigError | DefinitionError | ParamsError | RunnerError | ResumeRefused
    if isinstance(error, refused | ScheduleError):
        return EXIT_REFUSED
    return EXIT_FAILED


class EngineGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            check_environment()
            return super().invoke(ctx)
        except EngineError as error:
            click.echo(
                f"error: {error}" if not isinstance(error, DefinitionError) else str(error),
                err=True,
            )
            sys.exit(exit_code(error))


@click.group(cls=EngineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="engine")
def cli() -> None:
    """A DAG-ready batch workflow engine with a YAML definition DSL."""


def main() -> None:
    from engine.cli import (  # noqa: F401  (registers the subcommands)
        commands,
        database,
        logs,
        runs,
        schedule,
        serve,
        worker,
    )
    from engine.cli.streams import whole_writes

    sys.stdout, sys.stderr = whole_writes(sys.stdout), whole_writes(sys.stderr)
    cli()
