"""`engine worker`: a Celery worker that runs the steps sent by `ENGINE_DISPATCHER=celery`."""

from __future__ import annotations

import contextlib
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
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve this worker's metrics (Prometheus) on this port; 0: a free one, logged.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics are served on (0.0.0.0: every interface).",
)
@runners_option
def worker(
    concurrency: int | None,
    queues: str,
    loglevel: str,
    metrics_port: int | None,
    metrics_host: str,
    runners: tuple[str, ...],
) -> None:
    """Run a Celery worker for the discovered runners, on $ENGINE_BROKER_URL, in the foreground.

    SIGTERM (or one Ctrl-C) lets the running steps finish first; a second Ctrl-C stops at once,
    as if the worker had died (docs/operations.md says what then happens to its steps).
    """
    from engine import metrics
    from engine.dispatch.celery_app import check_broker, make_app
    from engine.registry import discover

    argv = ["worker", f"--queues={queues}", f"--loglevel={loglevel}", "--without-gossip"]
    argv.append(f"--hostname=engine-{os.getpid()}@%h")
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    with contextlib.ExitStack() as serving:
        if metrics_port is not None:  # first: before any runner module could import the client
            try:
                url = serving.enter_context(metrics.serving_worker(metrics_host, metrics_port))
            except OSError as exc:
                where = f"{metrics_host}:{metrics_port}"
                raise click.ClickException(f"cannot serve metrics on {where}: {exc}") from None
            click.echo(f"serving this worker's metrics on {url}", err=True)
        recorder = metrics.recorder()
        app = make_app(
            registry=discover(runners),
            observe=lambda outcome, seconds: recorder.worker_attempt(
                outcome.task.runner, outcome.ok, seconds
            ),
        )
        check_broker(app)
        app.worker_main(argv)
