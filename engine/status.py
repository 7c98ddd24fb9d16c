"""Statuses of instances and step attempts, stored as these strings in SQL and JSON."""

from __future__ import annotations

from enum import StrEnum


class InstanceStatus(StrEnum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ENDED = frozenset({InstanceStatus.succeeded, InstanceStatus.failed, InstanceStatus.cancelled})
"""The statuses an instance ends in."""


class StepStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    skipped = "skipped"
    cancelled = "cancelled"


class Trigger(StrEnum):
    """How an instance was started. A resume runs the same instance again, so it keeps its
    trigger (a resumed cron run is still `cron`, its `run.scheduled_for` still the tick's)."""

    cli = "cli"
    http = "http"
    cron = "cron"
    backfill = "backfill"
