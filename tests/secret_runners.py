"""The runner of the secrets tests, for in-process runs and for `engine worker`: it does with its
secret everything a careless runner could (prints, logs, returns, raises it)."""

from __future__ import annotations

import sys

from engine import job_handler


@job_handler("leak")
def leak(inputs, ctx):
    token = inputs["header"]
    print("printing", token)
    print("to stderr", token, file=sys.stderr)
    ctx.logger.warning("logging %s", token)
    if inputs.get("fail"):
        raise RuntimeError(f"failing with {token}")
    return {"echo": token, token: "as a key", "nested": [token]}
