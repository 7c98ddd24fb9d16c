"""`engine logs`: an instance's stored log lines, oldest first, and `--follow` while it runs."""

from __future__ import annotations

import json
import time

import click

from engine.cli import cli
from engine.cli.options import INSTANCE_ID, Config, json_option, pass_config

FOLLOW_POLL_SECONDS = 0.5
"""How often `--follow` looks for new lines once it has read all there are."""


@cli.command()
@click.argument("instance_id", type=INSTANCE_ID)
@click.option("--step", help="Only the lines of this step.")
@click.option("--item", help="Only the lines of this item (a key) of a mapped step.")
@click.option(
    "--attempt", type=click.IntRange(1, 2**31 - 1), help="Only the lines of this attempt."
)
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing new lines until the instance ends."
)
@json_option
@pass_config
def logs(
    instance_id: int,
    step: str | None,
    item: str | None,
    attempt: int | None,
    follow: bool,
    as_json: bool,
    config: Config,
) -> None:
    """The log lines of instance ID, oldest first (exit 1 for an unknown id). With --json, one
    JSON object per line on stdout."""
    from engine.cli import render

    store = config.store()
    after: int | None = None
    while True:
        page = store.logs.page(instance_id, step=step, item=item, attempt=attempt, after=after)
        for line in page.lines:
            if as_json:
                click.echo(json.dumps(line.model_dump(mode="json")))
            else:
                render.out.file.write(render.stored_line(line))
        if page.next is None:
            return  # the instance has ended, and this was its last line
        if not page.lines:  # every line there is now has been printed
            if not follow:
                return
            time.sleep(FOLLOW_POLL_SECONDS)
        after = page.next
