"""The processors' per-customer working set: each customer's digest (profile.py), loaded from ClickHouse
on first touch and kept in memory, re-scored whenever an event changes it or the daily tick comes, with
the rows and the score events that follow from it. One asyncio lock serialises every change, so the
agents of this process never interleave on one customer."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from services.insights.profile import Profile
from services.insights.schema import (
    CASE_EVENTS, CUSTOMER_SCORES, CUSTOMER_STATE, LIFECYCLE_TRANSITIONS, SURVEY_ANSWERS, TOUCHPOINTS, Table,
)
from services.insights.scoring import Scores, ScoringConfig, as_datetime, peak, score
from services.insights.warehouse import Warehouse
from shared.erasure import NIL_CUSTOMER_ID
from shared.events import Event
from shared.events.feedback import CaseOpened, CaseResolved, CaseSlaBreached, SurveyAnswered
from shared.events.scores import (
    ChurnRiskChangedPayload, CustomerChurnRiskChanged, CustomerLifecycleChanged, LifecycleChangedPayload,
)

_SCORE_EVENTS = uuid.UUID("6b2f6f5e-6d0b-4a53-9d43-3c2b7d1e0a11")


@dataclass
class Changes:
    """What one batch produces: rows per table (inserted in this order) and events to publish first."""

    rows: dict[Table, list[list]] = field(default_factory=lambda: {t: [] for t in (
        TOUCHPOINTS, SURVEY_ANSWERS, CASE_EVENTS, LIFECYCLE_TRANSITIONS, CUSTOMER_SCORES, CUSTOMER_STATE)})
    events: list[Event] = field(default_factory=list)
    # Touchpoint re-attributions in order: (tenant, {from customer: to customer}, only these event ids or None)
    moves: list[tuple[str, dict[str, str], tuple[str, ...] | None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events) or bool(self.moves) or any(self.rows.values())


def coalesced(moves: list[tuple[str, dict[str, str], tuple[str, ...] | None]]):
    """Consecutive merges of one tenant as one rewrite (a chain A→B, B→C becomes A→C, B→C); a split, which
    moves chosen events only, keeps its place between them."""
    out: list[tuple[str, dict[str, str], tuple[str, ...] | None]] = []
    for tenant_id, mapping, event_ids in moves:
        last = out[-1] if out else None
        if event_ids is None and last is not None and last[0] == tenant_id and last[2] is None:
            combined = {source: mapping.get(target, target) for source, target in last[1].items()}
            combined.update(mapping)
            out[-1] = (tenant_id, {k: v for k, v in combined.items() if k != v}, None)
        else:
            out.append((tenant_id, dict(mapping), event_ids))
    return out


def _version() -> int:
    return time.time_ns() // 1000


def _uuid(customer_id: str | None) -> str:
    return customer_id or str(NIL_CUSTOMER_ID)


class CustomerBook:
    def __init__(self, warehouse: Warehouse, *, config: ScoringConfig | None = None, default_zone: str = "Asia/Shanghai",
                 clock=lambda: datetime.now(UTC), max_cached: int = 200_000):
        self.warehouse, self.config, self.clock = warehouse, config or ScoringConfig(), clock
        self.default_zone, self.max_cached = default_zone, max_cached
        self.lock = asyncio.Lock()
        self._cache: OrderedDict[tuple[str, str], Profile] = OrderedDict()
        self._intervals: dict[str, dict[str, float]] = {}
        self._zones: dict[tuple[str, str], str] = {}

    # --- reference data ---
    def refresh_zones(self) -> None:
        """Store zones (blocking: run in a thread)."""
        self._zones = {key: zone for key, (_, zone) in self.warehouse.stores().items()}

    def refresh_reference(self) -> None:
        """Store zones and the return intervals learned from every tenant's visits (blocking)."""
        self.refresh_zones()
        self._intervals = {t: self.warehouse.learn_intervals(t) for t in self.warehouse.tenants()}

    def zone(self, tenant_id: str, store_id: str | None) -> ZoneInfo:
        return ZoneInfo(self._zones.get((tenant_id, store_id or ""), self.default_zone))

    def local_date(self, tenant_id: str, store_id: str | None, instant: datetime) -> date:
        return instant.astimezone(self.zone(tenant_id, store_id)).date()

    # --- the working set ---
    async def profiles(self, tenant_id: str, customer_ids: set[str]) -> dict[str, Profile]:
        missing = [c for c in customer_ids if (tenant_id, c) not in self._cache]
        if missing:
            stored = await asyncio.to_thread(self.warehouse.load_states, tenant_id, missing)
            for customer_id in missing:
                data = stored.get(customer_id)
                self._remember(Profile.loads(tenant_id, customer_id, data) if data
                               else Profile(tenant_id, customer_id))
        found = {}
        for customer_id in customer_ids:
            self._cache.move_to_end((tenant_id, customer_id))
            found[customer_id] = self._cache[(tenant_id, customer_id)]
        return found

    def _remember(self, profile: Profile) -> None:
        self._cache[(profile.tenant_id, profile.customer_id)] = profile
        while len(self._cache) > self.max_cached:  # evicted digests are in ClickHouse already
            self._cache.popitem(last=False)

    def forget(self, tenant_id: str, customer_ids) -> None:
        for customer_id in customer_ids:
            self._cache.pop((tenant_id, str(customer_id)), None)

    def forget_everyone(self) -> None:
        self._cache.clear()

    def cached(self, tenant_id: str, customer_id: str) -> Profile | None:
        return self._cache.get((tenant_id, customer_id))

    # --- scoring ---
    def rescore(self, profile: Profile, changes: Changes, now: datetime | None = None) -> Scores | None:
        """Score, announce a stage change or a risk band crossing, and queue the profile's rows. A profile
        no touchpoint has reached yet (a tier change or an answer came first) is kept, not scored."""
        if profile.first_seen is None:
            self._keep(profile, changes, _version())
            return None
        now = now or self.clock()
        scores = score(profile, now, self._intervals.get(profile.tenant_id), self.config)
        day = now.astimezone(UTC).date().isoformat()
        if scores.stage != profile.stage:
            event_id = uuid.uuid5(_SCORE_EVENTS, f"{profile.tenant_id}|{profile.customer_id}|{profile.stage}|"
                                                 f"{scores.stage}|{day}")
            changes.events.append(CustomerLifecycleChanged(
                event_id=event_id, occurred_at=now, recorded_at=now, tenant_id=profile.tenant_id, source="insights",
                customer_id=profile.customer_id, payload=LifecycleChangedPayload(
                    from_stage=profile.stage or None, to_stage=scores.stage, reason=scores.stage_reason)))
            changes.rows[LIFECYCLE_TRANSITIONS].append([
                event_id, profile.tenant_id, profile.customer_id, now, profile.stage, scores.stage,
                scores.stage_reason, scores.home_store])
            profile.stage, profile.stage_since = scores.stage, now.timestamp()
        profile.peak_stage = peak(profile.peak_stage, scores.stage, scores.visits)
        # A first score is announced only when it is above low: "low" on first sight crosses nothing.
        if scores.band != profile.band and (profile.band or scores.band != "low"):
            changes.events.append(CustomerChurnRiskChanged(
                event_id=uuid.uuid5(_SCORE_EVENTS, f"{profile.tenant_id}|{profile.customer_id}|risk|{profile.band}|"
                                                   f"{scores.band}|{day}"),
                occurred_at=now, recorded_at=now, tenant_id=profile.tenant_id, source="insights",
                customer_id=profile.customer_id,
                payload=ChurnRiskChangedPayload(risk=scores.risk, band=scores.band, reasons=scores.reasons)))
        profile.band = scores.band
        version = _version()
        changes.rows[CUSTOMER_SCORES].append([
            profile.tenant_id, profile.customer_id, version, 0, now, scores.stage,
            as_datetime(profile.stage_since) or now, profile.peak_stage, scores.risk, scores.band, list(scores.reasons),
            scores.recency_days, scores.frequency, scores.monetary_minor, scores.r, scores.f, scores.m,
            scores.rfm_segment, scores.value_tier, scores.home_store, profile.first_channel,
            as_datetime(profile.first_seen) or now, as_datetime(scores.first_paid_at), int(scores.returned_within_90d),
            as_datetime(scores.last_paid_visit_at), scores.tier, scores.category, scores.expected_interval_days,
            scores.overdue_days, scores.visits])
        self._keep(profile, changes, version)
        return scores

    @staticmethod
    def _keep(profile: Profile, changes: Changes, version: int) -> None:
        changes.rows[CUSTOMER_STATE].append([profile.tenant_id, profile.customer_id, version, 0,
                                             profile.dumps().decode()])

    def drop(self, tenant_id: str, customer_id: str, changes: Changes) -> None:
        """A profile merged into another: tombstones for its state and scores."""
        self.forget(tenant_id, [customer_id])
        version, now = _version(), self.clock()
        changes.rows[CUSTOMER_STATE].append([tenant_id, customer_id, version, 1, "{}"])
        changes.rows[CUSTOMER_SCORES].append([
            tenant_id, customer_id, version, 1, now, "", now, "", 0.0, "", [], None, 0, 0, 0, 0, 0, "", "", "", "",
            now, None, 0, None, "", "", 0.0, None, 0])

    # --- rows of feedback facts ---
    def answer_row(self, event: SurveyAnswered | Event, source: str) -> list:
        p = event.payload
        store = getattr(p, "store_id", None) or getattr(event, "store_id", None) or ""
        customer = getattr(event, "customer_id", None)
        return [event.event_id, event.tenant_id, _uuid(customer and str(customer)), store, p.staff_id or "",
                p.service_id or "", source, event.occurred_at, self.local_date(event.tenant_id, store, event.occurred_at),
                -1 if p.nps is None else p.nps, -1 if p.csat is None else p.csat, dict(p.step_ratings)]

    def case_row(self, event: CaseOpened | CaseSlaBreached | CaseResolved) -> list:
        p = event.payload
        kind = {CaseOpened: "opened", CaseSlaBreached: "breached", CaseResolved: "resolved"}[type(event)]
        return [event.event_id, event.tenant_id, p.case_id, p.store_id or "",
                _uuid(event.customer_id and str(event.customer_id)), kind, event.occurred_at,
                self.local_date(event.tenant_id, p.store_id, event.occurred_at), p.priority, p.reason,
                getattr(p, "sla", ""), getattr(p, "resolved_in_business_minutes", 0)]
