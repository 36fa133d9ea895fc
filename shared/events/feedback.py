"""Events the feedback service publishes (topic `feedback.changes`, keyed by customer id — or by the
response id for an anonymous kiosk answer): invitations for the message channel to deliver, answers with
their scores (insights' NPS trends come from these), and the life of complaint cases."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import Field

from shared.events.base import Event, Payload, Slug, UtcDatetime

Score = Annotated[int, Field(ge=1, le=5)]
MessageChannel = Literal["wechat", "sms", "email"]


class FeedbackEvent(Event):
    topic_kind: ClassVar[str] = "feedback"
    customer_id: UUID | None = Field(None, description="None for an anonymous kiosk answer.")


class SurveySentPayload(Payload):
    invitation_id: UUID
    token: str = Field(description="The link token: GET /v1/surveys/{token} shows the questions.")
    channel: MessageChannel
    language: Literal["zh", "en"]
    store_id: Slug | None = None
    expires_at: UtcDatetime
    case_id: UUID | None = Field(None, description="Set for the follow-up survey of a resolved case.")


class SurveySent(FeedbackEvent):
    """An invitation is due: the message channel (SMS, WeChat, email) delivers the link."""

    type: Literal["feedback.survey_sent"] = "feedback.survey_sent"
    schema_version: Literal[1] = 1
    payload: SurveySentPayload


class SurveyAnsweredPayload(Payload):
    response_id: UUID
    invitation_id: UUID | None = None
    source: Literal["link", "kiosk", "staff"]
    store_id: Slug | None = None
    staff_id: Slug | None = None
    service_id: Slug | None = None
    appointment_id: Slug | None = None
    nps: Annotated[int, Field(ge=0, le=10)] | None = None
    csat: Score | None = None
    step_ratings: dict[Slug, Score] = Field(default_factory=dict)
    has_comment: bool = Field(False, description="The comment itself is personal data and stays in feedback.")
    case_id: UUID | None = Field(None, description="The case this follow-up answer belongs to.")


class SurveyAnswered(FeedbackEvent):
    type: Literal["feedback.survey_answered"] = "feedback.survey_answered"
    schema_version: Literal[1] = 1
    payload: SurveyAnsweredPayload


class CasePayload(Payload):
    case_id: UUID
    store_id: Slug | None = None
    priority: Literal["low", "medium", "high"]
    state: Literal["open", "in_progress", "resolved", "closed"]
    reason: str = Field(description="detractor, low_csat or complaint:<category>")


class CaseOpenedPayload(CasePayload):
    owner: str
    first_response_due: UtcDatetime
    resolution_due: UtcDatetime


class CaseOpened(FeedbackEvent):
    type: Literal["feedback.case_opened"] = "feedback.case_opened"
    schema_version: Literal[1] = 1
    payload: CaseOpenedPayload


class CaseSlaBreachedPayload(CasePayload):
    sla: Literal["first_response", "resolution"]
    due_at: UtcDatetime


class CaseSlaBreached(FeedbackEvent):
    type: Literal["feedback.case_sla_breached"] = "feedback.case_sla_breached"
    schema_version: Literal[1] = 1
    payload: CaseSlaBreachedPayload


class CaseResolvedPayload(CasePayload):
    root_cause: Slug
    service_step: Slug
    resolved_in_business_minutes: int


class CaseResolved(FeedbackEvent):
    type: Literal["feedback.case_resolved"] = "feedback.case_resolved"
    schema_version: Literal[1] = 1
    payload: CaseResolvedPayload


FEEDBACK_EVENT_TYPES = (SurveySent, SurveyAnswered, CaseOpened, CaseSlaBreached, CaseResolved)
