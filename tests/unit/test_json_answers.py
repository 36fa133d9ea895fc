"""FastJSONResponse (shared/http.py) answers what FastAPI's own encoding would, so routes can return it
to skip jsonable_encoder without a client seeing any difference."""
import json
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from shared.http import FastJSONResponse


class _Subject(BaseModel):
    kind: str
    size: str | None = None


def test_the_same_json_as_fastapis_encoder_for_what_handlers_return():
    answer = {
        "appointment_id": uuid.uuid4(),
        "starts_at": datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        "local_start": datetime(2026, 3, 29, 2, 30, 15, 250, tzinfo=ZoneInfo("Europe/London")),
        "day": date(2026, 11, 1), "opens": time(9, 30),
        "amount": Decimal("12.50"), "whole": Decimal("300"),
        "skills": {"groom"}, "subject": _Subject(kind="pet"), "tags": ("a", "b"),
        "nested": [{"n": None, "ok": True, "x": 1.5}], "text": "猫 🐈",
    }
    ours = json.loads(FastJSONResponse(answer).body)
    fastapis = json.loads(JSONResponse(jsonable_encoder(answer)).body)
    assert ours == fastapis


def test_a_value_json_cannot_carry_is_refused_rather_than_guessed():
    with pytest.raises(TypeError, match="object"):
        FastJSONResponse({"x": object()})
