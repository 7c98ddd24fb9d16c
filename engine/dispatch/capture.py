"""What a runner says while its attempt runs: `ctx.logger` records, and what it prints to stdout
and stderr, caught line by line for the attempt's log.

`sys.stdout` and `sys.stderr` are replaced once by routers that send a write to the attempt
running in the current context (a runner thread, or an async runner's task: a `ContextVar`
follows each), and everything else to the real stream; a handler on the runners' logger does the
same for records. So concurrent attempts never mix their lines, and output that is no runner's
goes where it always went. What a runner writes to file descriptors directly (a subprocess it
starts, C code) bypasses Python's streams and is not caught.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from engine.config import LOG_LIMIT_ENV, number
from engine.context import RUNNER_LOGGER
from engine.dispatch.base import LogLine

_LEVELS = {"stdout": "info", "stderr": "warning"}
"""The level a printed line is stored with, by stream."""

_current: ContextVar[Capture | None] = ContextVar("engine_attempt_log", default=None)


class AttemptLog:
    """The lines of one attempt, handed to `deliver` as they come, up to ENGINE_LOG_LIMIT bytes of
    text; past it lines are only counted, and `close` adds one line saying how much was dropped."""

    def __init__(self, deliver: Callable[[Sequence[LogLine]], None]) -> None:
        self._deliver = deliver
        self._left = int(number(LOG_LIMIT_ENV))
        """Bytes of text still kept."""
        self._dropped_lines = self._dropped_bytes = 0
        self._partial: dict[str, list[str]] = {}
        """The pieces of each stream's line not yet ended: joined once it ends, so that a line
        written a character at a time costs time linear in its length."""
        self._partial_chars: dict[str, int] = {}
        self._overflowing: set[str] = set()
        """Streams whose unended line outgrew what is left of the limit: dropped until it ends,
        so that a line that never ends (a progress bar redrawn with `\\r`) is not held."""
        self._lock = threading.Lock()
        """A runner's own threads may print through the same log."""

    def record(self, level: str, stream: str, message: str) -> None:
        size = _size(message)
        with self._lock:
            room = self._left
            if size > room or not room:
                self._left = 0
                self._dropped_lines += 1
                self._dropped_bytes += size
                return
            self._left = room - size
        self._deliver([LogLine(datetime.now(UTC), level, stream, message)])

    def write(self, stream: str, text: str) -> None:
        """Text printed to `stream`: each complete line is recorded, a partial one kept."""
        with self._lock:
            if self._left == 0:
                self._drop(stream, text)
                return
            if stream in self._overflowing:
                dropped, newline, text = text.partition("\n")
                self._dropped_bytes += _size(dropped)
                if not newline:
                    return
                self._overflowing.discard(stream)
            if "\n" in text:
                pieces = self._partial.pop(stream, [])
                self._partial_chars.pop(stream, None)
                *lines, text = ("".join(pieces) + text).split("\n")
            else:
                lines = []
            if text:
                self._partial.setdefault(stream, []).append(text)
                chars = self._partial_chars[stream] = self._partial_chars.get(stream, 0) + len(text)
                if chars > self._left:  # a character is at least a byte: it can never fit
                    self._dropped_lines += 1
                    self._dropped_bytes += sum(_size(p) for p in self._partial.pop(stream))
                    del self._partial_chars[stream]
                    self._overflowing.add(stream)
        for line in lines:
            self.record(_LEVELS[stream], stream, line)

    def _drop(self, stream: str, text: str) -> None:
        """Past the limit, where nothing more is kept: `text` is only counted, each line once,
        when it starts (a stream in `_overflowing` has its unended line counted already)."""
        pieces = self._partial.pop(stream, None)
        if pieces is not None:
            del self._partial_chars[stream]
            self._dropped_bytes += sum(map(_size, pieces))
            self._dropped_lines += 1
            self._overflowing.add(stream)
        ends = text.count("\n")
        self._dropped_bytes += _size(text) - ends
        unended = not text.endswith("\n") and text != ""
        started = ends + unended - (stream in self._overflowing and (ends > 0 or unended))
        self._dropped_lines += started
        if unended or (stream in self._overflowing and not ends):
            self._overflowing.add(stream)
        else:
            self._overflowing.discard(stream)

    def close(self) -> None:
        """Record what is left of partial lines, then how much was dropped, if anything."""
        with self._lock:
            partial, self._partial = self._partial, {}
        for stream, pieces in partial.items():
            self.record(_LEVELS[stream], stream, "".join(pieces))
        if self._dropped_lines:
            self._deliver(
                [
                    LogLine(
                        datetime.now(UTC),
                        "warning",
                        "log",
                        f"… {self._dropped_lines:,} more lines ({self._dropped_bytes:,} bytes) "
                        f"dropped: over the log limit of this attempt ({LOG_LIMIT_ENV})",
                    )
                ]
            )


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class Capture:
    """Catches the current context's output as the lines of one attempt, while the block runs.

    Made for every attempt, so it costs little: a class, not a generator, and the attempt's
    log is made when its runner first says something.
    """

    __slots__ = ("_deliver", "_log", "_token")

    def __init__(self, deliver: Callable[[Sequence[LogLine]], None]) -> None:
        self._deliver = deliver
        self._log: AttemptLog | None = None

    def log(self) -> AttemptLog:
        if self._log is None:
            with _making:  # a runner's own threads may say their first lines at once
                if self._log is None:
                    self._log = AttemptLog(self._deliver)
        return self._log

    def __enter__(self) -> None:
        _install()
        self._token = _current.set(self)

    def __exit__(self, *exc: object) -> None:
        try:  # noqa: SIM105 (contextlib.suppress costs a µs, every attempt)
            _current.reset(self._token)
        except ValueError:  # a coroutine closed from another context
            pass
        if self._log is not None:
            self._log.close()


_making = threading.Lock()


class _Router(io.TextIOBase):
    """A stand-in for sys.stdout or sys.stderr: an attempt's writes go to its log."""

    def __init__(self, stream: str, original: Any) -> None:
        self.stream = stream
        self.original = original

    def write(self, text: str) -> int:
        capture = _current.get()
        if capture is None:
            return int(self.original.write(text))
        capture.log().write(self.stream, text)
        return len(text)

    def flush(self) -> None:
        if _current.get() is None:
            self.original.flush()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer...
        return getattr(self.original, name)


class _RecordRouter(logging.Handler):
    """Sends a runner's `ctx.logger` records to its attempt's log."""

    def emit(self, record: logging.LogRecord) -> None:
        capture = _current.get()
        if capture is not None:
            capture.log().record(record.levelname.lower(), "log", self.format(record))


_installed = threading.Lock()


def _install() -> None:
    """Route the standard streams and the runners' logger, once per process."""
    if isinstance(sys.stdout, _Router) and isinstance(sys.stderr, _Router):
        return
    with _installed:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router("stdout", sys.stdout)
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router("stderr", sys.stderr)
        logger = logging.getLogger(RUNNER_LOGGER)
        if not any(isinstance(h, _RecordRouter) for h in logger.handlers):
            logger.addHandler(_RecordRouter())
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.INFO)
