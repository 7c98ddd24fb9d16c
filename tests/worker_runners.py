"""The runners of `engine worker` subprocesses in the tests (`--runners tests/worker_runners.py`):
the contract runners and the talking runners of the log tests, in the registry that discovery
fills."""

import contract_runners  # discovery puts this file's folder on sys.path
import log_runners

from engine.registry import registry

contract_runners.register(registry)
log_runners.register(registry)
