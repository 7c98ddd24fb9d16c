"""`engine serve` as a subprocess for tests: started on a free port, its stderr collected."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ENGINE = str(Path(sys.executable).parent / "engine")


class Server:
    """An `engine serve` subprocess on a free port; its stderr is collected as it comes."""

    def __init__(self, cwd: Path, db: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.db = db
        self.proc = subprocess.Popen(
            [ENGINE, "serve", "defs", "--db", db, "--port", "0", *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for_url()
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "".join(self.log)
                continue
            found = re.search(r"Uvicorn running on (http://\S+)", line)
            if found:
                return found.group(1)
        raise AssertionError("the server did not start:\n" + "".join(self.log))

    def wait(self, instance_id: int, *statuses: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.client.get(f"/batch/instances/{instance_id}").json()
            if doc["status"] in statuses:
                return doc
            assert time.monotonic() < deadline, f"{instance_id} stayed {doc['status']}"
            time.sleep(0.05)

    def terminate(self, timeout: float = 60) -> int:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)
