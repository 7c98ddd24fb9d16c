"""`engine schedule` (the cron scheduler in the foreground) and `engine backfill`."""

from __future__ import annotations

import itertools
import json
import logging
import signal
import sys
import threading
from collections import Counter
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
@click.option(
    "--rerun-failed", is_flag=True, help="Also resume the range's failed and cancelled instances."
)
@json_option
@pass_config
def backfill(
    file: str, start: str, end: str, rerun_failed: bool, as_json: bool, config: Config
) -> None:
    """Fill every cron tick of FILE in [START, END], in order, each tick's instance run once.

    Times without an offset are in the definition's time zone. A tick that ran is reported, one
    skipped earlier runs now, one another process runs is waited for. Exit 0 only when every
    tick of the range has succeeded, 1 otherwise.
    """
    from engine.backfill import Backfill, ticks_in_range
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
            f"{tick}  ",
            render.styled(outcome.status),
            f"  {outcome.how}  {instance}  {render.shown(outcome.detail)}",
            sep="",
        )

    def fill(service: Any, progress: Any, stop: Any) -> list[TickOutcome]:
        filling = Backfill(service, loaded, registry, rerun_failed, progress, stop)
        return filling.run(first, last, report)

    outcomes: list[TickOutcome] = follow(config, registry, fill)
    counts = Counter(o.status for o in outcomes)
    ways = Counter(o.how for o in outcomes)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no ticks"
    if outcomes:
        summary += " (" + ", ".join(f"{n} {how}" for how, n in sorted(ways.items())) + ")"
    if len(outcomes) < total:
        summary += f"; {total - len(outcomes)} ticks not reached"
    render.console.print(summary)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "scheduled_for": o.tick.isoformat(),
                        "status": o.status,
                        "how": o.how,
                        "instance_id": o.instance_id,
                        "detail": o.detail,
                    }
                    for o in outcomes
                ],
                indent=2,
            )
        )
    filled = len(outcomes) == total and all(o.status == "succeeded" for o in outcomes)
    sys.exit(0 if filled else EXIT_FAILED)
