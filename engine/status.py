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
    cli = "cli"
    http = "http"
    cron = "cron"
    backfill = "backfill"
    resume = "resume"
