"""The HTTP API of `engine serve` (FastAPI; install with `pip install 'engine[api]'`)."""

from engine.api.app import SchedulerLoop, create_app

__all__ = ["SchedulerLoop", "create_app"]
