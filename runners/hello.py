"""`greet`: the smallest useful runner, used by definitions/hello.yaml."""

from __future__ import annotations

from typing import Any

from engine import StepContext, job_handler


@job_handler("greet")
def greet(inputs: dict[str, Any], ctx: StepContext) -> dict[str, str]:
    """Greet `inputs.name` with `inputs.greeting` (default "Hello")."""
    return {"message": f"{inputs.get('greeting', 'Hello')}, {inputs['name']}!"}
