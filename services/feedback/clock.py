"""The feedback clock: sends due survey invitations, expires unanswered ones and announces missed case
deadlines. Rows are claimed with SKIP LOCKED, so replicas share the work."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.feedback import cases, surveys
from shared.bus.worker import BackgroundWorker
from shared.db import Database
from shared.events.base import utcnow

BATCH = 200


def tick(db: Database, now: datetime | None = None) -> dict[str, int]:
    now = now or utcnow()
    done = {}
    for name, job in (("invitations_sent", surveys.send_due), ("invitations_expired", surveys.expire),
                      ("sla_breaches", cases.flag_breaches)):
        with db.transaction() as cur:
            done[name] = job(cur, now)
    return done


class FeedbackClock(BackgroundWorker):
    def __init__(self, db: Database, interval_s: float = 5.0, clock: Callable[[], datetime] = utcnow):
        super().__init__(name="feedback-clock")
        self.db, self.interval_s, self.clock = db, interval_s, clock

    def work(self) -> None:
        while not self._stopping.is_set():
            done = tick(self.db, self.clock())
            self.last_error = None
            if max(done.values()) < BATCH:
                self._stopping.wait(self.interval_s)
