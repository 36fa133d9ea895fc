"""Survey templates per tenant: the questions (NPS, CSAT, a rating per service step, a comment) in
Chinese and English, and how invitations go out (trigger, delay, throttle, expiry, channels). Answers
are checked against the template they answer."""
from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared import tenant_config
from shared.errors import Invalid
from shared.events.base import Slug

DEFAULT_STEPS = ("reception", "waiting_time", "service_quality", "result", "price_value", "cleanliness")
CHANNEL_PURPOSE = {"wechat": "marketing_wechat", "sms": "marketing_sms", "email": "marketing_email"}
CHANNEL_IDENTIFIER = {"wechat": "wechat_openid", "sms": "phone", "email": "email"}
Text = Annotated[str, Field(min_length=1, max_length=300)]


class Texts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    zh: Text
    en: Text


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Slug
    kind: Literal["nps", "csat", "step", "comment"]
    step: Slug | None = Field(None, description="The service step a `step` question rates.")
    text: Texts
    required: bool = False

    @model_validator(mode="after")
    def _step_named(self) -> Question:
        if (self.kind == "step") != (self.step is not None):
            raise ValueError(f"question {self.id}: `step` is set exactly for step questions")
        return self


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    questions: Annotated[tuple[Question, ...], Field(min_length=1, max_length=8,
                                                     description="8 at most: short surveys get answered.")]
    triggers: tuple[Literal["booking.completed", "purchase.completed"], ...] = ("booking.completed",)
    delay_minutes: Annotated[int, Field(ge=0, le=7 * 24 * 60)] = 120
    throttle_days: Annotated[int, Field(ge=0, le=365)] = 30
    expires_days: Annotated[int, Field(ge=1, le=60)] = 7
    channels: Annotated[tuple[Literal["wechat", "sms", "email"], ...], Field(min_length=1)] = ("wechat", "sms",
                                                                                              "email")
    language: Literal["zh", "en"] = "zh"

    @model_validator(mode="after")
    def _coherent(self) -> Template:
        ids = [q.id for q in self.questions]
        if len(set(ids)) != len(ids):
            raise ValueError("question ids must be unique")
        kinds = [q.kind for q in self.questions]
        if "nps" not in kinds and "csat" not in kinds:
            raise ValueError("a survey asks for an NPS or a CSAT score")
        if kinds.count("nps") > 1 or kinds.count("csat") > 1 or kinds.count("comment") > 1:
            raise ValueError("at most one NPS, one CSAT and one comment question")
        steps = [q.step for q in self.questions if q.step]
        if len(set(steps)) != len(steps):
            raise ValueError("each service step is rated once")
        return self

    def public(self, language: str) -> list[dict]:
        """The questions as the survey page shows them."""
        scale = {"nps": (0, 10), "csat": (1, 5), "step": (1, 5)}
        return [{"id": q.id, "kind": q.kind, "step": q.step, "text": getattr(q.text, language),
                 "required": q.required, "min": scale.get(q.kind, (None, None))[0],
                 "max": scale.get(q.kind, (None, None))[1]} for q in self.questions]

    def read(self, answers: dict) -> dict:
        """Scores from the answers ({question id: value}), or Invalid naming the question at fault."""
        known = {q.id: q for q in self.questions}
        unknown = sorted(set(answers) - set(known))
        if unknown:
            raise Invalid(f"unknown questions {unknown}", questions=list(known))
        scores: dict = {"nps": None, "csat": None, "step_ratings": {}, "comment": None}
        for q in self.questions:
            value = answers.get(q.id)
            if value is None:
                if q.required:
                    raise Invalid(f"question {q.id} is required")
                continue
            if q.kind == "comment":
                if not isinstance(value, str) or len(value) > 2000:
                    raise Invalid(f"question {q.id}: a comment is text of at most 2000 characters")
                scores["comment"] = value.strip() or None
                continue
            low, high = (0, 10) if q.kind == "nps" else (1, 5)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise Invalid(f"question {q.id}: a score from {low} to {high}, not {value!r}")
            if q.kind == "step":
                scores["step_ratings"][q.step] = value
            else:
                scores[q.kind] = value
        if scores["nps"] is None and scores["csat"] is None:
            raise Invalid("an answer gives the NPS or the CSAT score")
        return scores


def _q(id_: str, kind: str, zh: str, en: str, step: str | None = None, required: bool = False) -> Question:
    return Question(id=id_, kind=kind, step=step, text=Texts(zh=zh, en=en), required=required)


DEFAULT = Template(questions=(
    _q("nps", "nps", "您有多大可能向朋友推荐我们？", "How likely are you to recommend us to a friend?", required=True),
    _q("csat", "csat", "您对本次服务满意吗？", "How satisfied are you with this visit?"),
    _q("reception", "step", "接待", "Reception", step="reception"),
    _q("waiting_time", "step", "等候时间", "Waiting time", step="waiting_time"),
    _q("service_quality", "step", "服务质量", "Service quality", step="service_quality"),
    _q("result", "step", "服务效果", "Result", step="result"),
    _q("comment", "comment", "还有什么想告诉我们的吗？", "Anything else you would like to tell us?"),
))


CACHE_TTL_S = 5.0  # a template change reaches other replicas within this; this one's at once
_cache: dict[tuple[str, str], tuple[float, Template]] = {}  # (database, tenant) -> (expiry, template)


def load(cur, tenant_id: str) -> Template:
    """The tenant's template; every answer reads it, so it is cached briefly."""
    key = (cur.connection.dsn, tenant_id)
    hit = _cache.get(key)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    template = tenant_config.load(cur, "survey_templates", tenant_id, Template, DEFAULT)
    _cache[key] = (time.monotonic() + CACHE_TTL_S, template)
    return template


def save(cur, tenant_id: str, template: Template) -> None:
    tenant_config.save(cur, "survey_templates", tenant_id, template)
    _cache.pop((cur.connection.dsn, tenant_id), None)
