"""Lifecycle stage, churn risk with its reasons, RFM and value tier of one customer at a given instant.
The live processors and the backtest call the same `score(profile, now, ...)`; nothing here reads a
clock, so a timeline scored "as of" a past date sees exactly what the processors would have seen then.

The return interval is the heart of it: a poodle is groomed every six weeks, a car detailed every
quarter. Each customer is measured against the interval of their usual service category, learned per
chain and category from the visits themselves (`warehouse.learn_intervals`), falling back to
`DEFAULT_INTERVAL_DAYS`, and blended with the customer's own rhythm once they have one."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import median

from pydantic import BaseModel, Field

from services.insights.profile import (
    AWARE, COMPLAINT, CONSIDER, INTEREST, PURCHASE, REFUND, STAGE_RANK, VISIT, Entry, Profile,
)
from shared.events.base import Currency

DAY = 86_400.0
DEFAULT_INTERVAL_DAYS = {
    "full_groom": 42, "groom": 42, "grooming": 42, "bath": 28, "nails": 21, "spa": 42,
    "detailing": 90, "detail": 90, "ceramic": 180, "wash": 14, "car_wash": 14, "interior": 60,
    "retail": 30, "": 45,
}


class ScoringConfig(BaseModel):
    """Thresholds a chain may tune (`INSIGHTS_SCORING__...`); the defaults are what the backtest measured."""

    at_risk_ratio: float = Field(1.5, description="Overdue ratio (days since last paid visit / expected "
                                                  "interval) from which a customer is at_risk.")
    churned_ratio: float = Field(3.0, description="Overdue ratio from which a customer is churned.")
    risk_medium: float = Field(0.4, description="Risk from which the band is medium.")
    risk_high: float = Field(0.7, description="Risk from which the band is high (the alert threshold).")
    recent_days: int = Field(90, description="How far back complaints and low scores count as recent.")
    tier_order: tuple[str, ...] = Field(("member", "silver", "gold", "diamond", "vip"),
                                        description="Tiers low to high, to tell a downgrade.")
    monetary_thresholds_minor: tuple[int, int, int, int] = Field(
        (5_000, 20_000, 50_000, 150_000), description="12-month spend from which M is 2, 3, 4, 5, in "
                                                      "minor units of `currency`.")
    currency: Currency = Field("CNY", description="The currency spend is counted in.")
    exchange_rates: dict[str, float] = Field(
        {}, description='Units of `currency` per unit of another, e.g. {"GBP": 9.0}: a chain selling in '
                        "several currencies counts its customers' spend in one. Spend in a currency without a "
                        "rate counts as it is.")

    def in_currency(self, amount_minor: int, currency: str) -> float:
        return amount_minor * self.exchange_rates.get(currency, 1.0) if currency != self.currency else amount_minor


@dataclass(frozen=True)
class Visit:
    at: float
    amount: int
    category: str
    store: str
    currency: str = ""


@dataclass(frozen=True)
class Scores:
    stage: str
    stage_reason: str
    risk: float
    band: str
    reasons: tuple[str, ...]
    recency_days: int | None
    frequency: int                  # paid visits in the last 12 months
    monetary_minor: int             # spend in the last 12 months, refunds deducted
    r: int
    f: int
    m: int
    rfm_segment: str
    value_tier: str
    home_store: str
    tier: str
    category: str
    expected_interval_days: float
    overdue_days: int | None
    last_paid_visit_at: float | None
    first_paid_at: float | None
    returned_within_90d: bool
    visits: int
    features: dict = field(default_factory=dict, compare=False)


def paid_visits(profile: Profile, until: float) -> list[Visit]:
    """Paid services and purchases up to `until`, one per appointment or order, oldest first."""
    by_key: dict[str, Entry] = {}
    for event_id, entry in profile.entries.items():
        if entry.kind in (VISIT, PURCHASE) and entry.at <= until:
            key = f"{entry.kind}:{entry.key}" if entry.key else event_id
            seen = by_key.get(key)
            if seen is None or entry.amount > seen.amount:
                by_key[key] = entry
    visits = [Visit(e.at, e.amount, e.category, e.store, e.currency) for e in by_key.values() if e.amount > 0]
    return sorted(visits, key=lambda v: v.at)


def _intervals(visits: list[Visit]) -> list[float]:
    days = sorted({math.floor(v.at / DAY) for v in visits})  # two receipts on one day are one visit
    return [float(b - a) for a, b in zip(days, days[1:])]


def _most_frequent(values) -> str | None:
    """The most frequent value, the first seen among equals (Counter.most_common(1) without its cost,
    which was a tenth of scoring)."""
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None


def _score_band(value: float, bounds: tuple[float, ...]) -> int:
    """1 + how many bounds the value reaches."""
    return 1 + sum(value >= b for b in bounds)


def _tier_at(profile: Profile, until: float, order: tuple[str, ...]) -> tuple[str, bool, float]:
    """(current tier, whether the last change was a downgrade, when)."""
    changes = sorted(t for t in profile.tiers.values() if t[0] <= until)
    if not changes:
        return "", False, 0.0
    at, old, new = changes[-1]
    downgraded = old in order and new in order and order.index(new) < order.index(old)
    return new, downgraded, at


def score(profile: Profile, now: datetime | float, intervals: dict[str, float] | None = None,
          config: ScoringConfig | None = None) -> Scores:
    config = config or ScoringConfig()
    t = now.timestamp() if isinstance(now, datetime) else now
    visits = paid_visits(profile, t)
    year_ago, recent = t - 365 * DAY, t - config.recent_days * DAY
    last12 = [v for v in visits if v.at >= year_ago]
    refunds = sum(config.in_currency(e.amount, e.currency) for e in profile.entries.values()
                  if e.kind == REFUND and year_ago <= e.at <= t)
    monetary = max(0, round(sum(config.in_currency(v.amount, v.currency) for v in last12) - refunds))

    # The usual category (most frequent in the last year, else ever) sets the expected interval.
    category = _most_frequent(v.category for v in (last12 or visits)) or ""
    learned = (intervals or {}).get(category)
    expected = float(learned or DEFAULT_INTERVAL_DAYS.get(category, DEFAULT_INTERVAL_DAYS[""]))
    gaps = _intervals([v for v in visits if v.category == category])
    if len(gaps) >= 2:  # the customer's own rhythm, kept within reason of the chain's
        expected = min(max(median(gaps), expected / 2), expected * 2)

    last_visit = visits[-1].at if visits else None
    since = (t - last_visit) / DAY if last_visit is not None else None
    ratio = since / expected if since is not None else None
    overdue = round(since - expected) if since is not None else None
    tier, downgraded, tier_at = _tier_at(profile, t, config.tier_order)
    home = _most_frequent(v.store for v in visits if v.store) or profile.last_store
    all_gaps = _intervals(visits)

    stage, stage_reason = _stage(profile, t, visits, all_gaps, last12, expected, ratio, tier, config)

    # RFM on fixed, interval-relative bounds so one customer is scored without the whole population.
    r = 0 if ratio is None else 6 - _score_band(ratio, (0.5, 1.0, 1.5, 2.5))
    f = _score_band(len(last12), (2, 3, 5, 8))
    m = _score_band(monetary, config.monetary_thresholds_minor)
    segment = _rfm_segment(r, f, m, bool(visits))
    high_tier = tier in config.tier_order[-2:]
    value_tier = "high" if m >= 4 or high_tier else "medium" if m >= 2 or f >= 3 else "low"

    # Churn risk: a logistic score over interpretable factors; each one that raises it is a reason.
    reasons: list[str] = []
    if ratio is None:
        seen_days = (t - (profile.first_seen or t)) / DAY
        z = -0.2 + 1.2 * math.log(max(seen_days, 1.0) / 30.0)
        reasons.append("no paid visit yet")
    else:
        z = -1.2 + 2.2 * math.log(max(ratio, 0.05))
        if ratio > 1:
            reasons.append(f"overdue {overdue} days vs expected {round(expected)}"
                           + (f" ({category})" if category else ""))
        if len(visits) == 1:
            z += 0.8
            reasons.append("one paid visit only")
        if len(all_gaps) >= 3 and all_gaps[-1] > 1.5 * median(all_gaps[:-1]):
            z += 0.5
            reasons.append(f"visits getting rarer: last gap {round(all_gaps[-1])} days vs usual "
                           f"{round(median(all_gaps[:-1]))}")
        if len(last12) >= 6:
            z -= 0.4
    complaints = [e.at for e in profile.entries.values() if e.kind == COMPLAINT and recent <= e.at <= t]
    if complaints:
        z += 0.6
        reasons.append(f"complaint {round((t - max(complaints)) / DAY)} days ago")
    low = sorted((a for a in profile.answers.values() if recent <= a[0] <= t and (0 <= a[1] <= 6 or 1 <= a[2] <= 2)),
                 key=lambda a: a[0])
    if low:
        z += 0.7
        at, nps, csat, _ = low[-1]
        reasons.append(f"detractor score {nps}" if nps >= 0 and nps <= 6 else f"low satisfaction {csat}/5")
    open_cases = [c for c in profile.cases.values() if 0 < c[0] <= t and not (0 < c[1] <= t)]
    if open_cases:
        z += 0.4
        reasons.append("open complaint case")
    if downgraded and t - tier_at <= 180 * DAY:
        z += 0.5
        reasons.append(f"tier downgraded to {tier}")
    if high_tier:
        z -= 0.3
    if segment in ("at_risk", "hibernating", "cannot_lose"):
        reasons.append(f"RFM segment {segment}")
    risk = round(1 / (1 + math.exp(-z)), 4)
    band = "high" if risk >= config.risk_high else "medium" if risk >= config.risk_medium else "low"

    first_paid = visits[0].at if visits else None
    returned = first_paid is not None and any(first_paid + DAY <= v.at <= first_paid + 90 * DAY for v in visits[1:])
    return Scores(
        stage=stage, stage_reason=stage_reason, risk=risk, band=band, reasons=tuple(reasons),
        recency_days=None if since is None else int(since), frequency=len(last12), monetary_minor=monetary,
        r=r, f=f, m=m, rfm_segment=segment, value_tier=value_tier, home_store=home, tier=tier,
        category=category, expected_interval_days=round(expected, 1), overdue_days=overdue,
        last_paid_visit_at=last_visit, first_paid_at=first_paid, returned_within_90d=returned,
        visits=len(visits),
        features={"ratio": ratio, "gaps": all_gaps[-5:], "complaints_recent": len(complaints),
                  "low_scores_recent": len(low), "open_cases": len(open_cases), "z": round(z, 3)},
    )


def _stage(profile: Profile, t: float, visits: list[Visit], gaps: list[float], last12: list[Visit],
           expected: float, ratio: float | None, tier: str, config: ScoringConfig) -> tuple[str, str]:
    if not visits:
        kinds = {e.kind for e in profile.entries.values() if e.at <= t}
        if CONSIDER in kinds:
            return "consideration", "booking started or quote given"
        if INTEREST in kinds:
            return "interest", "consultation or store visit"
        return "awareness", "seen through ads or social" if AWARE in kinds else "first seen"
    if ratio is not None and ratio >= config.churned_ratio:
        return "churned", f"no paid visit for {round(ratio * expected)} days ({ratio:.1f}× the expected {round(expected)})"
    if ratio is not None and ratio >= config.at_risk_ratio:
        return "at_risk", f"overdue: {round(ratio * expected)} days since the last paid visit vs expected {round(expected)}"
    if gaps and gaps[-1] >= config.churned_ratio * expected:
        return "win_back", f"returned after {round(gaps[-1])} days away"
    if len(visits) == 1:
        return "purchase", "first paid service"
    # Regular needs three visit days: several receipts on one day are one visit, and leave no gap.
    regular = len(last12) >= 3 and len(gaps) >= 2 and median(gaps[-4:]) <= 1.25 * expected
    if regular or (tier in config.tier_order[-2:] and len(last12) >= 2):
        return "loyal", (f"{len(last12)} visits in 12 months about every {round(median(gaps[-4:]))} days"
                         if regular else f"{tier} member visiting regularly")
    return "repeat", f"{len(visits)} paid visits"


def _rfm_segment(r: int, f: int, m: int, has_visits: bool) -> str:
    if not has_visits:
        return "prospect"
    if r >= 4 and f >= 4:
        return "champions"
    if r >= 3 and f >= 3:
        return "loyal"
    if r >= 4 and f <= 2:
        return "new" if f == 1 else "promising"
    if r <= 2 and f >= 4 and m >= 4:
        return "cannot_lose"
    if r <= 2 and f >= 3:
        return "at_risk"
    if r <= 2:
        return "hibernating"
    return "need_attention"


def as_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def peak(current: str, stage: str, visits: int) -> str:
    """The furthest funnel stage ever reached; at_risk, churned and win_back come after a purchase (or
    repeat, with two paid visits or more)."""
    reached = stage if stage in STAGE_RANK else "repeat" if visits >= 2 else "purchase"
    return reached if STAGE_RANK[reached] > STAGE_RANK.get(current, -1) else current
