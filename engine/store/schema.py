"""The database schema's revision: checked on every open, upgraded by Alembic.

A new, empty database is brought to the current revision on first use. A database at an older
revision is refused with a message saying to run `engine db upgrade`: nothing is migrated behind
the user's back, and nothing runs against tables it does not expect.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from engine.errors import StoreError

HEAD = "0010"
"""The revision this engine's tables are; a test keeps it equal to the migrations' head."""
MIGRATIONS = Path(__file__).with_name("migrations")


def _known_revisions() -> set[str]:
    return {path.name.split("_")[0] for path in (MIGRATIONS / "versions").glob("*.py")}


def revision(engine: Engine) -> str | None:
    """The database's revision, or None for a database that has never been migrated."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, target: str = "head") -> str:
    """Apply the migrations the database lacks, up to `target`; return its revision after."""
    # Alembic reports its plugins and each step at INFO: noise in the log of a long-running
    # process that creates its database; `engine db upgrade` says what it did itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))

    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, target)
    return revision(engine) or HEAD


def ensure_current(engine: Engine, safe_url: str) -> None:
    """Create a new database at HEAD; refuse one at another revision.

    Several processes may open one new database at once: one creates the tables, the others see
    its error, wait a moment and find the database current.
    """
    for attempt in range(5):
        try:
            current = revision(engine)
            if current == HEAD:
                return
            if current is not None and current not in _known_revisions():
                raise StoreError(
                    f"the database {safe_url} is at schema revision {current}, newer than this "
                    f"engine ({HEAD}) knows: upgrade the engine"
                )
            if current is not None:
                raise StoreError(
                    f"the database {safe_url} is at schema revision {current}; this engine needs "
                    f"{HEAD}: run `engine db upgrade`"
                )
            upgrade(engine)
            return
        except SQLAlchemyError as exc:
            if attempt == 4:
                raise StoreError(f"cannot open the database {safe_url}: {exc}") from None
            time.sleep(0.2 * (attempt + 1))
