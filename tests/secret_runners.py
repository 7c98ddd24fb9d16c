"""The runner of the secrets tests, for in-process runs and for `engine worker`: it does with its
secret everything a careless runner could (prints, logs, returns, raises it)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

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


@job_handler("leak_param")
def leak_param(inputs, ctx):
    """The secret param both ways, rendered into its inputs and read from `ctx.params`, and
    leaked every way too. With `seen`, it writes the value's digest there (a resumed attempt
    proves it had the value); with `failOnce`, the first attempt fails, having made that file."""
    token = ctx.params["token"]
    assert inputs["header"] == f"Bearer {token}", "the inputs and ctx.params disagree"
    if inputs.get("seen"):
        Path(inputs["seen"]).write_text(hashlib.sha256(token.encode()).hexdigest())
    print("printing", token, repr(token), json.dumps(token))
    print("to stderr", inputs["header"], file=sys.stderr)
    ctx.logger.warning("logging %s %r", token, {"token": token})
    once = inputs.get("failOnce")
    if inputs.get("fail") or (once and not Path(once).exists()):
        if once:
            Path(once).touch()
        raise RuntimeError(f"failing with {token!r}")
    return {
        "echo": token,
        token: "as a key",
        "nested": [inputs["header"]],
        "day": ctx.params["day"],
    }


@job_handler("plain")
def plain(inputs, ctx):
    """A step that does not use the secret param."""
    return {"day": ctx.params["day"]}


@job_handler("reads_param")
def reads_param(inputs, ctx):
    """A step that reads the secret param from `ctx.params` only."""
    return {"length": len(ctx.params["token"])}
