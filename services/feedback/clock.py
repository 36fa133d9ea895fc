"""The feedback clock: sends due survey invitations, expires unanswered ones and announces missed case
deadlines. Rows are claimed with SKIP LOCKED, so replicas share the work."""
from __future__ import annotations

from datetime import datetime

from services.feedback import cases, surveys
from shared.bus.worker import Clock, run_jobs
from shared.db import Database
from shared.events.base import utcnow

BATCH = 200


JOBS = (("invitations_sent", surveys.send_due), ("invitations_expired", surveys.expire),
        ("sla_breaches", cases.flag_breaches))


def tick(db: Database, now: datetime | None = None) -> dict[str, int]:
    return run_jobs(db, JOBS, now or utcnow())


def feedback_clock(db: Database, interval_s: float = 5.0) -> Clock:
    return Clock("feedback-clock", db, JOBS, interval_s, BATCH, utcnow)
