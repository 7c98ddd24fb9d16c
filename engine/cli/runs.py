"""`engine runs list`, `show`, `ticks` and `prune`: instance history from the store."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import timedelta

import click

from engine.cli import cli
from engine.cli.commands import print_instance_json
from engine.cli.options import DURATION, INSTANCE_ID, Config, json_option, pass_config
from engine.status import InstanceStatus


@cli.group()
def runs() -> None:
    """Instance history."""


@runs.command("list")
@click.option("--definition", help="Only instances of this definition name.")
@click.option("--status", type=click.Choice([s.value for s in InstanceStatus]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@json_option
@pass_config
def list_runs(
    definition: str | None, status: str | None, limit: int, as_json: bool, config: Config
) -> None:
    """Instances, newest first."""
    views = config.store().list_instances(definition, status, limit)
    if as_json:
        click.echo(json.dumps([v.to_json() for v in views], indent=2))
    else:
        from engine.cli import render

        render.instance_list(views)


@runs.command("show")
@click.argument("instance_id", type=INSTANCE_ID)
@click.option(
    "--items", is_flag=True, help="Also list every attempt of every mapped item, after the table."
)
@json_option
@pass_config
def show(instance_id: int, items: bool, as_json: bool, config: Config) -> None:
    """One instance with every step attempt (exit 1 for an unknown id); a mapped step as one
    row with its item counts (`--json` lists the items' attempts too)."""
    store = config.store()
    if as_json:
        print_instance_json(store, instance_id, sys.stdout)
    else:
        from engine.cli import render

        view = store.get_instance(instance_id, items=False)
        render.instance_detail(view, store.item_counts(instance_id))
        if items:
            render.item_attempts(store.attempts(instance_id, only_items=True))


@cli.command()
@click.argument("instance_id", type=INSTANCE_ID)
@pass_config
def cancel(instance_id: int, config: Config) -> None:
    """Stop instance ID: no new step starts, running steps and the instance end cancelled."""
    from engine.service import BatchService

    click.echo(BatchService(config.store()).cancel(instance_id), err=True)


@runs.command("ticks")
@click.option("--definition", help="Only ticks of this definition name.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@json_option
@pass_config
def ticks(definition: str | None, limit: int, as_json: bool, config: Config) -> None:
    """Claimed cron ticks, latest first: the instance each started (`pruned` once it was), or
    why it was skipped."""
    claims = config.store().ticks.recent(definition, limit)
    if as_json:
        click.echo(json.dumps([c.model_dump(mode="json") for c in claims], indent=2))
    else:
        from engine.cli import render

        render.tick_list(claims)


@runs.command("prune")
@click.option(
    "--older-than",
    "older_than",
    type=DURATION,
    required=True,
    help="Delete instances that ended longer ago than this: 30d, 12h, 90m or 3600s.",
)
@click.option("--definition", help="Only instances of this definition name.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@json_option
@pass_config
def prune(
    older_than: timedelta, definition: str | None, dry_run: bool, as_json: bool, config: Config
) -> None:
    """Delete ended instances (succeeded, failed, cancelled) that finished longer ago than
    --older-than, with their attempts and log lines, in short transactions: safe beside
    running instances and schedulers. Pending and running instances stay, however old."""
    from engine.cli import render
    from engine.store.types import utcnow

    before = utcnow() - older_than
    retention = config.store().retention
    counts = retention.count(before, definition) if dry_run else retention.prune(before, definition)
    scope = f" of {definition}" if definition else ""
    render.console.print(
        f"{'would prune' if dry_run else 'pruned'} {counts.instances:,} instances{scope} "
        f"({counts.attempts:,} attempts, {counts.log_lines:,} log lines) that finished before "
        f"{before.isoformat(timespec='seconds')}"
        + ("; nothing deleted (--dry-run)" if dry_run else ""),
        soft_wrap=True,
    )
    if as_json:
        click.echo(json.dumps({**dataclasses.asdict(counts), "dry_run": dry_run}))
