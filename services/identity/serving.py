"""Identity's HTTP processes when `hub serve identity` runs them apart from its workers (shared/serving.py)."""
from __future__ import annotations

from services.identity.app import create_app
from shared.serving import api_process


def create_api_app():
    return api_process(create_app)
