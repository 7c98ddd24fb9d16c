"""`engine serve`: the HTTP API and the cron scheduler in one process."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from engine.cli import cli
from engine.cli.options import Config, background_options, pass_config
from engine.config import API_TOKEN_ENV, API_TRACEBACKS_ENV, switch

if TYPE_CHECKING:
    from engine.background import BackgroundRunner
    from engine.health import SchedulerHealth


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stopped(signum: int, frame: Any) -> None:
    # uvicorn raises the signal that stopped it again once it has shut down gracefully; that
    # graceful stop ends the command with exit 0 instead of a death by signal.
    raise SystemExit(0)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@background_options
@pass_config
def serve(
    paths: tuple[str, ...],
    host: str,
    port: int,
    max_instances: int,
    grace: float,
    no_recover: bool,
    misfire_grace: float,
    config: Config,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs) and schedule the definitions in PATHS."""
    token = os.environ.get(API_TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        raise click.UsageError(
            f"refusing to listen on {host} without a token: set {API_TOKEN_ENV}, "
            "or listen on a loopback address such as 127.0.0.1"
        )
    try:
        import uvicorn

        from engine.api import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"engine serve needs the api extra ({exc.name} is missing): pip install 'engine[api]'"
        ) from None
    from engine import metrics
    from engine.definition.paths import load_paths
    from engine.dispatch import resolve_dispatcher
    from engine.scheduler import schedulable, scheduling_into
    from engine.service import BatchService

    registry = config.registry()
    definitions = load_paths(paths, registry)
    scheduled = [d for d in definitions.values() if d.definition.cron]
    if scheduled:
        schedulable(scheduled)
    dispatcher = resolve_dispatcher(None, registry, default="process")
    service = BatchService(config.store(), dispatcher)
    metrics.enable()

    def schedule(runner: BackgroundRunner, stop: threading.Event, health: SchedulerHealth) -> None:
        scheduling_into(runner, scheduled, registry, misfire_grace, health).run(stop)

    app = create_app(
        service,
        definitions,
        registry,
        token=token,
        host=host,
        tracebacks=switch(API_TRACEBACKS_ENV),
        max_instances=max_instances,
        grace=grace,
        scheduler=schedule,
        recover=not no_recover,
    )
    where = f"http://{host}:{port}" if port else f"{host}, on a free port (uvicorn names it)"
    click.echo(
        f"serving {len(definitions)} definition(s) on {where} "
        f"({max_instances} instance(s) at once)",
        err=True,
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        dispatcher.close()
