"""NPS arithmetic: promoters score 9–10, passives 7–8, detractors 0–6; the score is the percentage of
promoters minus the percentage of detractors (−100 … 100), and there is no score without answers."""
from __future__ import annotations

from collections.abc import Iterable

DETRACTOR_MAX, PROMOTER_MIN = 6, 9
LOW_STEP_RATING = 2  # a step rated this or lower is where a low score came from


def summary(promoters: int, passives: int, detractors: int) -> dict:
    total = promoters + passives + detractors
    score = None if total == 0 else round(100 * (promoters - detractors) / total, 1)
    return {"responses": total, "promoters": promoters, "passives": passives, "detractors": detractors,
            "nps": score}


def of_scores(scores: Iterable[int]) -> dict:
    scores = list(scores)
    return summary(sum(s >= PROMOTER_MIN for s in scores), sum(DETRACTOR_MAX < s < PROMOTER_MIN for s in scores),
                   sum(s <= DETRACTOR_MAX for s in scores))


def is_low(nps: int | None, csat: int | None) -> bool:
    """A detractor or a dissatisfied (CSAT ≤ 2) answer: it opens a case and counts in the step breakdown."""
    return (nps is not None and nps <= DETRACTOR_MAX) or (csat is not None and csat <= 2)
