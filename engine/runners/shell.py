"""`engine.shell`: run a command, its output lines going to the step's log as they come.

The command runs in a process group of its own, and nothing of it outlives the attempt: when
the attempt times out or is cancelled, and when the command ends, whatever is left in its group
(a background `sleep 300 &`) is sent SIGTERM, then SIGKILL after `KILL_GRACE_SECONDS`. Output is
read by the runner's own thread (a selector over both pipes), so every line is written to
`sys.stdout`/`sys.stderr` in the attempt's context and lands in its log.
"""

from __future__ import annotations

import codecs
import json
import os
import signal
import sys
import time
import typing
from typing import Any

from pydantic import Field, field_validator

from engine.context import StepContext
from engine.errors import StepFailed
from engine.runners.values import Inputs, Text, truncated

if typing.TYPE_CHECKING:
    import subprocess

TAIL_BYTES = 4096
"""How much of the end of stdout the result keeps, and of stderr a failure's error."""
KILL_GRACE_SECONDS = 1.0
"""From SIGTERM to SIGKILL; shorter than the process dispatcher's own grace, so that the group
is killed before the worker process that watches it would be."""
_POLL_SECONDS = 0.05
"""How often the cancel flag and the command's exit are looked at between output chunks."""
_CHUNK = 65536


class ShellInputs(Inputs):
    """The inputs of `engine.shell`."""

    command: str | list[Text] = Field(
        description="a string run by /bin/sh -c (templates in it become shell code), or a "
        "list of the program and its arguments, run without a shell",
    )
    env: dict[str, Text] = Field(
        default_factory=dict, description="variables added to the engine's environment"
    )
    cwd: str | None = Field(None, description="the working directory; default: the engine's")
    json_: bool = Field(
        False, alias="json", description="true: the result is stdout parsed as JSON"
    )

    @field_validator("command")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        if not value:
            raise ValueError("an empty command runs nothing")
        return value


def shell_command(inputs: ShellInputs, ctx: StepContext) -> Any:
    """Run the command to its end; `{"exitCode": 0, "stdout": <its last 4 KiB>}`, or with
    `json: true` its stdout parsed. A non-zero exit raises StepFailed with the end of stderr."""
    import subprocess

    try:
        process = subprocess.Popen(
            inputs.command,
            shell=isinstance(inputs.command, str),
            cwd=inputs.cwd,
            env={**os.environ, **inputs.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise StepFailed(f"cannot start the command: {exc}") from None
    stdout = _Pipe("stdout", keep_all=inputs.json_)
    stderr = _Pipe("stderr", keep_all=False)
    cancelled = _Supervisor(process, ctx).run({process.stdout: stdout, process.stderr: stderr})
    if cancelled:
        raise StepFailed("cancelled: the command's process group was ended")
    if process.returncode != 0:
        raise StepFailed(f"{_exit(process.returncode)}; {stderr.ending()}")
    text = stdout.text()
    if not inputs.json_:
        return {"exitCode": 0, "stdout": text}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StepFailed(f"stdout is not JSON ({exc}): {truncated(text, 500)!r}") from None


def _exit(code: int) -> str:
    if code >= 0:
        return f"the command exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:  # a real-time signal has no name
        name = f"signal {-code}"
    return f"the command was killed by {name}"


class _Pipe:
    """One output pipe of the command: its text to the stream of that name as it comes (the
    attempt's log), and the last TAIL_BYTES of it kept, or all of it."""

    def __init__(self, stream: str, *, keep_all: bool) -> None:
        self.stream = stream
        self.keep_all = keep_all
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._kept = bytearray()
        self._cut = False
        self._ends_line = True

    def feed(self, data: bytes) -> None:
        self._say(self._decoder.decode(data))
        self._kept += data
        if not self.keep_all and len(self._kept) > TAIL_BYTES:
            del self._kept[:-TAIL_BYTES]
            self._cut = True

    def close(self) -> None:
        """At end of file: the last line said, even without its newline."""
        self._say(self._decoder.decode(b"", final=True))
        if not self._ends_line:
            self._say("\n")

    def _say(self, text: str) -> None:
        if text:
            getattr(sys, self.stream).write(text)
            self._ends_line = text.endswith("\n")

    def text(self) -> str:
        kept = bytes(self._kept)
        if self._cut:  # the cut may have split a character: drop its continuation bytes
            kept = kept.lstrip(bytes(range(0x80, 0xC0)))
        return kept.decode("utf-8", "replace").replace("\x00", "\ufffd")

    def ending(self) -> str:
        text = self.text().rstrip()
        return f"stderr ends with:\n{text}" if text else "stderr was empty"


class _Supervisor:
    """Pumps the command's output until it has ended and its pipes are closed, ending its
    process group on cancel and once the command has exited."""

    def __init__(self, process: subprocess.Popen[bytes], ctx: StepContext) -> None:
        self.process = process
        self.ctx = ctx
        self.cancelled = False
        self._terminated_at: float | None = None
        self._ended_at: float | None = None
        """When the group was found empty, or was sent SIGKILL."""

    def run(self, pipes: dict[Any, _Pipe]) -> bool:
        """Whether the attempt was cancelled; the process is reaped when this returns."""
        import selectors

        with selectors.DefaultSelector() as selector:
            for file, pipe in pipes.items():
                selector.register(file, selectors.EVENT_READ, pipe)
            while not self._done(reading=bool(selector.get_map())):
                # With both pipes closed (the command closed its output and runs on), this
                # only waits: the cancel flag and the exit are looked at again after it.
                for key, _ in selector.select(_POLL_SECONDS):
                    chunk = os.read(key.fd, _CHUNK)
                    if chunk:
                        key.data.feed(chunk)
                    else:
                        selector.unregister(key.fileobj)
                        key.data.close()
        for file in pipes:
            file.close()
        self.process.wait()
        return self.cancelled

    def _done(self, *, reading: bool) -> bool:
        """Look at the exit, the cancel flag and the clock, signalling the group as they say;
        True once the group is gone and its output read (or held only by a process that left
        the group for a session of its own: it is not waited for beyond the grace)."""
        exited = self.process.poll() is not None
        self.cancelled = self.cancelled or self.ctx.cancel_event.is_set()
        if not (exited or self.cancelled):
            return False
        # A reaped leader's id stays its group's while any member lives: no other group can
        # take it before these signals reach what is left.
        now = time.monotonic()
        if self._terminated_at is None:
            self._terminated_at = now
            if not self._signal(signal.SIGTERM):
                self._ended_at = now
        elif self._ended_at is None:
            if now - self._terminated_at >= KILL_GRACE_SECONDS:
                self._signal(signal.SIGKILL)
                self._ended_at = now
            elif not self._signal(0):
                self._ended_at = now
        if self._ended_at is None:
            return False
        return not reading or now - self._ended_at >= KILL_GRACE_SECONDS

    def _signal(self, signum: int) -> bool:
        """Send `signum` to the group (0: none, a check); False when it has no process left."""
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            return False
        return True
