"""The runners of `engine worker` subprocesses in the tests (`--runners tests/worker_runners.py`):
the contract runners, in the registry that discovery fills."""

import contract_runners  # discovery puts this file's folder on sys.path

from engine.registry import registry

contract_runners.register(registry)
