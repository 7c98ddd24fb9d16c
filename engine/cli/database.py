"""`engine db upgrade`: schema migrations."""

from __future__ import annotations

import click

from engine.cli import cli
from engine.cli.options import Config, pass_config


@cli.group()
def db() -> None:
    """The database schema."""


@db.command()
@pass_config
def upgrade(config: Config) -> None:
    """Apply the schema migrations this database lacks (Alembic)."""
    from engine.store.schema import upgrade as upgrade_schema
    from engine.store.store import make_engine

    engine = make_engine(config.db)
    try:
        revision = upgrade_schema(engine)
    finally:
        engine.dispose()
    click.echo(f"the database is at schema revision {revision}", err=True)
