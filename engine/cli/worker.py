"""`engine worker`: a Celery worker that runs the steps sent by `ENGINE_DISPATCHER=celery`."""

from __future__ import annotations

import os

import click

from engine.cli import cli
from engine.cli.options import runners_option


@cli.command()
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Steps run at once, one process each (default: the number of CPUs).",
)
@click.option(
    "-Q",
    "--queues",
    default="default",
    show_default=True,
    help="Comma-separated queues to take steps from (a step's `queue`).",
)
@click.option("--loglevel", default="INFO", show_default=True, help="Celery's log level.")
@runners_option
def worker(concurrency: int | None, queues: str, loglevel: str, runners: tuple[str, ...]) -> None:
    """Run a Celery worker for the discovered runners, on $ENGINE_BROKER_URL, in the foreground.

    SIGTERM (or one Ctrl-C) lets the running steps finish first; a second Ctrl-C stops at once,
    as if the worker had died (docs/operations.md says what then happens to its steps).
    """
    from engine.dispatch.celery_app import check_broker, make_app
    from engine.registry import discover

    app = make_app(registry=discover(runners))
    check_broker(app)
    argv = ["worker", f"--queues={queues}", f"--loglevel={loglevel}", "--without-gossip"]
    argv.append(f"--hostname=engine-{os.getpid()}@%h")
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)
