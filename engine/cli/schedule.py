"""`engine schedule` (the cron scheduler in the foreground) and `engine backfill`."""

from __future__ import annotations

import itertools
import json
import logging
import signal
import sys
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from engine.cli import EXIT_FAILED, cli
from engine.cli.commands import follow
from engine.cli.options import Config, background_options, json_option, pass_config

if TYPE_CHECKING:
    from engine.backfill import TickOutcome


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--list", "list_only", is_flag=True, help="Print the next fire times; run nothing.")
@click.option(
    "--count",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="With --list: how many fire times per definition.",
)
@background_options
@pass_config
def schedule(
    paths: tuple[str, ...],
    list_only: bool,
    count: int,
    misfire_grace: float,
    grace: float,
    max_instances: int,
    no_recover: bool,
    config: Config,
) -> None:
    """Run the cron scheduler for the definitions in PATHS, in the foreground.

    Any number of schedulers may run against one database: each tick runs once.
    """
    from engine.background import BackgroundRunner
    from engine.cli import render
    from engine.cron import CronSchedule
    from engine.definition.paths import load_paths
    from engine.dispatch import resolve_dispatcher
    from engine.recovery import recovering
    from engine.scheduler import schedulable, scheduling_into
    from engine.service import BatchService
    from engine.store.types import utcnow

    registry = config.registry()
    scheduled = schedulable(load_paths(paths, registry).values())
    if list_only:
        now = utcnow()
        for loaded in scheduled:
            d = loaded.definition
            assert d.cron is not None
            render.out.print(f"{loaded.name}  {d.cron}  ({d.timezone})")
            zone = ZoneInfo(d.timezone)
            for tick in itertools.islice(CronSchedule(d.cron, d.timezone).following(now), count):
                render.out.print(f"  {tick.astimezone(zone).isoformat()}  {tick.isoformat()}")
        return
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    render.show_runner_logs()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    dispatcher = resolve_dispatcher(None, registry, default="process")
    try:
        service = BatchService(config.store(), dispatcher)
        runner = BackgroundRunner(service, max_instances)
        scheduler = scheduling_into(runner, scheduled, registry, misfire_grace)
        with recovering(runner, registry, not no_recover):
            scheduler.run(stop)
        runner.stop(grace)
    finally:
        dispatcher.close()


def _moment(value: str, zone: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))


@cli.command()
@click.argument("file", type=click.Path())
@click.option("--start", required=True, metavar="ISO", help="First moment of the range.")
@click.option("--end", required=True, metavar="ISO", help="Last moment of the range (included).")
@json_option
@pass_config
def backfill(file: str, start: str, end: str, as_json: bool, config: Config) -> None:
    """Run every cron tick of FILE in [START, END], in order, each at most once.

    Times without an offset are in the definition's time zone. Ticks that already ran are
    reported and not run again. Exit 0 when every tick run succeeded, 1 otherwise.
    """
    from engine.backfill import backfill as run_backfill
    from engine.backfill import ticks_in_range
    from engine.cli import render
    from engine.definition import load_file

    registry = config.registry()
    loaded = load_file(file, registry)
    zone = loaded.definition.timezone
    first, last = _moment(start, zone), _moment(end, zone)
    total = sum(1 for _ in ticks_in_range(loaded, first, last))
    render.console.print(
        f"{loaded.name}: {total} ticks from {first.isoformat()} to {last.isoformat()}"
    )

    def report(outcome: TickOutcome) -> None:
        tick = outcome.tick.astimezone(ZoneInfo(zone)).isoformat()
        instance = f"instance {outcome.instance_id}" if outcome.instance_id else ""
        render.console.print(
            f"{tick}  {render.styled(outcome.status)}  {instance}  {outcome.detail}"
        )

    def start_all(service: Any, progress: Any, cancellation: Any) -> list[TickOutcome]:
        return run_backfill(service, loaded, first, last, report, progress, cancellation)

    outcomes: list[TickOutcome] = follow(config, registry, start_all)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    render.console.print(
        ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no ticks"
    )
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "scheduled_for": o.tick.isoformat(),
                        "status": o.status,
                        "instance_id": o.instance_id,
                        "detail": o.detail,
                    }
                    for o in outcomes
                ],
                indent=2,
            )
        )
    failed = any(o.status in ("failed", "cancelled") for o in outcomes)
    sys.exit(EXIT_FAILED if failed else 0)
