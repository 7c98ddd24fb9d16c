"""A duty done every few seconds on a thread of its own while a `with` block runs."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Periodic:
    """Calls `tick()` every `interval` seconds, from `with` until its end.

    A tick that raises is logged and the next one comes: a duty that died silently (a lease no
    longer renewed, orphans no longer adopted) would be worse than one failing loudly. `tick`
    returns False to end the duty early.
    """

    def __init__(self, name: str, interval: float) -> None:
        self.name = name
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def tick(self) -> bool | None:
        raise NotImplementedError

    def __enter__(self) -> Periodic:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join()

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                if self.tick() is False:
                    return
            except Exception as exc:
                log.warning("%s failed: %s", self.name, exc)
