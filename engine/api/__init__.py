"""The HTTP API of `engine serve` (FastAPI; install with `pip install 'engine[api]'`)."""

from engine.api.app import Scheduler, create_app

__all__ = ["Scheduler", "create_app"]
