"""The public event catalogue: the topics a downstream tool (CRM, campaign tool, ad platform) may consume
and the schema of every event on them, generated from the models so it cannot drift from the code."""
from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter, HTTPException

from shared.auth import CallerAny
from shared.events.docs import asyncapi, public_catalog

catalog = APIRouter(prefix="/v1/catalog", tags=["event catalogue"])


@lru_cache(maxsize=1)
def _catalog() -> dict:
    return public_catalog()


@catalog.get("", summary="Public topics, their keys and the events they carry with versions and JSON Schemas")
async def list_catalog(caller: CallerAny) -> dict:
    return _catalog()


@catalog.get("/events/{event_type}", summary="One public event type: its topic, version and JSON Schema",
             responses={404: {"description": "Not an event type of a public topic"}})
async def event_schema(event_type: str, caller: CallerAny) -> dict:
    for topic in _catalog()["topics"]:
        for event in topic["events"]:
            if event["type"] == event_type:
                return {"topic": topic["topic"], **event}
    raise HTTPException(404, f"{event_type!r} is not an event type of a public topic")


@catalog.get("/asyncapi.json", summary="The AsyncAPI 3.0 document of the public topics")
async def public_asyncapi(caller: CallerAny) -> dict:
    document = asyncapi()
    public = {cid: channel for cid, channel in document["channels"].items() if channel["x-public"]}
    used = {ref["$ref"].rsplit("/", 1)[1] for channel in public.values() for ref in channel["messages"].values()}
    return {**document, "channels": public,
            "operations": {oid: op for oid, op in document["operations"].items()
                           if op["channel"]["$ref"].rsplit("/", 1)[1] in public},
            "components": {"messages": {name: {**message, "payload": _schemas()[name]}  # inline: served alone
                                        for name, message in document["components"]["messages"].items()
                                        if name in used}}}


def _schemas() -> dict[str, dict]:
    return {e["type"]: e["schema"] for topic in _catalog()["topics"] for e in topic["events"]}
