"""A background thread that runs one unit of work until stopped and restarts it after a failure,
keeping the last error for readiness checks; and the service clocks built on it."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

log = logging.getLogger(__name__)


class BackgroundWorker(threading.Thread):
    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self._stopping = threading.Event()
        self.last_error: str | None = None

    def stop(self, timeout: float = 15) -> None:
        self.signal_stop()
        self.join(timeout)

    def signal_stop(self) -> None:
        """Ask to stop without waiting, so several workers wind down at once."""
        self._stopping.set()

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


Job = Callable[[object, datetime], int]  # (cursor, now) -> rows handled


def run_jobs(db, jobs: tuple[tuple[str, Job], ...], now: datetime) -> dict[str, int]:
    """One pass of a service clock's jobs, each in its own transaction; how many rows each handled."""
    done = {}
    for name, job in jobs:
        with db.transaction() as cur:
            done[name] = job(cur, now)
    return done


class Clock(BackgroundWorker):
    """A service's clock: runs its jobs every `interval_s`, or again at once while a job's batch came
    back full (more is due). Jobs claim rows with SKIP LOCKED, so replicas share the work."""

    def __init__(self, name: str, db, jobs: tuple[tuple[str, Job], ...], interval_s: float, batch: int,
                 now: Callable[[], datetime]):
        super().__init__(name=name)
        self.db, self.jobs, self.interval_s, self.batch, self.now = db, jobs, interval_s, batch, now

    def work(self) -> None:
        while not self._stopping.is_set():
            done = run_jobs(self.db, self.jobs, self.now())
            self.last_error = None
            if max(done.values(), default=0) < self.batch:
                self._stopping.wait(self.interval_s)
