"""A background thread that runs one unit of work until stopped and restarts it after a failure,
keeping the last error for readiness checks."""
from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class BackgroundWorker(threading.Thread):
    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self._stopping = threading.Event()
        self.last_error: str | None = None

    def stop(self, timeout: float = 15) -> None:
        self._stopping.set()
        self.join(timeout)

    def work(self) -> None:
        """Run until stopped; return or raise to be restarted."""
        raise NotImplementedError

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.work()
            except Exception as exc:  # a dependency is down: nothing was committed, so try again
                self.last_error = repr(exc)
                log.warning("%s failed, restarting: %r", self.name, exc)
                self._stopping.wait(1.0)
