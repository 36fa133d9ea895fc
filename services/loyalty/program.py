"""A tenant's loyalty program: tiers on points earned in a rolling window, earn rules per touchpoint
type, expiry, redemption holds, what a point is worth — and the rules that follow from it (points for
an event, the tier points qualify for, when the next review is)."""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared import tenant_config
from shared.events.base import Currency
from shared.events.loyalty import TierName
from shared.http import BIGINT_MAX
from shared.timezones import IanaZone


class TierRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: TierName
    threshold: Annotated[int, Field(ge=0, le=BIGINT_MAX,
                                    description="Points earned in the window that qualify for the tier.")]
    earn_multiplier: Annotated[float, Field(ge=1, le=10)] = 1.0
    discount_pct: Annotated[float, Field(ge=0, le=100)] = 0.0


class EarnRule(BaseModel):
    """Points for one touchpoint type: `per_unit` points per major currency unit of its amount (times the
    tier's multiplier), plus `fixed` points per event."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    per_unit: Annotated[float, Field(ge=0, le=1000)] = 0.0
    fixed: Annotated[int, Field(ge=0, le=1_000_000)] = 0


AMOUNT_FIELD = "amount_minor"
EARNING_EVENTS = {"feedback.survey_answered"}  # not touchpoints, but they earn like them
# What a touchpoint's earn is reversed by, and how the two are matched.
REVERSALS = {"refund.issued": "order_id", "booking.cancelled": "appointment_id", "booking.no_show": "appointment_id"}
EARN_REFERENCE = {"purchase.completed": "order_id", "booking.completed": "appointment_id"}


class Program(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tiers: Annotated[tuple[TierRule, ...], Field(min_length=1, max_length=10)] = (
        TierRule(name="silver", threshold=0),
        TierRule(name="gold", threshold=2_000, earn_multiplier=1.2, discount_pct=5),
        TierRule(name="diamond", threshold=8_000, earn_multiplier=1.5, discount_pct=10),
        TierRule(name="vip", threshold=20_000, earn_multiplier=2.0, discount_pct=15),
    )
    window_months: Annotated[int, Field(ge=1, le=60)] = 12
    downgrade: Literal["one_tier", "window"] = Field(
        "one_tier", description="At a review: drop one tier at most, or straight to what the window earns.")
    review: Literal["monthly", "quarterly", "yearly"] = "monthly"
    timezone: IanaZone = "Asia/Shanghai"  # where review periods start
    earn_rules: dict[str, EarnRule] = Field(default_factory=lambda: {
        "booking.completed": EarnRule(per_unit=1), "purchase.completed": EarnRule(per_unit=1),
        "survey.answered": EarnRule(fixed=50), "feedback.survey_answered": EarnRule(fixed=50),
        "referral.converted": EarnRule(fixed=500),
    })
    expiry_months: Annotated[int, Field(ge=1, le=120)] = 12
    hold_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] = 15
    point_value_minor: Annotated[float, Field(gt=0, le=10_000, description="Money value of one point.")] = 1.0
    currency: Currency = "CNY"
    # Finite: JSON has no infinity, so a stored one would come back as null and break every read of the program.
    exchange_rates: dict[Currency, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=dict, description="For chains with stores in several currencies: what one unit of each "
                                          "other currency is worth in `currency` (e.g. {\"AUD\": 4.7}).")

    @field_validator("earn_rules")
    @classmethod
    def _earning_types(cls, rules: dict[str, EarnRule]) -> dict[str, EarnRule]:
        from shared.events import TOUCHPOINT_TYPE_NAMES
        unknown = sorted(set(rules) - TOUCHPOINT_TYPE_NAMES - EARNING_EVENTS)
        if unknown:
            raise ValueError(f"earn rules for unknown touchpoint types: {', '.join(unknown)}")
        return rules

    @model_validator(mode="after")
    def _tiers_ascend(self) -> Program:
        if self.tiers[0].threshold != 0:
            raise ValueError("the first tier is the entry tier: its threshold must be 0")
        thresholds = [t.threshold for t in self.tiers]
        if thresholds != sorted(set(thresholds)):
            raise ValueError("tier thresholds must strictly increase")
        if len({t.name for t in self.tiers}) != len(self.tiers):
            raise ValueError("tier names must be unique")
        return self

    # --- rules ---------------------------------------------------------------------------------------
    def tier(self, name: str | None) -> TierRule:
        return next((t for t in self.tiers if t.name == name), self.tiers[0])

    def rank(self, name: str | None) -> int:
        return self.tiers.index(self.tier(name))

    def qualified(self, earned: int) -> TierRule:
        return [t for t in self.tiers if t.threshold <= earned][-1]

    def next_tier(self, name: str | None) -> TierRule | None:
        rank = self.rank(name)
        return self.tiers[rank + 1] if rank + 1 < len(self.tiers) else None

    def points_for(self, event_type: str, amount_minor: int | None, tier_name: str | None,
                   currency: str | None = None) -> int:
        """Points for an event; ValueError for an amount in a currency the program has no rate for."""
        rule = self.earn_rules.get(event_type)
        if rule is None:
            return 0
        amount = (amount_minor or 0) / 100 * self.rate(currency) * rule.per_unit * self.tier(tier_name).earn_multiplier
        return math.floor(amount + 1e-9) + rule.fixed

    def rate(self, currency: str | None) -> float:
        if currency is None or currency == self.currency:
            return 1.0
        if currency not in self.exchange_rates:
            raise ValueError(f"an amount in {currency}, and the program counts {self.currency} with no exchange "
                             f"rate for {currency} (add it to exchange_rates)")
        return self.exchange_rates[currency]

    def window_start(self, now: datetime) -> datetime:
        return now - relativedelta(months=self.window_months)

    def expires_at(self, earned_at: datetime) -> datetime:
        return earned_at + relativedelta(months=self.expiry_months)

    def hold_until(self, now: datetime) -> datetime:
        return now + timedelta(minutes=self.hold_minutes)

    def next_review(self, after: datetime) -> datetime:
        """The start (local midnight, in UTC) of the first review period after `after`."""
        tz = ZoneInfo(self.timezone)
        local = after.astimezone(tz)
        step = {"monthly": 1, "quarterly": 3, "yearly": 12}[self.review]
        month0 = (local.month - 1) // step * step  # the current period's first month, 0-based
        start = local.replace(month=month0 + 1, day=1, hour=0, minute=0, second=0, microsecond=0)
        return (start.replace(tzinfo=None) + relativedelta(months=step)).replace(tzinfo=tz).astimezone(after.tzinfo)

    def review_tier(self, current: str | None, earned: int) -> TierRule:
        """The tier after a review: never up (upgrades happen when earned), down per the policy."""
        qualified, rank = self.qualified(earned), self.rank(current)
        if self.tiers.index(qualified) >= rank:
            return self.tier(current)
        return qualified if self.downgrade == "window" else self.tiers[rank - 1]


DEFAULT = Program()


def load(cur, tenant_id: str) -> Program:
    return tenant_config.load(cur, "programs", tenant_id, Program, DEFAULT)


def save(cur, tenant_id: str, program: Program) -> None:
    tenant_config.save(cur, "programs", tenant_id, program)
