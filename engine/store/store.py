"""The store: instance and definition state, and the queries behind `engine runs`.

Step attempts, the executor's hot path, are written by `attempts.AttemptWriter`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CursorResult,
    Engine,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from engine.config import DATABASE_ENV, DEFAULT_DATABASE_URL
from engine.errors import (
    ConfigError,
    IdempotencyKeyTaken,
    InstanceNotFound,
    TickTaken,
)
from engine.status import InstanceStatus
from engine.store.attempts import AttemptWriter
from engine.store.leases import InstanceLeases
from engine.store.logs import StepLogs
from engine.store.retention import Retention
from engine.store.schema import ensure_current
from engine.store.tables import definitions, instances, step_results
from engine.store.ticks import TickClaims, insert_claim
from engine.store.types import utcnow
from engine.store.views import InstanceView, StepAttemptView, StoredInstance, is_abandoned


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (engine runs list) work beside a running instance; synchronous=NORMAL is
    # durable against a crashed process, and in WAL mode a power loss can only drop the last
    # commits, never corrupt the file.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine with the settings every connection of ours needs."""
    try:
        engine = create_engine(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigError(
            f"cannot use database URL {url!r} (--db or {DATABASE_ENV}): {exc}"
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
    return engine


class Store:
    """Persistence of definitions, instances and step attempts (SQLite or PostgreSQL)."""

    def __init__(self, url: str = DEFAULT_DATABASE_URL) -> None:
        self.url = url
        self.engine = make_engine(url)
        ensure_current(self.engine, self.safe_url)
        self.ticks = TickClaims(self.engine)
        self.leases = InstanceLeases(self.engine)
        self.retention = Retention(self.engine)
        self.logs = StepLogs(self.engine)

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- writes -----------------------------------------------------------------------------

    def save_definition(
        self, name: str, version: str, cron: str | None, steps: list[dict[str, Any]], source: str
    ) -> int:
        """The id of this definition version, stored on first sight.

        Of two processes (or threads) seeing a version first at once, one inserts it; the
        other's insert hits the unique (name, version) and it reads the winner's row.
        """
        query = select(definitions.c.id).where(
            definitions.c.name == name, definitions.c.version == version
        )
        try:
            with self.engine.begin() as conn:
                found = conn.execute(query).scalar()
                if found is not None:
                    return int(found)
                row = {
                    "name": name,
                    "version": version,
                    "cron": cron,
                    "steps": steps,
                    "source": source,
                    "created_at": utcnow(),
                }
                return _new_id(conn.execute(insert(definitions).values(row)))
        except IntegrityError:
            with self.engine.connect() as conn:
                found = conn.execute(query).scalar()
            if found is None:
                raise
            return int(found)

    def create_instance(
        self,
        definition_id: int,
        name: str,
        trigger: str,
        params: dict[str, Any],
        scheduled_for: datetime | None = None,
        tick_claimed_by: str | None = None,
        idempotency_key: str | None = None,
        lease_expires_at: datetime | None = None,
        over_skipped: bool = False,
        sealed_params: str | None = None,
    ) -> int:
        """Create a pending instance, its lease expiring at `lease_expires_at` unless renewed
        (by whoever queues it) or taken (by whoever runs it).

        With `tick_claimed_by`, the instance's tick (`scheduled_for`) is claimed in the same
        transaction: TickTaken when another scheduler or backfill has it (with `over_skipped`,
        when it is no longer a skipped tick). With `idempotency_key`, IdempotencyKeyTaken when
        another instance has that key: the key's unique constraint decides between racing
        requests, in any number of processes. `sealed_params` is what only a resume reads.
        """
        row = {
            "definition_id": definition_id,
            "definition_name": name,
            "status": InstanceStatus.pending.value,
            "trigger": trigger,
            "params": params,
            "sealed_params": sealed_params,
            "scheduled_for": scheduled_for,
            "idempotency_key": idempotency_key,
            "lease_expires_at": lease_expires_at,
            "created_at": utcnow(),
        }
        try:
            with self.engine.begin() as conn:
                instance_id = _new_id(conn.execute(insert(instances).values(row)))
                if tick_claimed_by is not None:
                    assert scheduled_for is not None, "a tick claim needs the tick"
                    insert_claim(
                        conn,
                        name,
                        scheduled_for,
                        trigger,
                        tick_claimed_by,
                        instance_id=instance_id,
                        over_skipped=over_skipped,
                    )
                return instance_id
        except IntegrityError:
            if tick_claimed_by is not None:
                assert scheduled_for is not None
                raise TickTaken(
                    f"{name} tick {scheduled_for.isoformat()} is already claimed"
                ) from None
            existing = self.instance_by_key(idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            raise IdempotencyKeyTaken(idempotency_key or "", existing) from None

    def instance_by_key(self, idempotency_key: str) -> int | None:
        """The id of the instance created under an idempotency key, if any."""
        query = select(instances.c.id).where(instances.c.idempotency_key == idempotency_key)
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar()
        return None if found is None else int(found)

    def stored_instance(self, instance_id: int) -> StoredInstance:
        """What a resume needs: the definition version it ran, its params and run details."""
        query = (
            select(instances, definitions.c.version, definitions.c.source)
            .join(definitions, definitions.c.id == instances.c.definition_id)
            .where(instances.c.id == instance_id)
        )
        with self.engine.connect() as conn:
            row = _found(conn.execute(query).first(), instance_id)
        return StoredInstance.model_validate(row._mapping)

    def last_attempts(self, instance_id: int) -> dict[str, tuple[int, str, Any]]:
        """Each step's last attempt: (attempt, status, result); a mapped step's own rows."""
        query = _attempts(step_results.c.step_key).where(
            step_results.c.batch_instance_id == instance_id, step_results.c.item_key.is_(None)
        )
        with self.engine.connect() as conn:
            return {r[0]: (r.attempt, r.status, r.result_payload) for r in conn.execute(query)}

    def last_item_attempts(self, instance_id: int, step: str) -> dict[str, tuple[int, str, Any]]:
        """Each item's last attempt in a mapped step, by item key: (attempt, status, result)."""
        query = _attempts(step_results.c.item_key).where(
            step_results.c.batch_instance_id == instance_id,
            step_results.c.step_key == step,
            step_results.c.item_key.is_not(None),
        )
        with self.engine.connect() as conn:
            return {r[0]: (r.attempt, r.status, r.result_payload) for r in conn.execute(query)}

    def item_counts(self, instance_id: int) -> dict[str, dict[str, int]]:
        """By mapped step, how many of its items are in each status (of their last attempt);
        counted by the database, so that a summary of 100,000 items loads none of them."""
        query = (
            select(step_results.c.step_key, step_results.c.status, func.count())
            .where(
                step_results.c.batch_instance_id == instance_id,
                step_results.c.item_key.is_not(None),
                last_item_attempt(),
            )
            .group_by(step_results.c.step_key, step_results.c.status)
        )
        counts: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for step, status, count in conn.execute(query):
                counts.setdefault(step, {})[status] = count
        return counts

    def attempt_writer(self, instance_id: int, owner: str, lease_seconds: float) -> AttemptWriter:
        """The writer of one instance's attempts for the executor's rounds, each round fenced
        by `owner`'s lease (and renewing it for `lease_seconds`)."""
        return AttemptWriter(
            self.engine,
            instance_id,
            owner,
            lease_seconds,
            lambda: self.leases.lost(instance_id, owner),
        )

    # -- reads ------------------------------------------------------------------------------

    def get_instance(self, instance_id: int, *, items: bool = True) -> InstanceView:
        """The instance with every attempt in the order they started, read in one transaction;
        with `items` false, without the attempts of items (`item_counts` sums those up).

        An instance of 100,000 item attempts is for `instance_head` and `attempts` to stream.
        """
        query = select(step_results).where(step_results.c.batch_instance_id == instance_id)
        if not items:
            query = query.where(step_results.c.item_key.is_(None))
        with self.engine.connect() as conn:
            row = _found(conn.execute(_instance_query_of(instance_id)).first(), instance_id)
            rows = conn.execute(query.order_by(step_results.c.id)).all()
        return _view(row, [StepAttemptView.from_row(a) for a in rows])

    def instance_head(self, instance_id: int) -> InstanceView:
        """The instance without its attempts (`steps` None); InstanceNotFound."""
        with self.engine.connect() as conn:
            row = _found(conn.execute(_instance_query_of(instance_id)).first(), instance_id)
        return _view(row, None)

    def attempts(
        self, instance_id: int, *, only_items: bool = False, page: int = 1000
    ) -> Iterator[StepAttemptView]:
        """Every attempt of the instance, items' included (`only_items`: those alone), in the
        order they started, read `page` rows at a time, each page in a transaction of its own:
        100,000 item attempts are never held at once, and a slow reader keeps no connection. An
        attempt that changes while they are read shows as it was when its page was read."""
        after = 0
        while True:
            query = (
                select(step_results)
                .where(step_results.c.batch_instance_id == instance_id)
                .where(step_results.c.id > after)
                .order_by(step_results.c.id)
                .limit(page)
            )
            if only_items:
                query = query.where(step_results.c.item_key.is_not(None))
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            yield from map(StepAttemptView.from_row, rows)
            if len(rows) < page:
                return
            after = rows[-1].id

    def list_instances(
        self, definition: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[InstanceView]:
        query = _instance_query().order_by(instances.c.id.desc()).limit(limit)
        if definition:
            query = query.where(instances.c.definition_name == definition)
        if status:
            query = query.where(instances.c.status == status)
        with self.engine.connect() as conn:
            return [_view(row, None) for row in conn.execute(query)]


def last_item_attempt() -> Any:
    """The condition that a row of `batch_step_result` is its item's last attempt."""
    later = step_results.alias("later")
    return ~(
        select(later.c.id)
        .where(
            later.c.batch_instance_id == step_results.c.batch_instance_id,
            later.c.step_key == step_results.c.step_key,
            later.c.item_key == step_results.c.item_key,
            later.c.attempt > step_results.c.attempt,
        )
        .exists()
    )


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _attempts(key: Any) -> Any:
    """(key, attempt, status, result) rows, in attempt order: the last row of a key is its last
    attempt."""
    return select(
        key, step_results.c.attempt, step_results.c.status, step_results.c.result_payload
    ).order_by(step_results.c.attempt)


def _instance_query() -> Any:
    return select(instances, definitions.c.version).join(
        definitions, definitions.c.id == instances.c.definition_id
    )


def _instance_query_of(instance_id: int) -> Any:
    return _instance_query().where(instances.c.id == instance_id)


def _found(row: Any, instance_id: int) -> Any:
    """`row`, the instance's; InstanceNotFound when there is none."""
    if row is None:
        raise InstanceNotFound(f"no instance with id {instance_id}")
    return row


def _view(row: Any, steps: list[StepAttemptView] | None) -> InstanceView:
    return InstanceView(
        id=row.id,
        definition=row.definition_name,
        version=row.version,
        status=row.status,
        trigger=row.trigger,
        params=row.params,
        scheduled_for=row.scheduled_for,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        abandoned=is_abandoned(row.status, row.lease_expires_at, utcnow()),
        steps=steps,
    )
